"""``jobplane users``, ``teams`` and ``tokens`` beyond create and issue, on real PostgreSQL: every
change is audited as ``cli:<login>``, listings print tables and parseable JSON, bad input exits
non-zero naming the option or field and changes nothing."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import ApiToken, AuditLog, Team, User
from tests.test_cli_admin import LOGIN, jobplane, rows, user  # noqa: F401  (jobplane: the CLI fixture)


def counts(app) -> tuple[int, ...]:
    with app.app_context():
        return tuple(db.session.scalar(select(func.count()).select_from(model))
                     for model in (User, Team, ApiToken, AuditLog))


def team_names(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(Team.name).order_by(Team.name)))


@pytest.fixture
def maya(app, jobplane):
    """An admin (the bootstrap one) and maya, a job creator, made with the CLI."""
    assert jobplane("users", "create", "--email", "admin", "--role", "admin").exit_code == 0
    assert jobplane("users", "create", "--email", "maya@example.com", "--role", "job_creator").exit_code == 0


# --- teams --------------------------------------------------------------------------------------

def test_teams_create_list_rename_delete(app, jobplane):
    # When two teams are created
    created = jobplane("teams", "create", "--name", " Billing ")
    assert created.exit_code == 0, created.output
    assert created.stdout.startswith("created team Billing: ")
    assert jobplane("teams", "create", "--name", "Data").exit_code == 0
    # Then they are listed, as a table and as JSON
    table = jobplane("teams", "list")
    assert table.stdout.splitlines()[0].split() == ["NAME", "MEMBERS", "ID"]
    assert [line.split()[:2] for line in table.stdout.splitlines()[1:]] == [["Billing", "0"], ["Data", "0"]]
    listed = json.loads(jobplane("teams", "list", "--json").stdout)
    assert [(team["name"], team["members"]) for team in listed] == [("Billing", 0), ("Data", 0)]
    # When one is renamed (found by any case) and the other deleted
    renamed = jobplane("teams", "rename", "--name", "billing", "--to", "Finance")
    assert renamed.exit_code == 0 and renamed.stdout.strip() == "team billing is now Finance"
    deleted = jobplane("teams", "delete", "--name", "Data", "--yes")
    assert deleted.exit_code == 0 and deleted.stdout.strip() == "deleted team Data"
    # Then the teams say so, and each change is one audit row as the login
    assert team_names(app) == ["Finance"]
    actions = [(row.action, row.email) for row in rows(app, AuditLog.resource_type == "team")]
    assert actions == [("team_created", f"cli:{LOGIN}"), ("team_created", f"cli:{LOGIN}"),
                       ("team_renamed", f"cli:{LOGIN}"), ("team_deleted", f"cli:{LOGIN}")]


def test_teams_delete_asks_first_and_a_no_changes_nothing(app, jobplane):
    jobplane("teams", "create", "--name", "Data")
    before = counts(app)
    refused = jobplane("teams", "delete", "--name", "Data", input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.stderr
    assert counts(app) == before
    accepted = jobplane("teams", "delete", "--name", "Data", input="y\n")
    assert accepted.exit_code == 0 and team_names(app) == []


@pytest.mark.parametrize("args, code, message", [
    (["create", "--name", "   "], 1, "name: is required"),
    (["create", "--name", "data"], 1, "name: a team named 'data' already exists"),
    (["create"], 2, "--name"),
    (["rename", "--name", "Nope", "--to", "X"], 1, "no team named 'Nope'; create it with `jobplane teams create`"),
    (["rename", "--name", "Data", "--to", ""], 1, "name: is required"),
    (["delete", "--name", "Nope", "--yes"], 1, "no team named 'Nope'"),
])
def test_teams_refuse_bad_input_naming_it(app, jobplane, args, code, message):
    jobplane("teams", "create", "--name", "Data")
    before = counts(app)
    result = jobplane("teams", *args)
    assert result.exit_code == code and message in result.stderr
    assert counts(app) == before and team_names(app) == ["Data"]


# --- users --------------------------------------------------------------------------------------

def test_users_set_team_and_no_team(app, jobplane, maya):
    jobplane("teams", "create", "--name", "Billing")
    result = jobplane("users", "set-team", "--email", "maya@example.com", "--team", "billing")
    assert result.exit_code == 0 and result.stdout.strip() == "maya@example.com is now in team billing"
    with app.app_context():
        billing = db.session.scalar(select(Team).where(Team.name == "Billing"))
        assert user(app, "maya@example.com").team_id == billing.id
    assert jobplane("users", "set-team", "--email", "maya@example.com", "--no-team").exit_code == 0
    assert user(app, "maya@example.com").team_id is None
    updates = rows(app, AuditLog.action == "user_updated")
    assert [set(row.changes) for row in updates] == [{"team_id"}, {"team_id"}]
    assert {row.email for row in updates} == {f"cli:{LOGIN}"}


@pytest.mark.parametrize("args, code, message", [
    (["--email", "maya@example.com"], 2, "give either --team NAME or --no-team"),
    (["--email", "maya@example.com", "--team", "Billing", "--no-team"], 2, "give either --team NAME or --no-team"),
    (["--email", "maya@example.com", "--team", "Nope"], 1, "no team named 'Nope'"),
    (["--email", "nobody@example.com", "--team", "Billing"], 1, "no user with email 'nobody@example.com'"),
])
def test_users_set_team_refuses_bad_input(app, jobplane, maya, args, code, message):
    jobplane("teams", "create", "--name", "Billing")
    before = counts(app)
    result = jobplane("users", "set-team", *args)
    assert result.exit_code == code and message in result.stderr
    assert counts(app) == before and user(app, "maya@example.com").team_id is None


def test_a_disabled_users_token_stops_working_until_enabled(app, client, jobplane, maya):
    token = jobplane("tokens", "create", "--email", "maya@example.com", "--name", "laptop").stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    # When maya is disabled, her token no longer works
    disabled = jobplane("users", "disable", "--email", "maya@example.com")
    assert disabled.exit_code == 0 and disabled.stdout.strip() == "maya@example.com is disabled"
    assert client.get("/api/v1/me", headers=headers).status_code == 401
    # When enabled again, it does
    enabled = jobplane("users", "enable", "--email", "maya@example.com")
    assert enabled.exit_code == 0 and enabled.stdout.strip() == "maya@example.com is enabled"
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    changes = [row.changes for row in rows(app, AuditLog.action == "user_updated")]
    assert changes == [{"is_active": {"old": True, "new": False}}, {"is_active": {"old": False, "new": True}}]


def test_the_last_admin_cannot_be_disabled(app, jobplane, maya):
    before = counts(app)
    result = jobplane("users", "disable", "--email", "admin")
    assert result.exit_code == 1 and "last active admin" in result.stderr
    assert user(app, "admin").is_active and counts(app) == before


def test_users_list_as_a_table_and_as_json(app, jobplane, maya):
    jobplane("teams", "create", "--name", "Billing")
    jobplane("users", "set-team", "--email", "maya@example.com", "--team", "Billing")
    jobplane("users", "disable", "--email", "maya@example.com")
    table = jobplane("users", "list")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["EMAIL", "ROLE", "TEAM", "ACTIVE", "SSO", "ID"]
    assert [line.split()[:5] for line in lines[1:]] == [["admin", "admin", "-", "yes", "no"],
                                                         ["maya@example.com", "job_creator", "Billing", "no", "no"]]
    listed = json.loads(jobplane("users", "list", "--json").stdout)
    assert [(u["email"], u["role"], u["team"], u["active"]) for u in listed] == [
        ("admin", "admin", None, True), ("maya@example.com", "job_creator", "Billing", False)]
    assert listed[1]["id"] == str(user(app, "maya@example.com").id)


def test_users_list_filters(app, jobplane, maya):
    jobplane("teams", "create", "--name", "Billing")
    jobplane("users", "create", "--email", "viewer@example.com", "--role", "team_viewer")
    jobplane("users", "set-team", "--email", "viewer@example.com", "--team", "Billing")
    emails = lambda *args: [u["email"] for u in json.loads(jobplane("users", "list", "--json", *args).stdout)]  # noqa: E731
    assert emails("--role", "job_creator") == ["maya@example.com"]
    assert emails("--team", "billing") == ["viewer@example.com"]
    assert emails("--search", "EXAMPLE") == ["maya@example.com", "viewer@example.com"]
    unknown = jobplane("users", "list", "--team", "Nope")
    assert unknown.exit_code == 1 and "no team named 'Nope'" in unknown.stderr
    assert jobplane("users", "list", "--role", "root").exit_code == 2


# --- tokens -------------------------------------------------------------------------------------

def test_tokens_create_list_and_revoke(app, client, jobplane, maya):
    # Given two tokens made for maya, one with the `create` alias
    first = jobplane("tokens", "create", "--email", "maya@example.com", "--name", "ci", "--days", "7")
    second = jobplane("tokens", "issue", "--email", "maya@example.com", "--name", "laptop")
    assert first.exit_code == 0 and second.exit_code == 0
    token = first.stdout.strip()
    # When they are listed, they show without their values
    listed = json.loads(jobplane("tokens", "list", "--email", "MAYA@example.com", "--json").stdout)
    assert sorted((t["name"], t["state"]) for t in listed) == [("ci", "active"), ("laptop", "active")]
    ci = next(t for t in listed if t["name"] == "ci")
    assert ci["prefix"] == token[:8]
    table = jobplane("tokens", "list", "--email", "maya@example.com")
    assert table.stdout.splitlines()[0].split() == ["NAME", "PREFIX", "STATE", "EXPIRES_AT", "LAST_USED_AT", "ID"]
    for output in (table.stdout, json.dumps(listed)):
        assert token not in output and token[8:] not in output
    # When one is revoked by its id
    revoked = jobplane("tokens", "revoke", ci["id"])
    assert revoked.exit_code == 0 and revoked.stdout.strip() == f"revoked token ci ({ci['id']})"
    # Then it no longer authenticates, the list says so, and the revocation is audited as the login
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    states = {t["name"]: t["state"] for t in json.loads(
        jobplane("tokens", "list", "--email", "maya@example.com", "--json").stdout)}
    assert states == {"ci": "revoked", "laptop": "active"}
    (row,) = rows(app, AuditLog.action == "token_revoked")
    assert (row.email, row.resource_id) == (f"cli:{LOGIN}", ci["id"])
    # And revoking it again changes nothing more
    assert jobplane("tokens", "revoke", ci["id"]).exit_code == 0
    assert len(rows(app, AuditLog.action == "token_revoked")) == 1


@pytest.mark.parametrize("args, code, message", [
    (["revoke", "not-a-uuid"], 2, "'not-a-uuid' is not a token id (a UUID); find it with `jobplane tokens list"),
    (["revoke", "00000000-0000-0000-0000-000000000000"], 1, "token 00000000-0000-0000-0000-000000000000 not found"),
    (["revoke"], 2, "TOKEN_ID"),
    (["list", "--email", "nobody@example.com"], 1, "no user with email 'nobody@example.com'"),
    (["list"], 2, "--email"),
])
def test_tokens_refuse_bad_input_naming_it(app, jobplane, maya, args, code, message):
    before = counts(app)
    result = jobplane("tokens", *args)
    assert result.exit_code == code and message in result.stderr
    assert counts(app) == before
