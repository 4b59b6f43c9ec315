"""Every change made through the API writes exactly one audit row, saying who, what, from where and
in which request; a refused or failed request writes none; no row ever holds a secret value.

The table below has one entry per mutating (method, rule) of the app's route inventory; a new
POST, PUT, PATCH or DELETE route without one fails ``test_every_mutating_route_has_an_audit_rule``.
Rows are read straight from ``audit_logs`` after each request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Callable

import pytest

from tests.api.inventory import (EXECUTION_RULE, JOB_RULE, JOBS, MISSING_ID, MUTATING_METHODS, REQUESTS, SECRET_VALUE,
                                 TEAM_RULE, USER_RULE, WEBHOOK_SECRET, Call, Request, World, api_routes,
                                 missing_and_extra)
from tests.secrets.helpers import table_text

IP_ADDRESS = "198.51.100.23"
USER_AGENT = "audit-test/1.0 (+https://example.com)"


@dataclass(frozen=True)
class Change:
    """A successful request and the audit row it must write."""

    actor: str
    ownership: str | None
    action: str
    resource_type: str
    json: dict | None = None  #: a body other than the route's usual valid one
    repeat: bool = False  #: send the request once beforehand (e.g. to replace, not create)
    changed: tuple[str, ...] = ()  #: when given, exactly the keys of the row's ``changes``


@dataclass(frozen=True)
class Failure:
    """A request that fails, and must write nothing."""

    why: str
    actor: str
    ownership: str | None
    status: int
    tweak: Callable[[Call], Call] = lambda call: call
    request: Request | None = None  #: a way to build the request other than the route's usual one


@dataclass(frozen=True)
class Audited:
    changes: list[Change]
    failures: list[Failure] = field(default_factory=list)


def missing(call: Call) -> Call:
    return call.with_subject(MISSING_ID)


def body(json: dict) -> Callable[[Call], Call]:
    return lambda call: call.with_json(json)


def stale(call: Call) -> Call:
    """The request, guarded by a version the job is not at (``If-Match``)."""
    return call.with_headers({"If-Match": '"99"'})


def stale_body(call: Call) -> Call:
    """The request, with a body ``version`` the job is not at."""
    return call.with_json({**call.json, "version": 99})


def _job_change_failures(bad: dict) -> list[Failure]:
    """What must fail and audit nothing for PUT or PATCH of a job; ``bad`` breaks a rule."""
    return [Failure(ON_A_TEAM_JOB, "vera", "team", 403), Failure(ON_A_FOREIGN_JOB, "bob", "foreign", 404),
            Failure("a missing job", "admin", "foreign", 404, missing),
            Failure("a bad field", "alice", "own", 422, lambda c: c.with_json({**c.json, **bad})),
            Failure("an unknown field", "alice", "own", 422, lambda c: c.with_json({**c.json, "owner_id": MISSING_ID})),
            Failure("a stale If-Match", "alice", "own", 409, stale),
            Failure("a stale body version", "alice", "own", 409, stale_body),
            Failure("a malformed If-Match", "alice", "own", 422, lambda c: c.with_headers({"If-Match": "v1"}))]


def _test_notification(job_id: str) -> Call:
    return Call("POST", f"/api/v1/jobs/{job_id}/notifications/test", subject=job_id)


SECRET = JOB_RULE + "/secrets/<string:name>"
ON_A_TEAM_JOB = "a team viewer on their team's job"
ON_A_FOREIGN_JOB = "a job creator on another team's job"

#: What each mutating route audits, and requests to it that must audit nothing.
AUDITED: dict[tuple[str, str], Audited] = {
    ("POST", JOBS): Audited(
        [Change("alice", None, "job_created", "job"), Change("admin", None, "job_created", "job")],
        [Failure("a team viewer", "vera", None, 403),
         Failure("a bad schedule", "alice", None, 422, lambda c: c.with_json({**c.json, "schedule": "61 * * * *"})),
         Failure("an unknown field", "alice", None, 422, lambda c: c.with_json({**c.json, "owner_id": MISSING_ID}))]),
    ("PUT", JOB_RULE): Audited(
        [Change("alice", "own", "job_updated", "job",
                changed=("name", "schedule", "notification_slack_webhook")),
         Change("admin", "foreign", "job_updated", "job",
                changed=("name", "schedule", "notification_slack_webhook"))],
        _job_change_failures({"schedule": "61 * * * *"})),
    ("PATCH", JOB_RULE): Audited(
        [Change("alice", "own", "job_updated", "job", changed=("description", "notification_slack_webhook")),
         Change("admin", "foreign", "job_updated", "job", changed=("description", "notification_slack_webhook"))],
        _job_change_failures({"timeout_minutes": 0})),
    ("DELETE", JOB_RULE): Audited(
        [Change("alice", "own", "job_deleted", "job", changed=("status", "queued_runs_cancelled", "secrets_erased")),
         Change("admin", "foreign", "job_deleted", "job")],
        [Failure(ON_A_TEAM_JOB, "vera", "team", 403), Failure(ON_A_FOREIGN_JOB, "bob", "foreign", 404),
         Failure("a missing job", "admin", "foreign", 404, missing),
         Failure("a stale If-Match", "alice", "own", 409, stale),
         Failure("a malformed If-Match", "alice", "own", 422, lambda c: c.with_headers({"If-Match": "v1"}))]),
    ("POST", JOB_RULE + "/run"): Audited(
        [Change("alice", "own", "job_executed", "job"), Change("admin", "foreign", "job_executed", "job")],
        [Failure(ON_A_TEAM_JOB, "vera", "team", 403), Failure(ON_A_FOREIGN_JOB, "bob", "foreign", 404),
         Failure("a missing job", "admin", "foreign", 404, missing)]),
    ("POST", JOB_RULE + "/pause"): Audited(
        [Change("alice", "own", "job_paused", "job")],
        [Failure(ON_A_TEAM_JOB, "vera", "team", 403), Failure(ON_A_FOREIGN_JOB, "bob", "foreign", 404),
         Failure("a missing job", "admin", "foreign", 404, missing)]),
    ("POST", JOB_RULE + "/resume"): Audited(
        [Change("alice", "own", "job_resumed", "job")],
        [Failure(ON_A_TEAM_JOB, "vera", "team", 403), Failure(ON_A_FOREIGN_JOB, "bob", "foreign", 404)]),
    ("POST", EXECUTION_RULE + "/cancel"): Audited(
        [Change("alice", "own", "execution_cancelled", "execution")],
        [Failure(ON_A_TEAM_JOB, "vera", "team", 403), Failure(ON_A_FOREIGN_JOB, "bob", "foreign", 404),
         Failure("a missing execution", "admin", "foreign", 404, missing)]),
    ("POST", JOB_RULE + "/notifications/test"): Audited(
        [Change("alice", "own", "notification_tested", "job"),
         Change("admin", "foreign", "notification_tested", "job")],
        [Failure(ON_A_TEAM_JOB, "vera", "team", 403), Failure(ON_A_FOREIGN_JOB, "bob", "foreign", 404),
         Failure("a missing job", "admin", "foreign", 404, missing),
         Failure("a job with no channel to test", "alice", "own", 422,
                 request=Request("job", lambda w, a, o: _test_notification(w.job(a, o, fresh=True))))]),
    ("PUT", SECRET): Audited(
        [Change("alice", "own", "secret_created", "job"),
         Change("alice", "own", "secret_updated", "job", repeat=True),
         Change("admin", "foreign", "secret_created", "job")],
        [Failure(ON_A_TEAM_JOB, "vera", "team", 403), Failure(ON_A_FOREIGN_JOB, "bob", "foreign", 404),
         Failure("an empty value", "alice", "own", 422, body({"value": ""})),
         Failure("a reserved name", "alice", "own", 422,
                 lambda c: Call(c.method, c.url.rsplit("/", 1)[0] + "/JOBPLANE_X", c.json, c.subject))]),
    ("DELETE", SECRET): Audited(
        [Change("alice", "own", "secret_deleted", "job")],
        [Failure(ON_A_TEAM_JOB, "vera", "team", 403), Failure(ON_A_FOREIGN_JOB, "bob", "foreign", 404),
         Failure("a missing secret", "alice", "own", 404,
                 lambda c: Call(c.method, c.url.rsplit("/", 1)[0] + "/NO_SUCH_SECRET", subject=c.subject))]),
    ("POST", "/api/v1/users"): Audited(
        [Change("admin", None, "user_created", "user")],
        [Failure("a job creator", "alice", None, 403),
         Failure("a bad email", "admin", None, 422, body({"email": "not an email", "role": "job_creator"})),
         Failure("a bad role", "admin", None, 422, body({"email": "x@example.com", "role": "owner"}))]),
    ("PATCH", USER_RULE): Audited(
        [Change("admin", "foreign", "user_updated", "user"),
         Change("admin", "foreign", "user_role_changed", "user", json={"role": "team_viewer"})],
        [Failure("a user on themself", "alice", "own", 403, body({"role": "admin"})),
         Failure("a bad role", "admin", "foreign", 422, body({"role": "owner"})),
         Failure("a missing user", "admin", "foreign", 404, missing),
         Failure("the last admin's demotion", "admin", "own", 409, body({"role": "job_creator"}))]),
    ("DELETE", USER_RULE): Audited(
        [Change("admin", "foreign", "user_deleted", "user")],
        [Failure("a job creator", "alice", "team", 403), Failure("a missing user", "admin", "foreign", 404, missing),
         Failure("the last admin", "admin", "own", 409)]),
    ("POST", "/api/v1/teams"): Audited(
        [Change("admin", None, "team_created", "team")],
        [Failure("a job creator", "alice", None, 403),
         Failure("an empty name", "admin", None, 422, body({"name": " "})),
         Failure("a taken name", "admin", None, 422, body({"name": "DATA"}))]),
    ("PATCH", TEAM_RULE): Audited(
        [Change("admin", "foreign", "team_renamed", "team")],
        [Failure("a member", "alice", "own", 403), Failure("an empty name", "admin", "foreign", 422, body({"name": ""})),
         Failure("a missing team", "admin", "foreign", 404, missing)]),
    ("DELETE", TEAM_RULE): Audited(
        [Change("admin", "foreign", "team_deleted", "team")],
        [Failure("a member", "vera", "own", 403), Failure("a missing team", "admin", "foreign", 404, missing)]),
    ("POST", "/api/v1/tokens"): Audited(
        [Change("vera", None, "token_created", "api_token"), Change("admin", None, "token_created", "api_token")],
        [Failure("a lifetime of 0 days", "vera", None, 422, body({"name": "ci", "expires_in_days": 0})),
         Failure("no name", "vera", None, 422, body({"expires_in_days": 30}))]),
    ("DELETE", "/api/v1/tokens/<uuid:token_id>"): Audited(
        [Change("vera", "own", "token_revoked", "api_token"), Change("admin", "foreign", "token_revoked", "api_token")],
        [Failure("a teammate's token", "alice", "team", 404), Failure("a missing token", "admin", "own", 404, missing)]),
}


@pytest.fixture
def world(app, client, admin) -> World:
    return World(app, client, admin)


def _route_id(route: tuple[str, str]) -> str:
    return " ".join(route)


def _send(world: World, call: Call, actor: str, request_id: str):
    headers = {**world.headers[actor], "User-Agent": USER_AGENT, "X-Request-ID": request_id}
    return call.send(world.client, headers, REMOTE_ADDR=IP_ADDRESS)


def _no_secret_in_the_audit_log(world: World) -> None:
    with world.app.app_context():
        trail = table_text("audit_logs")
        assert trail, "the audit log is empty: the search below would prove nothing"
        assert SECRET_VALUE not in trail, "a secret's value is in the audit log"
        assert WEBHOOK_SECRET not in trail, "a Slack webhook URL (a credential) is in the audit log"


def test_every_mutating_route_has_an_audit_rule(app):
    # Given the routes that change something / Then each says what it audits
    inventory = {route for route in api_routes(app) if route[0] in MUTATING_METHODS}
    assert len(inventory) >= 15, "the inventory lost mutating routes"
    problems = missing_and_extra(AUDITED, inventory, "AUDITED in tests/api/test_audit_every_mutation.py")
    assert not problems, problems


@pytest.mark.parametrize("route", sorted(AUDITED), ids=_route_id)
def test_a_change_writes_exactly_one_audit_row(world, route):
    request = REQUESTS[route]
    for change in AUDITED[route].changes:
        # Given a valid request to change something, by someone allowed to
        call = request.build(world, change.actor, change.ownership)
        if change.json is not None:
            call = call.with_json(change.json)
        if change.repeat:
            assert _send(world, call, change.actor, uuid.uuid4().hex).status_code < 400
        last = world.last_audit_id()
        request_id = uuid.uuid4().hex
        # When it is sent
        response = _send(world, call, change.actor, request_id)
        assert response.status_code < 400, (change, response.get_data(as_text=True))
        # Then exactly one row records it: what, on what, by whom, from where, in which request
        rows = world.audit_rows_after(last)
        assert len(rows) == 1, (change, [(row.action, row.resource_id) for row in rows])
        row = rows[0]
        subject = call.subject or response.json["id"]
        assert (row.action, row.resource_type, row.resource_id) == (change.action, change.resource_type, subject)
        assert (str(row.user_id), row.email) == (world.ids[change.actor], _email(change.actor))
        assert (row.ip_address, row.user_agent, row.request_id) == (IP_ADDRESS, USER_AGENT, request_id)
        assert row.row_hash and row.prev_hash is not None
        if change.changed:
            assert sorted(row.changes) == sorted(change.changed), (change, row.changes)
    # And no row of the audit log holds a secret value
    _no_secret_in_the_audit_log(world)


@pytest.mark.parametrize("route", sorted(AUDITED), ids=_route_id)
def test_a_failed_change_writes_no_audit_row(world, route):
    request = REQUESTS[route]
    for failure in AUDITED[route].failures:
        # Given a request that must fail: refused, about nothing, or with bad input
        call = failure.tweak((failure.request or request).build(world, failure.actor, failure.ownership))
        last = world.last_audit_id()
        # When it is sent
        response = _send(world, call, failure.actor, uuid.uuid4().hex)
        # Then it fails as it should, and the audit log is as it was
        assert response.status_code == failure.status, (failure.why, response.get_data(as_text=True))
        assert world.audit_rows_after(last) == [], failure.why


def test_a_read_writes_no_audit_row(world):
    # Given a valid read of every GET route, by the admin
    calls = [REQUESTS[route].build(world, "admin", world.ownerships(REQUESTS[route].kind, "admin")[0])
             for route in sorted(REQUESTS) if route[0] == "GET"]
    assert len(calls) >= 15
    last = world.last_audit_id()
    # When each is sent / Then it succeeds and nothing is audited
    for call in calls:
        assert _send(world, call, "admin", uuid.uuid4().hex).status_code == 200, call
    assert world.audit_rows_after(last) == []


def _email(actor: str) -> str:
    return "admin" if actor == "admin" else f"{actor}@example.com"
