"""``Idempotency-Key`` on POST /jobs and POST /jobs/{id}/run: a retry is answered from the first
request and creates nothing; another request with the key is refused; a duplicate sent while the
first is still running is told to retry (409)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, select, text, update

from app.extensions import db
from app.models import AuditLog, Execution, IdempotencyKey, Job
from app.models.base import utcnow
from app.scheduler.service import SchedulerService
from app.services import api_tokens, idempotency, users
from app.services.actors import SYSTEM
from tests.helpers import wait_for

JOB = {"name": "nightly-report", "job_type": "bash", "script": "echo hi", "schedule": "0 2 * * *"}


def count(app, model, *where) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


def keyed(headers: dict, key: str) -> dict:
    return {**headers, "Idempotency-Key": key}


@pytest.fixture
def alice(app, admin) -> dict:
    with app.app_context():
        user = users.create_user(actor=SYSTEM, email="alice@example.com", role="job_creator")
        _, token = api_tokens.issue_token(actor=SYSTEM, user=user, name="test")
        db.session.commit()
    return {"Authorization": f"Bearer {token}"}


def test_a_retried_create_returns_the_first_response_and_creates_nothing(app, client, admin):
    # Given a job created with a key
    first = client.post("/api/v1/jobs", json=JOB, headers=keyed(admin, "create-1"))
    assert first.status_code == 201
    audit_rows = count(app, AuditLog)
    # When the same request is sent again, its JSON written in another order
    retry = client.post("/api/v1/jobs", data='{"schedule": "0 2 * * *", "script": "echo hi", "job_type": "bash", '
                                             '"name": "nightly-report"}',
                        headers=keyed(admin, "create-1"), content_type="application/json")
    # Then the answer is the first one, marked as a replay, and there is still one job and no new audit row
    assert retry.status_code == 201
    assert retry.json == first.json
    assert retry.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert retry.headers["Content-Type"] == "application/json"
    assert count(app, Job) == 1 and count(app, AuditLog) == audit_rows


def test_without_a_key_each_create_creates(app, client, admin):
    for _ in range(2):
        assert client.post("/api/v1/jobs", json=JOB, headers=admin).status_code == 201
    assert count(app, Job) == 2 and count(app, IdempotencyKey) == 0


def test_the_same_key_with_another_body_or_route_is_422_and_changes_nothing(app, client, admin):
    # Given a job created with a key
    job = client.post("/api/v1/jobs", json=JOB, headers=keyed(admin, "k")).json
    audit_rows = count(app, AuditLog)
    # When the key is sent with another body, then to another route
    other_body = client.post("/api/v1/jobs", json={**JOB, "name": "other"}, headers=keyed(admin, "k"))
    other_route = client.post(f"/api/v1/jobs/{job['id']}/run", headers=keyed(admin, "k"))
    # Then both are refused, naming the header and what to do, and nothing is created
    for response in (other_body, other_route):
        assert response.status_code == 422
        message = response.json["errors"]["json"]["Idempotency-Key"][0]
        assert "different request" in message and "new key" in message
    assert "POST /api/v1/jobs" in other_route.json["errors"]["json"]["Idempotency-Key"][0]
    assert count(app, Job) == 1 and count(app, Execution) == 0 and count(app, AuditLog) == audit_rows


def test_keys_belong_to_their_user(app, client, admin, alice):
    # Given the admin used a key / When Alice uses the same key / Then hers is a request of its own
    assert client.post("/api/v1/jobs", json=JOB, headers=keyed(admin, "shared")).status_code == 201
    mine = client.post("/api/v1/jobs", json=JOB, headers=keyed(alice, "shared"))
    assert mine.status_code == 201 and "Idempotent-Replayed" not in mine.headers
    assert count(app, Job) == 2


@pytest.mark.parametrize("key", ["", " ", "x" * 256, "tab\there"])
def test_a_malformed_key_is_422_naming_the_header(app, client, admin, key):
    response = client.post("/api/v1/jobs", json=JOB, headers=keyed(admin, key))
    assert response.status_code == 422
    assert "printable" in response.json["errors"]["json"]["Idempotency-Key"][0]
    assert count(app, Job) == 0 and count(app, IdempotencyKey) == 0


def test_the_longest_key_is_accepted(app, client, admin):
    key = "k" * 255
    assert client.post("/api/v1/jobs", json=JOB, headers=keyed(admin, key)).status_code == 201
    assert client.post("/api/v1/jobs", json=JOB, headers=keyed(admin, key)).headers["Idempotent-Replayed"] == "true"


def test_a_failed_request_keeps_nothing_so_a_corrected_retry_may_reuse_the_key(app, client, admin):
    # Given a create with a key that fails validation
    bad = client.post("/api/v1/jobs", json={**JOB, "schedule": "not cron"}, headers=keyed(admin, "fix-me"))
    assert bad.status_code == 422
    # Then the key is not kept
    assert count(app, IdempotencyKey) == 0
    # When the corrected request is sent with the same key / Then it creates the job
    fixed = client.post("/api/v1/jobs", json=JOB, headers=keyed(admin, "fix-me"))
    assert fixed.status_code == 201 and count(app, Job) == 1


def test_a_refused_run_keeps_nothing(app, client, admin, alice):
    # Given the admin's job / When Alice (who cannot see it) runs it with a key / Then 404 and no key kept
    job = client.post("/api/v1/jobs", json=JOB, headers=admin).json
    assert client.post(f"/api/v1/jobs/{job['id']}/run", headers=keyed(alice, "r")).status_code == 404
    assert count(app, IdempotencyKey) == 0


def test_a_retried_run_returns_the_same_execution(app, client, admin):
    # Given a job that may run alongside itself, run with a key
    job = client.post("/api/v1/jobs", json={**JOB, "concurrent_allowed": True}, headers=admin).json
    first = client.post(f"/api/v1/jobs/{job['id']}/run", headers=keyed(admin, "run-1"))
    assert first.status_code == 202
    # When the run is retried with the key / Then it is the same execution, and there is one
    retry = client.post(f"/api/v1/jobs/{job['id']}/run", headers=keyed(admin, "run-1"))
    assert retry.status_code == 202 and retry.json["id"] == first.json["id"]
    assert count(app, Execution) == 1
    # And a new key runs it again
    again = client.post(f"/api/v1/jobs/{job['id']}/run", headers=keyed(admin, "run-2"))
    assert again.status_code == 202 and again.json["id"] != first.json["id"]


def test_a_duplicate_while_the_first_is_in_flight_is_409_then_replayed(app, client, admin, settings):
    # Given a job whose row another transaction holds locked, so a run of it waits
    job = client.post("/api/v1/jobs", json=JOB, headers=admin).json
    engine = create_engine(settings["DATABASE_URL"])
    blocker = engine.connect()
    transaction = blocker.begin()
    blocker.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": job["id"]})
    url, headers = f"/api/v1/jobs/{job['id']}/run", keyed(admin, "in-flight")
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(response=app.test_client().post(url, headers=headers)))
    try:
        # When the first run request has reserved its key and is waiting for the job's lock
        worker.start()
        wait_for(lambda: count(app, IdempotencyKey, IdempotencyKey.status == "in_progress"), timeout=10,
                 message="the first request to reserve its key")
        # And a duplicate arrives at the same time
        duplicate = client.post(url, headers=headers)
        # Then the duplicate is told to retry, without running anything
        assert duplicate.status_code == 409
        assert "in progress" in duplicate.json["message"] and "retry" in duplicate.json["message"]
        assert worker.is_alive(), "the first request should still be waiting for the job's lock"
    finally:
        transaction.rollback()
        blocker.close()
        worker.join(timeout=30)
        engine.dispose()
    # When the first one finishes / Then it ran once, and a retry now gets its answer
    assert first["response"].status_code == 202
    retry = client.post(url, headers=headers)
    assert retry.status_code == 202 and retry.json["id"] == first["response"].json["id"]
    assert count(app, Execution) == 1


def test_two_identical_creates_at_the_same_instant_create_one_job(app, admin):
    # Given two clients released at the same instant, each sending the same create with the same key
    for round_number in range(5):
        start, responses = threading.Barrier(2), []

        def send():
            test_client = app.test_client()
            start.wait()
            responses.append(test_client.post("/api/v1/jobs", json={**JOB, "name": f"race-{round_number}"},
                                              headers=keyed(admin, f"race-{round_number}")))

        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        # Then one created the job; the other was told to retry, or got the same job back
        statuses = sorted(r.status_code for r in responses)
        assert statuses in ([201, 201], [201, 409]), [r.json for r in responses]
        if statuses == [201, 201]:
            assert responses[0].json["id"] == responses[1].json["id"]
        assert count(app, Job, Job.name == f"race-{round_number}") == 1


def test_an_expired_key_is_forgotten_and_pruned_by_the_leaders_maintenance(app, client, admin):
    # Given a key used, then past its time, and another still fresh
    client.post("/api/v1/jobs", json=JOB, headers=keyed(admin, "old"))
    client.post("/api/v1/jobs", json={**JOB, "name": "fresh"}, headers=keyed(admin, "fresh"))
    with app.app_context():
        db.session.execute(update(IdempotencyKey).where(IdempotencyKey.key == "old")
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    # When the expired key is sent again / Then it is a new request
    again = client.post("/api/v1/jobs", json=JOB, headers=keyed(admin, "old"))
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert count(app, Job) == 3
    with app.app_context():
        db.session.execute(update(IdempotencyKey).where(IdempotencyKey.key == "old")
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    # When the scheduler leader's hourly maintenance runs / Then only the expired key is removed
    SchedulerService(app, lock=None).maintain()
    with app.app_context():
        assert db.session.scalars(select(IdempotencyKey.key)).all() == ["fresh"]


def test_a_key_is_kept_for_the_configured_hours(app, client, admin):
    # Given JOBPLANE_IDEMPOTENCY_TTL_HOURS = 24 (the default) / When a key is used
    before = utcnow()
    client.post("/api/v1/jobs", json=JOB, headers=keyed(admin, "ttl"))
    # Then it expires 24 hours later
    with app.app_context():
        expires_at = db.session.scalar(select(IdempotencyKey.expires_at))
    assert timedelta(hours=24) <= expires_at - before < timedelta(hours=24, minutes=1)


def test_a_reservation_whose_request_died_is_taken_over(app, client, admin):
    # Given a key reserved long ago by a request that never finished (its process died)
    with app.app_context():
        admin_id = db.session.scalar(text("SELECT id FROM users WHERE email = 'admin'"))
        db.session.add(IdempotencyKey(
            user_id=admin_id, key="orphan", route="POST /api/v1/jobs", status="in_progress", holder="dead",
            fingerprint=idempotency.fingerprint("POST", "/api/v1/jobs", b'{"x": 1}'),
            created_at=utcnow() - idempotency.STALE_RESERVATION - timedelta(seconds=1),
            expires_at=utcnow() + timedelta(hours=1)))
        db.session.commit()
    # When a request with that key arrives / Then it runs, as the first
    response = client.post("/api/v1/jobs", json=JOB, headers=keyed(admin, "orphan"))
    assert response.status_code == 201 and count(app, Job) == 1


def test_the_openapi_document_describes_the_header(client):
    spec = client.get("/api/openapi.json").json
    for path in ("/api/v1/jobs", "/api/v1/jobs/{job_id}/run"):
        parameters = spec["paths"][path]["post"]["parameters"]
        assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in parameters), path


def test_keys_work_on_sqlite_for_standalone(sqlite_api):
    # Given a standalone-style app on a migrated SQLite file
    headers = keyed(sqlite_api.headers, "sqlite-key")
    # When the same create is sent twice with a key
    first = sqlite_api.client.post("/api/v1/jobs", json=JOB, headers=headers)
    retry = sqlite_api.client.post("/api/v1/jobs", json=JOB, headers=headers)
    other = sqlite_api.client.post("/api/v1/jobs", json={**JOB, "name": "other"}, headers=headers)
    # Then one job exists, the retry is the first answer, and another body is refused
    assert first.status_code == 201 and retry.json == first.json and retry.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422
    with sqlite_api.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Job)) == 1
