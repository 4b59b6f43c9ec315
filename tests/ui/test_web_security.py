"""The web UI's defences: CSRF tokens, security headers, safe redirects, rate-limited sign-in,
API-token sign-in when single sign-on is off, and live-log websockets that check Origin, session
and permission before the upgrade."""

from __future__ import annotations

import base64
import json
import os
import re
from datetime import datetime, timezone

import pytest
import requests
from simple_websocket import Client, ConnectionClosed
from sqlalchemy import select

from app.extensions import db
from app.models import AuditLog, Execution, ExecutionLogChunk, Team
from app.services.actors import Actor
from tests.conftest import ADMIN_TOKEN
from tests.secrets.helpers import make_job, make_user


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _token_sign_in(client, token: str, **extra):
    page = client.get("/login")
    return client.post("/login/token", data={"token": token, "csrf_token": _csrf(page.text), **extra})


@pytest.fixture
def web(app):
    return app.test_client()


def test_without_single_sign_on_the_page_says_so_and_takes_an_api_token(app, admin, web):
    page = web.get("/login")
    assert "Single sign-on is not configured" in page.text
    signed_in = _token_sign_in(web, ADMIN_TOKEN, next="/")
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/"
    assert "admin" in web.get("/jobs").text
    with app.app_context():
        assert db.session.scalars(select(AuditLog.action).where(AuditLog.action.like("login%"))).all() == \
            ["login_succeeded"]


def test_a_wrong_token_is_refused_and_the_failure_is_kept(app, admin, web):
    refused = _token_sign_in(web, "jp_not_a_real_token_at_all")
    assert refused.status_code == 401 and "invalid, expired or revoked" in refused.text
    assert web.get("/jobs").status_code == 302
    with app.app_context():
        failed = db.session.scalars(select(AuditLog).where(AuditLog.action == "login_failed")).all()
    assert len(failed) == 1 and failed[0].ip_address == "127.0.0.1"


def test_state_changing_requests_without_the_csrf_token_get_400(app, admin, web):
    web.get("/login")
    assert web.post("/login/token", data={"token": ADMIN_TOKEN}).status_code == 400
    assert web.post("/login/token", data={"token": ADMIN_TOKEN, "csrf_token": "forged"}).status_code == 400
    _token_sign_in(web, ADMIN_TOKEN)
    home = web.get("/jobs")
    assert web.post("/logout").status_code == 400
    assert "admin" in web.get("/jobs").text  # still signed in
    assert web.post("/logout", headers={"X-CSRF-Token": _csrf(home.text)}).status_code == 303  # HTMX's way
    assert web.get("/jobs").status_code == 302


def test_sign_in_redirects_only_within_the_site(admin, web):
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        response = _token_sign_in(web, ADMIN_TOKEN, next=target)
        assert response.headers["Location"] == "/", target
        web.post("/logout", headers={"X-CSRF-Token": _csrf(web.get("/jobs").text)})


def test_every_response_carries_the_security_headers(admin, web):
    for response in (web.get("/login"), web.get("/api/v1/me", headers=admin)):
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "Strict-Transport-Security" not in response.headers  # plain http here
    secure = web.get("/login", base_url="https://jobs.example.test")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "<script>" not in web.get("/login").text  # no inline script for the CSP to allow


def test_the_session_cookie_is_secure_behind_https(live_server):
    server = live_server(BASE_URL="https://jobs.example.test")
    with server.app.test_client() as web:
        web.get("/login")
        cookie = web.get_cookie("jobplane_session")
        assert cookie.secure and cookie.http_only and cookie.same_site == "Lax"


