"""The jobs API: authentication, creation, reading, and bad input that changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, Job

VALID = {"name": "nightly-report", "job_type": "bash", "script": "echo hi", "schedule": "0 2 * * *",
         "timezone": "Europe/Berlin"}


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_health_needs_no_token(client):
    # Given no credentials / When the health check is asked / Then it answers
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nope-not-a-token-at-all", "Basic abc"])
def test_api_refuses_requests_without_a_valid_token(client, admin, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/jobs", headers=headers)
    assert response.status_code == 401
    assert response.json["code"] == 401
    assert "token" in response.json["message"]


def test_create_then_read_and_list_a_job(app, client, admin):
    # Given an admin / When a job is created
    response = client.post("/api/v1/jobs", json={**VALID, "env": {"REGION": "eu"}}, headers=admin)
    # Then it is stored with the spec's fields and defaults
    assert response.status_code == 201, response.json
    job = response.json
    assert job["name"] == "nightly-report"
    assert job["timeout_minutes"] == 60 and job["max_retries"] == 0 and job["retry_delay_minutes"] == 5
    assert job["concurrent_allowed"] is False and job["status"] == "active" and job["version"] == 1
    assert job["env"] == {"REGION": "eu"}
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=admin).json["schedule"] == "0 2 * * *"
    listing = client.get("/api/v1/jobs", headers=admin)
    assert [j["id"] for j in listing.json] == [job["id"]]
    assert '"total": 1' in listing.headers["X-Pagination"]
    # And exactly one audit row records the creation
    with app.app_context():
        rows = db.session.scalars(select(AuditLog).where(AuditLog.resource_type == "job")).all()
        assert [(r.action, r.resource_id, r.email) for r in rows] == [("job_created", job["id"], "admin")]


def test_six_field_cron_with_seconds_is_accepted(client, admin):
    response = client.post("/api/v1/jobs", json={**VALID, "schedule": "*/2 * * * * *"}, headers=admin)
    assert response.status_code == 201, response.json


def test_job_without_schedule_is_run_on_demand(client, admin):
    response = client.post("/api/v1/jobs", json={**VALID, "schedule": None}, headers=admin)
    assert response.status_code == 201
    assert response.json["schedule"] is None


def test_a_job_chooses_its_executor_and_image_or_leaves_them_to_the_cluster(client, admin):
    default = client.post("/api/v1/jobs", json=VALID, headers=admin).json
    assert (default["executor"], default["image"]) == (None, None)
    chosen = client.post("/api/v1/jobs", headers=admin, json={
        **VALID, "executor": "kubernetes", "image": "registry.example.com/team/runner:1.4"})
    assert chosen.status_code == 201, chosen.json
    assert (chosen.json["executor"], chosen.json["image"]) == ("kubernetes", "registry.example.com/team/runner:1.4")


def test_slack_webhook_is_masked_in_responses(client, admin):
    hook = "https://hooks.slack.com/services/T000/B000/supersecretvalue"
    response = client.post("/api/v1/jobs", json={**VALID, "notification_slack_webhook": hook}, headers=admin)
    assert response.status_code == 201
    assert "supersecret" not in response.get_data(as_text=True)
    assert response.json["notification_slack_webhook"] == "https://hooks.slack.com/****alue"


BAD_INPUT = [
    ("invalid cron", {"schedule": "61 * * * *"}, "schedule"),
    ("cron with 4 fields", {"schedule": "* * * *"}, "schedule"),
    ("cron with 7 fields", {"schedule": "* * * * * * *"}, "schedule"),
    ("garbage cron", {"schedule": "every day"}, "schedule"),
    ("cron that never fires", {"schedule": "0 0 30 2 *"}, "schedule"),
    ("unknown job_type", {"job_type": "ruby"}, "job_type"),
    ("both script and script_url", {"script_url": "https://git.example.com/r.git", "script_path": "a.sh"},
     "script"),
    ("neither script nor script_url", {"script": None}, "script"),
    ("empty script", {"script": "   "}, "script"),
    ("missing name", {"name": None}, "name"),
    ("blank name", {"name": "  "}, "name"),
    ("unknown timezone", {"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ("timeout out of range", {"timeout_minutes": 0}, "timeout_minutes"),
    ("too many retries", {"max_retries": 6}, "max_retries"),
    ("string for a number", {"timeout_minutes": "60"}, "timeout_minutes"),
    ("bad email", {"notification_emails": ["not-an-email"]}, "notification_emails"),
    ("env name not allowed", {"env": {"JOBPLANE_DATABASE_URL": "x"}}, "env"),
    ("unknown field", {"owner": "someone-else"}, "owner"),
    ("script_url without path", {"script": None, "script_url": "https://git.example.com/r.git"}, "script_path"),
    ("unknown executor", {"executor": "docker"}, "executor"),
    ("image that is no image reference", {"executor": "kubernetes", "image": "python:3; rm -rf /"}, "image"),
    ("image on the local executor", {"executor": "local", "image": "python:3.12-slim"}, "image"),
]


@pytest.mark.parametrize("case, change, field", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gets_422_naming_the_field_and_writes_nothing(app, client, admin, case, change, field):
    payload = {**VALID, **change}
    if change.get("name", "") is None:
        del payload["name"]
    audit_rows = count(app, AuditLog)
    response = client.post("/api/v1/jobs", json=payload, headers=admin)
    assert response.status_code == 422, response.json
    assert field in response.json["errors"]["json"], response.json
    assert count(app, Job) == 0
    assert count(app, AuditLog) == audit_rows


def test_all_bad_fields_are_reported_at_once(client, admin):
    response = client.post("/api/v1/jobs", json={**VALID, "schedule": "nope", "timezone": "Nowhere/Land",
                                                 "max_retries": 9}, headers=admin)
    assert response.status_code == 422
    assert {"timezone", "max_retries"} <= set(response.json["errors"]["json"])


def test_unknown_job_is_404(client, admin):
    response = client.get("/api/v1/jobs/00000000-0000-0000-0000-000000000000", headers=admin)
    assert response.status_code == 404
    assert response.json["code"] == 404


def test_body_that_is_not_json_is_rejected(client, admin):
    response = client.post("/api/v1/jobs", data="name=x", headers={**admin, "Content-Type": "text/plain"})
    assert response.status_code == 422
