"""The secrets API: set, list and delete a job's secrets; values are write-only and never returned."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, Job, JobSecret, Team
from tests.secrets.helpers import JOB, make_user, table_text

VALUE = "correct horse battery staple 42"


@pytest.fixture
def people(app, admin):
    """Alice and Bob create jobs; Vera views Alice's team's jobs. Tokens as request headers."""
    with app.app_context():
        team = Team(name="data")
        db.session.add(team)
        db.session.flush()
        _, alice = make_user("alice@example.com", "job_creator", team.id)
        _, bob = make_user("bob@example.com", "job_creator")
        _, vera = make_user("vera@example.com", "team_viewer", team.id)
        db.session.commit()
    return {name: {"Authorization": f"Bearer {token}"}
            for name, token in (("admin", admin["Authorization"][7:]), ("alice", alice), ("bob", bob),
                                ("vera", vera))}


@pytest.fixture
def job_id(client, people) -> str:
    """A job of Alice's."""
    response = client.post("/api/v1/jobs", json=JOB, headers=people["alice"])
    assert response.status_code == 201, response.json
    return response.json["id"]


def url(job_id: str, name: str | None = None) -> str:
    return f"/api/v1/jobs/{job_id}/secrets" + (f"/{name}" if name else "")


def counts(app) -> tuple[int, int]:
    with app.app_context():
        return (db.session.scalar(select(func.count()).select_from(JobSecret)),
                db.session.scalar(select(func.count()).select_from(AuditLog)))


def audit_actions(app, job_id: str) -> list[tuple]:
    with app.app_context():
        rows = db.session.scalars(select(AuditLog).where(AuditLog.action.like("secret_%"),
                                                         AuditLog.resource_id == job_id).order_by(AuditLog.id))
        return [(r.action, r.changes, r.email) for r in rows]


def test_set_list_replace_and_delete(app, client, people, job_id):
    responses = []
    # When Alice sets a secret on her job
    created = client.put(url(job_id, "DB_PASSWORD"), json={"value": VALUE}, headers=people["alice"])
    responses.append(created)
    # Then it is created, and only its name and timestamps come back
    assert created.status_code == 201, created.json
    assert set(created.json) == {"name", "created_at", "updated_at"} and created.json["name"] == "DB_PASSWORD"
    # When she sets it again / Then the value is replaced
    replaced = client.put(url(job_id, "DB_PASSWORD"), json={"value": VALUE + "!"}, headers=people["alice"])
    responses.append(replaced)
    assert replaced.status_code == 200, replaced.json
    assert replaced.json["created_at"] == created.json["created_at"]
    assert replaced.json["updated_at"] > created.json["updated_at"]
    # And the list gives names, never values
    listing = client.get(url(job_id), headers=people["alice"])
    responses.append(listing)
    assert listing.status_code == 200
    assert [s["name"] for s in listing.json] == ["DB_PASSWORD"]
    # When she deletes it / Then it is gone
    deleted = client.delete(url(job_id, "DB_PASSWORD"), headers=people["alice"])
    responses.append(deleted)
    assert deleted.status_code == 204 and deleted.get_data() == b""
    assert client.get(url(job_id), headers=people["alice"]).json == []
    again = client.delete(url(job_id, "DB_PASSWORD"), headers=people["alice"])
    responses.append(again)
    assert again.status_code == 404 and "DB_PASSWORD" in again.json["message"]
    # And no response ever held the value
    for response in responses:
        assert VALUE not in response.get_data(as_text=True)
    # And each change wrote exactly one audit row, with the name only
    assert audit_actions(app, job_id) == [
        ("secret_created", {"secret": "DB_PASSWORD"}, "alice@example.com"),
        ("secret_updated", {"secret": "DB_PASSWORD"}, "alice@example.com"),
        ("secret_deleted", {"secret": "DB_PASSWORD"}, "alice@example.com"),
    ]
    with app.app_context():
        assert VALUE not in table_text("audit_logs")


def test_an_admin_may_change_any_jobs_secrets(client, people, job_id):
    response = client.put(url(job_id, "TOKEN"), json={"value": "v"}, headers=people["admin"])
    assert response.status_code == 201
    assert client.delete(url(job_id, "TOKEN"), headers=people["admin"]).status_code == 204


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_no_token_no_access(app, client, job_id, method):
    target = url(job_id) if method == "get" else url(job_id, "DB_PASSWORD")
    before = counts(app)
    response = getattr(client, method)(target, json={"value": VALUE} if method == "put" else None)
    assert response.status_code == 401
    assert "token" in response.json["message"]
    assert counts(app) == before


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_another_creators_job_is_not_found(app, client, people, job_id, method):
    # Given a secret on Alice's job
    client.put(url(job_id, "DB_PASSWORD"), json={"value": VALUE}, headers=people["alice"])
    before = counts(app)
    # When Bob, who may not see the job, asks / Then it does not exist for him
    target = url(job_id) if method == "get" else url(job_id, "DB_PASSWORD")
    response = getattr(client, method)(target, json={"value": "bob's"} if method == "put" else None,
                                       headers=people["bob"])
    assert response.status_code == 404
    assert counts(app) == before


