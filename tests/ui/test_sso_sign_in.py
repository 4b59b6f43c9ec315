"""Signing in to the web UI through single sign-on, end to end: Debian's Chromium (Playwright)
drives Jobplane's pages and the real OIDC provider's pages (standing in for Azure AD)."""

from __future__ import annotations

import json
import time

import redis
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, User
from app.services import users
from app.services.actors import SYSTEM
from tests.ui.conftest import sso_settings


def _sign_in(page, server, login: str) -> None:
    page.goto(server.url + "/")
    assert "/login" in page.url  # not signed in: sent to the sign-in page
    page.click("#sso")
    page.fill('input[name="login"]', login)
    page.fill('input[name="password"]', "any password")
    page.click('button[type="submit"]')


def _actions(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditLog.action).order_by(AuditLog.id)))


def test_first_sign_in_creates_the_user_with_the_default_role_and_a_secure_session(
        live_server, settings, oidc_provider, page):
    server = live_server(**sso_settings(settings, oidc_provider))
    _sign_in(page, server, "maya@example.test")
    page.wait_for_url(server.url + "/dashboard")  # the start page leads to the dashboard
    assert page.text_content("#whoami") == "maya@example.test"
    assert page.text_content(".role") == "team_viewer"

    with server.app.app_context():
        user = db.session.scalar(select(User).where(User.email == "maya@example.test"))
        assert (user.role, user.oidc_issuer, user.oidc_subject) == ("team_viewer", oidc_provider.issuer,
                                                                    "maya@example.test")
        assert user.last_login_at is not None
    assert _actions(server.app) == ["user_created", "login_succeeded"]
    cookie = next(c for c in page.context.cookies() if c["name"] == "jobplane_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and "expires" in cookie

    page.click("#sign-out")
    page.wait_for_url("**/login?signed_out=1")
    assert "signed out" in page.text_content(".notice")
    page.goto(server.url + "/")
    assert "/login" in page.url  # the session is gone on the server, not only in the cookie
    assert _actions(server.app)[-1] == "logout"


def test_a_user_an_admin_created_is_linked_at_first_sign_in_and_keeps_their_role(
        live_server, settings, oidc_provider, page):
    server = live_server(**sso_settings(settings, oidc_provider))
    with server.app.app_context():
        users.create_user(actor=SYSTEM, email="Ravi@Example.test", role="job_creator")
        db.session.commit()
    _sign_in(page, server, "ravi@example.test")
    page.wait_for_url(server.url + "/dashboard")
    assert page.text_content(".role") == "job_creator"
    with server.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 1
    assert _actions(server.app)[-2:] == ["user_linked", "login_succeeded"]


def test_a_disabled_user_is_refused_and_the_failure_is_audited(live_server, settings, oidc_provider, page):
    server = live_server(**sso_settings(settings, oidc_provider))
    with server.app.app_context():
        user = users.create_user(actor=SYSTEM, email="gone@example.test", role="job_creator")
        user.is_active = False
        db.session.commit()
    _sign_in(page, server, "gone@example.test")
    page.wait_for_selector(".error")
    assert "disabled" in page.text_content(".error")
    page.goto(server.url + "/")
    assert "/login" in page.url
    with server.app.app_context():
        failed = db.session.scalars(select(AuditLog).where(AuditLog.action == "login_failed")).all()
    assert len(failed) == 1 and failed[0].email == "gone@example.test" and "disabled" in json.dumps(failed[0].changes)


def test_the_session_ends_sixty_minutes_after_sign_in(live_server, settings, oidc_provider, page, redis_url):
    server = live_server(**sso_settings(settings, oidc_provider))
    _sign_in(page, server, "maya@example.test")
    page.wait_for_url(server.url + "/dashboard")
    store = redis.Redis.from_url(redis_url)
    keys = store.keys(f"{settings['QUEUE_NAMESPACE']}:session:*")
    assert len(keys) == 1
    assert 3500 < store.ttl(keys[0]) <= 3601  # Redis drops it by itself after the lifetime
    data = json.loads(store.get(keys[0]))
    assert "id_token" in data and "user_id" in data
    page.reload()
    assert page.url == server.url + "/dashboard"  # still valid within the hour
    data["signed_in_at"] = time.time() - 60 * 60 - 1  # the hour has passed
    store.set(keys[0], json.dumps(data), keepttl=True)
    page.goto(server.url + "/")
    assert "/login" in page.url
    assert store.get(keys[0]) is None  # the expired session is deleted, not only ignored


def test_a_forged_callback_is_refused_and_audited(live_server, settings, oidc_provider, page):
    server = live_server(**sso_settings(settings, oidc_provider))
    page.goto(server.url + "/auth/callback?code=forged&state=not-ours")
    assert "Single sign-on failed" in page.text_content(".error")
    assert _actions(server.app) == ["login_failed"]


def test_an_unreachable_identity_provider_gets_a_clear_503(live_server, settings, oidc_provider):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    server = live_server(**{**sso_settings(settings, oidc_provider), "OIDC_ISSUER": dead})
    response = server.app.test_client().get("/login/sso")
    assert response.status_code == 503
    assert "identity provider cannot be reached" in response.text
