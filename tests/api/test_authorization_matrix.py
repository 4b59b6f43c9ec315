"""Who may call what: every API route × every role × an own, a team and a foreign object gets exactly
what the permission matrix (``app/services/access.py``) allows, and nothing else.

The table below has one rule per (method, rule) of the app's route inventory; a route without a
rule, or a rule without a route, fails ``test_every_api_route_has_a_rule``.  A rule gives, per
role, the outcome for each ownership of the object (see ``tests/api/inventory.py``): a status,
or for a list whether the object is in it.  Objects an actor may not see are not found (404), so
ids reveal nothing; objects they may see but not change are forbidden (403).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.api.inventory import (ACTORS, EXECUTION_RULE, JOB_RULE, JOBS, MISSING_ID, MUTATING_METHODS, REQUESTS,
                                 ROLE, TEAM_RULE, USER_RULE, World, api_routes, missing_and_extra)


@dataclass(frozen=True)
class Listed:
    """A list answered 200, with the object in it (or not)."""

    shown: bool

    def __repr__(self) -> str:
        return "200 listed" if self.shown else "200 not listed"


SEEN, HIDDEN = Listed(True), Listed(False)


def anyone(ok):
    return {"admin": ok, "job_creator": ok, "team_viewer": ok}


def admins(ok):
    return {"admin": ok, "job_creator": 403, "team_viewer": 403}


def job_readers(ok):
    """Reading a job, its runs, its secrets' names: admins, its owner, its team's viewers."""
    return {"admin": {"own": ok, "foreign": ok},
            "job_creator": {"own": ok, "team": 404, "foreign": 404},
            "team_viewer": {"own": ok, "team": ok, "foreign": 404}}


def job_changers(ok):
    """Changing or running a job: admins and its owner, if a job creator; viewers who see it: 403."""
    return {"admin": {"own": ok, "foreign": ok},
            "job_creator": {"own": ok, "team": 404, "foreign": 404},
            "team_viewer": {"own": 403, "team": 403, "foreign": 404}}


def self_or_admin(ok):
    """A user's own record: themself and admins; another user's: admins (others are forbidden)."""
    return {"admin": {"own": ok, "foreign": ok},
            "job_creator": {"own": ok, "team": 403, "foreign": 403},
            "team_viewer": {"own": ok, "team": 403, "foreign": 403}}


def admin_changes_users(ok, *, own):
    return {"admin": {"own": own, "foreign": ok},
            "job_creator": {"own": 403, "team": 403, "foreign": 403},
            "team_viewer": {"own": 403, "team": 403, "foreign": 403}}


def admin_changes_teams(ok):
    return {"admin": {"foreign": ok},
            "job_creator": {"own": 403, "foreign": 403},
            "team_viewer": {"own": 403, "foreign": 403}}


#: The permission matrix, route by route: role → outcome, or role → ownership → outcome.
MATRIX: dict[tuple[str, str], dict] = {
    # jobs: a job creator sees only their own; a team viewer reads their team's
    ("GET", JOBS): {"admin": {"own": SEEN, "foreign": SEEN},
                    "job_creator": {"own": SEEN, "team": HIDDEN, "foreign": HIDDEN},
                    "team_viewer": {"own": SEEN, "team": SEEN, "foreign": HIDDEN}},
    ("POST", JOBS): {"admin": 201, "job_creator": 201, "team_viewer": 403},
    ("GET", JOB_RULE): job_readers(200),
    ("PUT", JOB_RULE): job_changers(200),
    ("PATCH", JOB_RULE): job_changers(200),
    ("DELETE", JOB_RULE): job_changers(200),
    ("POST", JOB_RULE + "/run"): job_changers(202),
    ("POST", JOB_RULE + "/pause"): job_changers(200),
    ("POST", JOB_RULE + "/resume"): job_changers(200),
    ("GET", JOB_RULE + "/executions"): job_readers(200),
    ("GET", JOB_RULE + "/notifications"): job_readers(200),
    ("GET", JOB_RULE + "/metrics"): job_readers(200),
    ("POST", JOB_RULE + "/notifications/test"): job_changers(202),
    ("GET", EXECUTION_RULE): job_readers(200),
    ("GET", EXECUTION_RULE + "/log"): job_readers(200),
    ("POST", EXECUTION_RULE + "/cancel"): job_changers(200),
    ("GET", JOB_RULE + "/secrets"): job_readers(200),
    ("PUT", JOB_RULE + "/secrets/<string:name>"): job_changers(201),
    ("DELETE", JOB_RULE + "/secrets/<string:name>"): job_changers(204),
    ("GET", "/api/v1/schedules/preview"): anyone(200),
    # users: admins; everyone may read and export their own record
    ("GET", "/api/v1/users"): admins(200),
    ("POST", "/api/v1/users"): admins(201),
    ("GET", USER_RULE): self_or_admin(200),
    ("PATCH", USER_RULE): admin_changes_users(200, own=200),
    # the admin may delete users, but not themself while the last admin: a conflict, not a denial
    ("DELETE", USER_RULE): admin_changes_users(200, own=409),
    ("GET", USER_RULE + "/export"): self_or_admin(200),
    ("GET", "/api/v1/me"): anyone(200),
    ("GET", "/api/v1/me/export"): anyone(200),
    # teams: admins; a member may read their own team
    ("GET", "/api/v1/teams"): admins(200),
    ("POST", "/api/v1/teams"): admins(201),
    ("GET", TEAM_RULE): {"admin": {"foreign": 200},
                         "job_creator": {"own": 200, "foreign": 403},
                         "team_viewer": {"own": 200, "foreign": 403}},
    ("PATCH", TEAM_RULE): admin_changes_teams(200),
    ("DELETE", TEAM_RULE): admin_changes_teams(204),
    # tokens: everyone their own; an admin may revoke anyone's; others' tokens do not exist for you
    ("GET", "/api/v1/tokens"): {"admin": {"own": SEEN, "foreign": HIDDEN},
                                "job_creator": {"own": SEEN, "team": HIDDEN, "foreign": HIDDEN},
                                "team_viewer": {"own": SEEN, "team": HIDDEN, "foreign": HIDDEN}},
    ("POST", "/api/v1/tokens"): anyone(201),
    ("DELETE", "/api/v1/tokens/<uuid:token_id>"): {"admin": {"own": 200, "foreign": 200},
                                                   "job_creator": {"own": 200, "team": 404, "foreign": 404},
                                                   "team_viewer": {"own": 200, "team": 404, "foreign": 404}},
    # the audit log: admins
    ("GET", "/api/v1/audit-logs"): admins(200),
}


@pytest.fixture
def world(app, client, admin) -> World:
    return World(app, client, admin)


def _route_id(route: tuple[str, str]) -> str:
    return " ".join(route)


def _outcome(response, subject: str | None, expected):
    if isinstance(expected, Listed) and response.status_code == 200:
        return Listed(subject in {item["id"] for item in response.json})
    return response.status_code


def _with_id(body: dict, old: str, new: str) -> dict:
    return {key: value.replace(old, new) if isinstance(value, str) else value for key, value in body.items()}


def test_every_api_route_has_a_rule(app):
    # Given the routes the app serves / Then each has exactly one rule and one way to call it
    inventory = api_routes(app)
    assert len(inventory) >= 30, "the inventory lost routes: is /api/ still where the API lives?"
    problems = missing_and_extra(MATRIX, inventory, "MATRIX in tests/api/test_authorization_matrix.py")
    problems += missing_and_extra(REQUESTS, inventory, "REQUESTS in tests/api/inventory.py")
    assert not problems, problems


@pytest.mark.parametrize("route", sorted(MATRIX), ids=_route_id)
def test_each_role_gets_what_the_matrix_allows(world, route):
    request, rule = REQUESTS[route], MATRIX[route]
    mismatches, exercised = [], set()
    for actor in ACTORS:
        role = ROLE[actor]
        for ownership in world.ownerships(request.kind, actor):
            # Given an object of this ownership for this actor
            expected = rule[role] if ownership is None else rule[role].get(ownership, "no rule")
            exercised.add((role, ownership))
            call = request.build(world, actor, ownership)
            before = world.audit_count()
            # When the actor calls the route
            response = call.send(world.client, world.headers[actor])
            # Then the outcome is the matrix's
            got = _outcome(response, call.subject, expected)
            where = f"{actor} ({role}) × {ownership or 'no object'}: {call.method} {call.url}"
            if got != expected:
                mismatches.append(f"{where}: expected {expected}, got {got} {response.get_data(as_text=True)[:200]}")
            # And only an allowed change writes to the audit log (one row); a refusal writes nothing
            rows = world.audit_count() - before
            audited = 1 if route[0] in MUTATING_METHODS and response.status_code < 400 else 0
            if rows != audited:
                mismatches.append(f"{where}: {rows} audit rows written, expected {audited}")
            if response.status_code >= 400:
                assert response.json["code"] == response.status_code, where
            # And an object hidden from the actor looks exactly like one that does not exist
            if response.status_code == 404 and call.subject:
                missing = call.with_subject(MISSING_ID).send(world.client, world.headers[actor])
                if (missing.status_code, missing.json) != (404, _with_id(response.json, call.subject, MISSING_ID)):
                    mismatches.append(f"{where}: its 404 differs from a missing object's: {response.json} "
                                      f"vs {missing.status_code} {missing.json}")
    assert not mismatches, "\n".join(mismatches)
    # And every cell of the rule was tried by someone (a cell no actor reaches is a typo)
    cells = {(role, ownership) for role, outcome in rule.items()
             for ownership in (outcome if isinstance(outcome, dict) else [None])}
    assert cells == exercised, f"cells never tried: {sorted(cells - exercised, key=str)}"


def test_without_a_valid_token_every_route_is_401(world):
    # Given credentials that identify nobody: none, revoked, expired, a disabled user's, unknown
    credentials = world.bad_credentials()
    # And a valid request to every route, about one of the admin's objects
    calls = []
    for route in sorted(REQUESTS):
        request = REQUESTS[route]
        calls.append(request.build(world, "admin", world.ownerships(request.kind, "admin")[0]))
    before = world.audit_count()
    failures = []
    # Each kind of credentials from an address of its own: failed authentications count against
    # their address's API rate limit, and this test makes more of them than one address may.
    addresses = {what: f"192.0.2.{n}" for n, what in enumerate(credentials, start=1)}
    for call in calls:
        for what, headers in credentials.items():
            # When the route is called with them
            response = call.send(world.client, headers, REMOTE_ADDR=addresses[what])
            # Then it is refused as unauthenticated, with a hint, before anything else is looked at
            if response.status_code != 401 or "Bearer" not in response.headers.get("WWW-Authenticate", ""):
                failures.append(f"{what}: {call.method} {call.url}: {response.status_code}")
    assert not failures, "\n".join(failures)
    # And nothing was changed, so nothing was audited
    assert world.audit_count() == before
