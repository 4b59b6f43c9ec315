"""Every web route outside the API has a rule: public, or for signed-in users only.  A new page
without a rule fails here, as a new API route fails the authorization matrix test."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ADMIN_TOKEN

#: open to anyone: signing in, static files, liveness, readiness and metrics (docs/operations.md)
PUBLIC = {
    ("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"),
    ("GET", "/login"), ("GET", "/login/sso"), ("GET", "/auth/callback"),
    ("POST", "/login/token"), ("GET", "/static/<path:filename>"),
}
#: what an anonymous visitor gets from a page that needs a signed-in user (CSRF comes first on POST)
SIGNED_IN = {
    ("GET", "/"): 302,
    ("POST", "/logout"): 400,
    ("GET", "/jobs"): 302,
    ("GET", "/jobs/new"): 302,
    ("POST", "/jobs/new"): 400,
    ("GET", "/jobs/schedule-preview"): 302,
    ("GET", "/jobs/<uuid:job_id>"): 302,
    ("GET", "/jobs/<uuid:job_id>/edit"): 302,
    ("POST", "/jobs/<uuid:job_id>/edit"): 400,
    ("POST", "/jobs/<uuid:job_id>/run"): 400,
    ("POST", "/jobs/<uuid:job_id>/<any(pause, resume):switch>"): 400,
    ("POST", "/jobs/<uuid:job_id>/delete"): 400,
    ("POST", "/jobs/<uuid:job_id>/notifications/test"): 400,
    ("POST", "/jobs/<uuid:job_id>/secrets"): 400,
    ("POST", "/jobs/<uuid:job_id>/secrets/<name>/delete"): 400,
    ("GET", "/dashboard"): 302,
    ("GET", "/admin/users"): 302,
    ("POST", "/admin/users"): 400,
    ("POST", "/admin/users/<uuid:user_id>"): 400,
    ("POST", "/admin/users/<uuid:user_id>/active"): 400,
    ("GET", "/admin/teams"): 302,
    ("POST", "/admin/teams"): 400,
    ("POST", "/admin/teams/<uuid:team_id>/rename"): 400,
    ("POST", "/admin/teams/<uuid:team_id>/delete"): 400,
    ("GET", "/admin/audit"): 302,
    ("GET", "/executions/<uuid:execution_id>"): 302,
    ("GET", "/executions/<uuid:execution_id>/facts"): 302,
    ("POST", "/executions/<uuid:execution_id>/cancel"): 400,
    ("GET", "/executions/<uuid:execution_id>/log/events"): 401,  # a script's JSON route: no redirect
    ("GET", "/ws/executions/<uuid:execution_id>/log"): 403,  # no Origin: refused before the session
}


def _web_routes(app) -> set[tuple[str, str]]:
    return {(method, rule.rule) for rule in app.url_map.iter_rules() if not rule.rule.startswith("/api/")
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def test_every_web_route_has_a_rule(app):
    missing = _web_routes(app) - PUBLIC - set(SIGNED_IN)
    assert not missing, f"add a rule for {sorted(missing)} to PUBLIC or SIGNED_IN in {__file__}"
    assert not (PUBLIC | set(SIGNED_IN)) - _web_routes(app), "a rule names a route that no longer exists"


@pytest.mark.parametrize("method, rule", sorted(SIGNED_IN))
def test_an_anonymous_visitor_gets_nothing_from_signed_in_routes(app, method, rule):
    path = re.sub(r"<uuid:\w+>", "00000000-0000-0000-0000-000000000000", rule).replace("<name>", "TOKEN").replace(
        "<any(pause, resume):switch>", "pause")
    headers = {}
    if rule.startswith("/ws/"):  # a websocket route answers only a handshake (plain GETs get 400)
        headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    response = app.test_client().open(path, method=method, headers=headers)
    assert response.status_code == SIGNED_IN[(method, rule)]
    if response.status_code == 302:
        assert response.headers["Location"].startswith("/login")


def test_signed_in_the_start_page_leads_to_the_jobs_and_shows_the_viewer(app, admin):
    web = app.test_client()
    page = web.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    web.post("/login/token", data={"token": ADMIN_TOKEN, "csrf_token": csrf})
    start = web.get("/")
    assert start.status_code == 302 and start.headers["Location"] in ("/dashboard", "/jobs")
    home = web.get(start.headers["Location"])
    assert home.status_code == 200 and 'id="whoami">admin<' in home.text