def test_sign_in_attempts_are_rate_limited_per_address(settings, live_server):
    server = live_server(LOGIN_RATE_LIMIT="3 per minute")
    web = server.app.test_client()
    statuses = [_token_sign_in(web, f"jp_wrong_token_number_{i}").status_code for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    limited = _token_sign_in(web, "jp_wrong_token_number_x")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0


# --- live log websockets ------------------------------------------------------------------------

def _finished_execution(owner: Actor) -> Execution:
    job = make_job(owner, name="ws-job")
    now = datetime.now(timezone.utc)
    execution = Execution(job_id=job.id, status="success", scheduled_for=now, triggered_by="manual",
                          started_at=now, completed_at=now, exit_code=0)
    db.session.add(execution)
    db.session.flush()
    for seq, text_ in enumerate(["hello\n", "world\n"], start=1):
        db.session.add(ExecutionLogChunk(execution_id=execution.id, seq=seq, offset=(seq - 1) * 6,
                                         stream="stdout", data=text_))
    return execution


def _signed_in_cookie(server, token: str) -> str:
    with requests.Session() as browser:
        page = browser.get(server.url + "/login")
        browser.post(server.url + "/login/token", data={"token": token, "csrf_token": _csrf(page.text)})
        return f"jobplane_session={browser.cookies['jobplane_session']}"


def _connect(server, execution_id, *, origin: str | None, cookie: str | None, after_seq: int = 0) -> Client:
    headers = {k: v for k, v in (("Origin", origin), ("Cookie", cookie)) if v}
    url = server.url.replace("http", "ws", 1) + f"/ws/executions/{execution_id}/log?after_seq={after_seq}"
    return Client.connect(url, headers=headers)


def _events(ws) -> list[dict]:
    """Every event up to the final status; the server then closes the socket."""
    events = []
    while not events or events[-1]["type"] != "status":
        events.append(json.loads(ws.receive(timeout=10)))
    with pytest.raises(ConnectionClosed):
        ws.receive(timeout=10)
    return events


@pytest.fixture
def ws_setup(live_server):
    server = live_server()
    with server.app.app_context():
        team = Team(name="data")
        other = Team(name="web")
        db.session.add_all([team, other])
        db.session.flush()
        owner, owner_token = make_user("owner@example.test", "job_creator", team.id)
        _, viewer_token = make_user("viewer@example.test", "team_viewer", team.id)
        _, outsider_token = make_user("outsider@example.test", "team_viewer", other.id)
        execution = _finished_execution(Actor(user=owner))
        db.session.commit()
    return server, execution.id, {"owner": owner_token, "viewer": viewer_token, "outsider": outsider_token}


def test_a_viewer_of_the_job_gets_the_stored_log_then_the_status(ws_setup):
    server, execution_id, tokens = ws_setup
    ws = _connect(server, execution_id, origin=server.url, cookie=_signed_in_cookie(server, tokens["viewer"]))
    events = _events(ws)
    assert [e.get("data") for e in events[:-1]] == ["hello\n", "world\n"]
    assert events[-1] == {"type": "status", "status": "success"}
    resumed = _connect(server, execution_id, origin=server.url, cookie=_signed_in_cookie(server, tokens["owner"]),
                       after_seq=1)
    assert [e.get("seq") for e in _events(resumed)] == [2, None]  # a reconnect resumes, no duplicate


@pytest.mark.parametrize("who, origin, expected", [
    ("viewer", "http://evil.example", 403),   # a page on another site using the viewer's cookie
    ("viewer", None, 403),                     # no Origin at all
    (None, "same", 401),                       # no session
    ("outsider", "same", 404),                 # signed in, but another team's job
])
def test_the_handshake_is_refused_before_the_upgrade(ws_setup, who, origin, expected):
    server, execution_id, tokens = ws_setup
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    if who:
        headers["Cookie"] = _signed_in_cookie(server, tokens[who])
    if origin:
        headers["Origin"] = server.url if origin == "same" else origin
    handshake = requests.get(f"{server.url}/ws/executions/{execution_id}/log", headers=headers, timeout=10)
    assert handshake.status_code == expected, handshake.text
    assert "Sec-WebSocket-Accept" not in handshake.headers


def test_a_running_execution_is_followed_live_without_gap_or_duplicate(ws_setup):
    from app.services.live import RedisLiveLog

    server, execution_id, tokens = ws_setup
    with server.app.app_context():
        execution = db.session.get(Execution, execution_id)
        execution.status, execution.completed_at = "running", None
        db.session.query(ExecutionLogChunk).filter_by(execution_id=execution_id, seq=2).delete()
        db.session.commit()
    ws = _connect(server, execution_id, origin=server.url, cookie=_signed_in_cookie(server, tokens["viewer"]))
    assert json.loads(ws.receive(timeout=10))["seq"] == 1
    assert json.loads(ws.receive(timeout=10)) == {"type": "status", "status": "running"}
    live = RedisLiveLog(server.app.config["REDIS_URL"], server.app.config["QUEUE_NAMESPACE"])
    with server.app.app_context():  # what a worker does: store the piece, then publish it
        db.session.add(ExecutionLogChunk(execution_id=execution_id, seq=2, offset=6, stream="stdout",
                                         data="world\n"))
        db.session.get(Execution, execution_id).status = "success"
        db.session.commit()
    live.publish(execution_id, {"type": "log", "seq": 1, "offset": 0, "stream": "stdout", "data": "hello\n"})
    live.publish(execution_id, {"type": "log", "seq": 2, "offset": 6, "stream": "stdout", "data": "world\n"})
    live.publish(execution_id, {"type": "status", "status": "success"})
    rest = _events(ws)
    assert [(e["type"], e.get("seq"), e.get("status")) for e in rest] == \
        [("log", 2, None), ("status", None, "success")]