def test_a_team_viewer_sees_names_but_changes_nothing(app, client, people, job_id):
    client.put(url(job_id, "DB_PASSWORD"), json={"value": VALUE}, headers=people["alice"])
    before = counts(app)
    listing = client.get(url(job_id), headers=people["vera"])
    assert listing.status_code == 200 and [s["name"] for s in listing.json] == ["DB_PASSWORD"]
    assert client.put(url(job_id, "DB_PASSWORD"), json={"value": "x"}, headers=people["vera"]).status_code == 403
    assert client.put(url(job_id, "NEW_ONE"), json={"value": "x"}, headers=people["vera"]).status_code == 403
    assert client.delete(url(job_id, "DB_PASSWORD"), headers=people["vera"]).status_code == 403
    assert counts(app) == before


def test_unknown_job_is_404(client, people):
    missing = "00000000-0000-0000-0000-000000000000"
    assert client.get(url(missing), headers=people["admin"]).status_code == 404
    assert client.put(url(missing, "X"), json={"value": "v"}, headers=people["admin"]).status_code == 404


BAD_INPUT = [
    ("name starting with a digit", "1PASSWORD", {"value": VALUE}, "name"),
    ("name with a dash", "DB-PASSWORD", {"value": VALUE}, "name"),
    ("name with a dot", "db.password", {"value": VALUE}, "name"),
    ("name ending with a newline", "DB_PASSWORD%0A", {"value": VALUE}, "name"),
    ("reserved prefix", "JOBPLANE_JOB_ID", {"value": VALUE}, "name"),
    ("reserved prefix in lower case", "jobplane_token", {"value": VALUE}, "name"),
    ("name of 129 characters", "A" * 129, {"value": VALUE}, "name"),
    ("empty value", "DB_PASSWORD", {"value": ""}, "value"),
    ("value over 32 KiB", "DB_PASSWORD", {"value": "x" * (32 * 1024 + 1)}, "value"),
    ("value with a NUL", "DB_PASSWORD", {"value": VALUE + "\x00"}, "value"),
    ("missing value", "DB_PASSWORD", {}, "value"),
    ("null value", "DB_PASSWORD", {"value": None}, "value"),
    ("number for a value", "DB_PASSWORD", {"value": 42}, "value"),
    ("unknown field", "DB_PASSWORD", {"value": VALUE, "name": "OTHER"}, "name"),
]


@pytest.mark.parametrize("case, name, body, field", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gets_422_naming_the_field_and_writes_nothing(app, client, people, job_id, case, name, body,
                                                                field):
    before = counts(app)
    response = client.put(url(job_id, name), json=body, headers=people["alice"])
    assert response.status_code == 422, response.json
    assert field in response.json["errors"]["json"], response.json
    assert VALUE not in response.get_data(as_text=True)
    assert counts(app) == before


def test_a_bad_name_and_a_bad_value_are_reported_at_once(client, people, job_id):
    response = client.put(url(job_id, "9LIVES"), json={"value": ""}, headers=people["alice"])
    assert response.status_code == 422
    assert set(response.json["errors"]["json"]) == {"name", "value"}


def test_the_largest_value_is_accepted(client, people, job_id):
    response = client.put(url(job_id, "BIG"), json={"value": "é" * (16 * 1024)}, headers=people["alice"])
    assert response.status_code == 201, response.json


def test_a_name_differing_only_by_case_is_refused(app, client, people, job_id):
    client.put(url(job_id, "DB_PASSWORD"), json={"value": VALUE}, headers=people["alice"])
    before = counts(app)
    response = client.put(url(job_id, "db_password"), json={"value": "x"}, headers=people["alice"])
    assert response.status_code == 422 and "DB_PASSWORD" in response.json["errors"]["json"]["name"][0]
    assert counts(app) == before


def test_secrets_go_with_their_job(app, client, people, job_id):
    client.put(url(job_id, "DB_PASSWORD"), json={"value": VALUE}, headers=people["alice"])
    with app.app_context():
        db.session.delete(db.session.get(Job, uuid.UUID(job_id)))
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(JobSecret)) == 0
