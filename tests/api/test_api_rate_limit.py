"""API rate limiting (spec: 100 requests a minute per user, ``JOBPLANE_API_RATE_LIMIT``): counted per
user after authentication, per client address when authentication fails, one budget for all routes,
shared by every web process through Redis; 429 with ``Retry-After`` and the API's JSON error body.

The tests set a small limit (3 a minute) on real Redis and PostgreSQL.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app import create_app
from app.api.auth import authenticate_request
from app.config import ConfigError, load_settings
from app.extensions import db
from app.migrate import upgrade
from app.models import ApiToken, AuditLog
from app.services import users
from tests.api.inventory import PREVIEW, api_routes
from tests.secrets.helpers import make_user

LIMIT = "3 per minute"
HOME, WORK = "203.0.113.5", "198.51.100.7"
BAD_TOKEN = {"Authorization": "Bearer jp_never_issued_0123456789abcdef"}


@pytest.fixture
def limited(app, settings):
    """The app with a limit of 3 requests a minute (``app`` emptied the database and Redis first)."""
    application = create_app({**settings, "API_RATE_LIMIT": LIMIT})
    yield application
    application.extensions["jobplane_db"].engine.dispose()


@pytest.fixture
def people(limited) -> dict[str, dict[str, str]]:
    """Alice and Bob, job creators, each with an API token."""
    headers = {}
    with limited.app_context():
        for name in ("alice", "bob"):
            _, token = make_user(f"{name}@example.com", "job_creator")
            headers[name] = {"Authorization": f"Bearer {token}"}
        db.session.commit()
    return headers


def _get(app, path, headers, address=HOME):
    return app.test_client().get(path, headers=headers, environ_base={"REMOTE_ADDR": address})


def _spend(app, headers, address=HOME) -> None:
    """Use up a budget of 3: three requests that are let through."""
    for _ in range(3):
        response = _get(app, "/api/v1/me", headers, address)
        assert response.status_code in (200, 401), response.get_data(as_text=True)


def _assert_refused(response) -> int:
    """A 429 in the API's error shape with a Retry-After within the minute; returns the Retry-After."""
    assert response.status_code == 429, response.get_data(as_text=True)
    body = response.json
    assert (body["code"], body["status"]) == (429, "Too Many Requests")
    assert "3 per 1 minute" in body["message"] and "try again in" in body["message"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    return retry_after


def test_the_fourth_request_of_a_user_in_a_minute_is_refused(limited, people):
    client = limited.test_client()
    alice = people["alice"]
    # Given Alice's first three requests, to three different routes: let through, counting down
    remaining = []
    for path in ("/api/v1/me", "/api/v1/jobs", PREVIEW):
        response = client.get(path, headers=alice)
        assert response.status_code == 200, (path, response.get_data(as_text=True))
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert "Retry-After" not in response.headers  # only a refusal says when to come back
        remaining.append(response.headers["X-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]
    with limited.app_context():
        tokens = db.session.scalar(select(func.count()).select_from(ApiToken))
        audit_rows = db.session.scalar(select(func.count()).select_from(AuditLog))
    # When she makes a fourth, one that would create a token
    response = client.post("/api/v1/tokens", headers=alice, json={"name": "ci"})
    # Then it is refused with Retry-After and the JSON error body, and nothing was done
    _assert_refused(response)
    assert response.headers["X-RateLimit-Remaining"] == "0"
    with limited.app_context():
        assert db.session.scalar(select(func.count()).select_from(ApiToken)) == tokens
        assert db.session.scalar(select(func.count()).select_from(AuditLog)) == audit_rows


def test_the_limit_is_the_users_not_the_addresses(limited, people):
    # Given Alice has spent her budget from home
    _spend(limited, people["alice"], HOME)
    _assert_refused(_get(limited, "/api/v1/me", people["alice"], HOME))
    # When Bob calls from the same address / Then he is let through: his budget is his own
    for _ in range(3):
        assert _get(limited, "/api/v1/me", people["bob"], HOME).status_code == 200
    # And Alice calling from another address is still refused: the budget follows the user
    _assert_refused(_get(limited, "/api/v1/me", people["alice"], WORK))


def test_failed_authentications_count_against_the_client_address(limited, people):
    # Given three requests with a token that was never issued, from one address
    statuses = [_get(limited, "/api/v1/jobs", BAD_TOKEN, HOME).status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    # When a fourth comes, with no token at all / Then that address is refused
    _assert_refused(_get(limited, "/api/v1/jobs", {}, HOME))
    # And another address is not
    assert _get(limited, "/api/v1/jobs", BAD_TOKEN, WORK).status_code == 401
    # And a user at the refused address still has their own budget
    assert _get(limited, "/api/v1/me", people["alice"], HOME).status_code == 200


def test_health_and_the_openapi_document_are_not_limited(limited):
    # Given an address that has spent its budget
    _spend(limited, {}, HOME)
    _assert_refused(_get(limited, "/api/v1/me", {}, HOME))
    # When it asks for /health and the OpenAPI document, more often than the limit / Then it gets them
    for _ in range(5):
        assert _get(limited, "/health", {}, HOME).status_code == 200
        assert _get(limited, "/api/openapi.json", {}, HOME).status_code == 200


def test_every_web_process_shares_the_budget_through_redis(limited, people, settings):
    # Given a second web process of the same deployment
    other = create_app({**settings, "API_RATE_LIMIT": LIMIT})
    try:
        # When Alice's requests are spread over both / Then the fourth is refused wherever it lands
        assert [_get(app, "/api/v1/me", people["alice"]).status_code
                for app in (limited, other, limited)] == [200, 200, 200]
        _assert_refused(_get(other, "/api/v1/me", people["alice"]))
    finally:
        other.extensions["jobplane_db"].engine.dispose()


def test_while_redis_is_unreachable_each_process_counts_in_memory(app, settings, people):
    # Given a web process whose Redis cannot be reached
    cut_off = create_app({**settings, "API_RATE_LIMIT": LIMIT, "REDIS_URL": "redis://127.0.0.1:1/0"})
    try:
        # When Alice calls the API / Then it answers, and still limits her
        _spend(cut_off, people["alice"])
        _assert_refused(_get(cut_off, "/api/v1/me", people["alice"]))
    finally:
        cut_off.extensions["jobplane_db"].engine.dispose()


def test_the_default_is_100_a_minute(app, client, admin):
    # Given the default setting / When a user makes more than 3 requests / Then all are let through
    responses = [client.get("/api/v1/me", headers=admin) for _ in range(5)]
    assert [r.status_code for r in responses] == [200] * 5
    assert responses[-1].headers["X-RateLimit-Limit"] == "100"
    assert responses[-1].headers["X-RateLimit-Remaining"] == "95"


def test_standalone_counts_in_memory_without_redis(tmp_path):
    # Given a standalone app (one process, SQLite) whose Redis URL leads nowhere
    standalone = create_app({"ENV": "standalone", "DATA_DIR": str(tmp_path), "API_RATE_LIMIT": LIMIT,
                             "REDIS_URL": "redis://127.0.0.1:1/0"})
    upgrade(standalone.config["DATABASE_URL"])
    with standalone.app_context():
        token = users.bootstrap_admin(token="jp_standalone_limit_token_0123")
        db.session.commit()
    try:
        # When the admin makes four requests / Then the fourth is refused, as with Redis
        headers = {"Authorization": f"Bearer {token}"}
        _spend(standalone, headers)
        _assert_refused(_get(standalone, "/api/v1/me", headers))
    finally:
        standalone.extensions["jobplane_db"].engine.dispose()


def test_every_api_route_is_counted(app):
    # Given every route of the API / Then it authenticates, and so counts against a budget
    uncounted = []
    for rule in app.url_map.iter_rules():
        if any(rule.rule == path for _, path in api_routes(app)):
            blueprint = rule.endpoint.rsplit(".", 1)[0]
            if authenticate_request not in app.before_request_funcs.get(blueprint, []):
                uncounted.append(rule.rule)
    assert len({path for _, path in api_routes(app)}) >= 20
    assert not uncounted, f"routes that neither authenticate nor count: {uncounted}"


@pytest.mark.parametrize("value", ["lots", "100 per fortnight", ""])
def test_a_malformed_limit_stops_start_up_naming_the_variable(value):
    with pytest.raises(ConfigError, match="JOBPLANE_API_RATE_LIMIT"):
        load_settings(environ={"JOBPLANE_API_RATE_LIMIT": value, "JOBPLANE_ENV": "test",
                               "JOBPLANE_DATABASE_URL": "sqlite://"})
