"""Changing and deleting a job through the API: ``PUT`` and ``PATCH`` guarded by ``If-Match`` (or the
body's ``version``), validated by the creation rules, audited field by field with credentials
masked, announced to the scheduler; ``DELETE`` keeps the history and drops what must not outlive
the job.  Real PostgreSQL; rows are read straight from the tables before and after each request.
"""

from __future__ import annotations

import select as selectors
import threading
import time
import uuid
from datetime import timedelta, timezone

import psycopg2
import pytest
from sqlalchemy import create_engine, func, make_url, select, text

from app.extensions import db
from app.models import AuditLog, Execution, Job
from app.models.base import utcnow
from app.services.scheduler_signal import CHANNEL
from tests.helpers import wait_for
from tests.secrets.helpers import table_text

VALID = {"name": "nightly-report", "job_type": "bash", "script": "echo hi", "schedule": "0 2 * * *",
         "timezone": "Europe/Berlin"}
SLACK = "https://hooks.slack.com/services/T000/B000/Slack9RecognizableHook"
SLACK_NEW = "https://hooks.slack.com/services/T000/B000/Slack5OtherRecognizable"
WEBHOOK = "https://receiver.example.com/jobplane/Wbhk7RecognizableToken"
SECRET_VALUE = "s3cr3t-" + "Upd4teRecognizableValue"


# --- steps -----------------------------------------------------------------------------------------

def create(client, headers, **fields) -> dict:
    response = client.post("/api/v1/jobs", json={**VALID, **fields}, headers=headers)
    assert response.status_code == 201, response.json
    return response.json


def url(job_id: str) -> str:
    return f"/api/v1/jobs/{job_id}"


def if_match(version, headers) -> dict:
    return {**headers, "If-Match": f'"{version}"'}


def job_row(app, job_id: str) -> dict:
    """The job's row as stored, every column (ciphertexts included)."""
    with app.app_context():
        row = db.session.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one()
        return dict(row)


def audit_rows(app, job_id: str) -> list[tuple[str, dict]]:
    with app.app_context():
        rows = db.session.scalars(select(AuditLog).where(AuditLog.resource_id == job_id).order_by(AuditLog.id))
        return [(row.action, row.changes) for row in rows]


def add_execution(app, job_id: str, status: str, minutes_ago: int = 0) -> str:
    with app.app_context():
        when = utcnow() - timedelta(minutes=minutes_ago)
        execution = Execution(job_id=uuid.UUID(job_id), scheduled_for=when, triggered_by="manual", status=status,
                              fired_by="test", created_at=when, sent_at=when,
                              started_at=when if status != "queued" else None,
                              claim_token="claimed" if status == "running" else None)
        db.session.add(execution)
        db.session.commit()
        return str(execution.id)


def execution_row(app, execution_id: str) -> dict:
    with app.app_context():
        return dict(db.session.execute(text("SELECT * FROM executions WHERE id = :id"),
                                       {"id": execution_id}).mappings().one())


def secret_count(app, job_id: str) -> int:
    with app.app_context():
        return db.session.scalar(text("SELECT count(*) FROM job_secrets WHERE job_id = :id"), {"id": job_id})


def raw_connection(database_url: str):
    """A psycopg2 connection of the test's own, outside the app (autocommit)."""
    connection = psycopg2.connect(make_url(database_url).set(drivername="postgresql")
                                  .render_as_string(hide_password=False))
    connection.autocommit = True
    return connection


def notifications(connection, *, wait: float) -> list[str]:
    """Payloads of the NOTIFYs received on ``connection`` within ``wait`` seconds."""
    payloads = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        if selectors.select([connection], [], [], left) != ([], [], []):
            connection.poll()
            while connection.notifies:
                payloads.append(connection.notifies.pop(0).payload)
    return payloads


# --- ETag, If-Match, version -----------------------------------------------------------------------

def test_patch_with_the_etag_changes_only_the_given_fields_and_bumps_the_version(app, client, admin):
    # Given a job, read with its ETag
    job = create(client, admin, max_retries=2, env={"REGION": "eu"}, notification_emails=["ops@example.com"])
    read = client.get(url(job["id"]), headers=admin)
    assert read.headers["ETag"] == '"1"' and read.json["version"] == 1
    # When some fields are PATCHed with that ETag as If-Match
    response = client.patch(url(job["id"]), json={"description": "the nightly one", "timeout_minutes": 30},
                            headers={**admin, "If-Match": read.headers["ETag"]})
    # Then those fields, and only those, changed; the version is bumped and is the new ETag
    assert response.status_code == 200, response.json
    assert response.headers["ETag"] == '"2"' and response.json["version"] == 2
    after = client.get(url(job["id"]), headers=admin)
    assert after.headers["ETag"] == '"2"'
    changed = {key for key in read.json if read.json[key] != after.json[key]}
    assert changed == {"description", "timeout_minutes", "version", "updated_at"}
    assert (after.json["description"], after.json["timeout_minutes"]) == ("the nightly one", 30)


def test_put_replaces_the_job_and_fields_left_out_take_their_defaults(app, client, admin):
    # Given a job with many fields away from their defaults
    job = create(client, admin, max_retries=3, timeout_minutes=30, env={"REGION": "eu"}, network_enabled=False,
                 notification_emails=["ops@example.com"], notify_on=["job_succeeded"], concurrent_allowed=True,
                 description="old")
    # When it is replaced by a body that gives only a few fields
    response = client.put(url(job["id"]), json={"name": "replaced", "job_type": "python", "script": "print(1)"},
                          headers=if_match(1, admin))
    # Then what was given is set, and everything left out is back to its default
    assert response.status_code == 200, response.json
    new = response.json
    assert (new["name"], new["job_type"], new["script"]) == ("replaced", "python", "print(1)")
    assert new["schedule"] is None and new["timezone"] == "UTC" and new["description"] is None
    assert (new["max_retries"], new["timeout_minutes"], new["network_enabled"]) == (0, 60, True)
    assert new["env"] == {} and new["notification_emails"] == []
    assert new["notify_on"] == ["job_failed", "job_timeout", "job_lost", "job_recovered"]
    assert (new["concurrent_allowed"], new["concurrency_policy"]) == (False, "forbid")
    assert new["version"] == 2 and response.headers["ETag"] == '"2"'
    # And the owner, team and status are not fields a replacement touches
    assert (new["owner_id"], new["team_id"], new["status"]) == (job["owner_id"], job["team_id"], "active")


def test_put_needs_the_required_fields(app, client, admin):
    job = create(client, admin)
    before = job_row(app, job["id"])
    response = client.put(url(job["id"]), json={"script": "echo 2"}, headers=admin)
    assert response.status_code == 422
    assert {"name", "job_type"} <= set(response.json["errors"]["json"])
    assert job_row(app, job["id"]) == before


def test_the_body_version_works_like_if_match(app, client, admin):
    # Given a job at version 1
    job = create(client, admin)
    # When it is PATCHed with version 1 in the body / Then the change is made
    response = client.patch(url(job["id"]), json={"version": 1, "description": "first"}, headers=admin)
    assert response.status_code == 200, response.json
    assert response.json["version"] == 2 and response.json["description"] == "first"
    # When it is PATCHed and PUT again with that version, now stale / Then both are refused
    assert client.patch(url(job["id"]), json={"version": 1, "description": "second"}, headers=admin).status_code == 409
    assert client.put(url(job["id"]), json={**VALID, "version": 1}, headers=admin).status_code == 409
    # And PUT with the current version replaces
    response = client.put(url(job["id"]), json={**VALID, "version": 2, "name": "third"}, headers=admin)
    assert response.status_code == 200 and response.json["version"] == 3


@pytest.mark.parametrize("header", ["*", None], ids=["If-Match *", "no If-Match"])
def test_if_match_star_or_none_skips_the_check(app, client, admin, header):
    # Given a job changed twice since version 1
    job = create(client, admin)
    for n in range(2):
        assert client.patch(url(job["id"]), json={"description": f"v{n}"}, headers=admin).status_code == 200
    headers = {**admin, "If-Match": header} if header else admin
    # When it is PATCHed with no version to check / Then the change is made whatever the version
    response = client.patch(url(job["id"]), json={"max_retries": 4}, headers=headers)
    assert response.status_code == 200, response.json
    assert response.json["version"] == 4 and response.json["max_retries"] == 4


@pytest.mark.parametrize("method", ["PATCH", "PUT", "DELETE"])
@pytest.mark.parametrize("header", ["v1", '"1", "2"', '""', "one"])
def test_a_malformed_if_match_is_422_naming_it(app, client, admin, method, header):
    job = create(client, admin)
    before = job_row(app, job["id"])
    response = client.open(url(job["id"]), method=method, json=None if method == "DELETE" else {**VALID, "name": "x"},
                           headers={**admin, "If-Match": header})
    assert response.status_code == 422, response.json
    assert "If-Match" in response.json["errors"]["json"]
    assert job_row(app, job["id"]) == before
    assert [action for action, _ in audit_rows(app, job["id"])] == ["job_created"]


# --- stale versions: 409, nothing changed ----------------------------------------------------------

STALE = [
    ("PATCH", {"If-Match": '"1"'}, {"description": "late"}),
    ("PATCH", {}, {"description": "late", "version": 1}),
    ("PUT", {"If-Match": '"1"'}, {**VALID, "name": "late"}),
    ("PUT", {}, {**VALID, "name": "late", "version": 1}),
    ("DELETE", {"If-Match": '"1"'}, None),
]


@pytest.mark.parametrize("method, headers, body", STALE,
                         ids=["PATCH If-Match", "PATCH version", "PUT If-Match", "PUT version", "DELETE If-Match"])
def test_a_stale_version_is_409_with_the_current_one_and_changes_nothing(app, client, admin, method, headers, body):
    # Given a job changed since version 1, with a queued run and a secret
    job = create(client, admin)
    assert client.patch(url(job["id"]), json={"max_retries": 1}, headers=admin).status_code == 200
    queued = add_execution(app, job["id"], "queued")
    assert client.put(f"{url(job['id'])}/secrets/DB_PASSWORD", json={"value": SECRET_VALUE},
                      headers=admin).status_code == 201
    before, audited = job_row(app, job["id"]), audit_rows(app, job["id"])
    # When a client that read version 1 changes it
    response = client.open(url(job["id"]), method=method, json=body, headers={**admin, **headers})
    # Then it is told the job changed, and which version to read again
    assert response.status_code == 409, response.json
    assert response.json["current_version"] == 2
    assert "read it again" in response.json["message"]
    # And nothing changed: the row, the queued run, the secret, the audit log
    assert job_row(app, job["id"]) == before
    assert execution_row(app, queued)["status"] == "queued"
    assert secret_count(app, job["id"]) == 1
    assert audit_rows(app, job["id"]) == audited


def test_two_concurrent_patches_of_the_same_version_one_wins_one_gets_409(app, admin):
    # Given a job, read at version v by two clients at once (several rounds, to meet the race)
    client = app.test_client()
    job = create(client, admin)
    for round_ in range(5):
        version = client.get(url(job["id"]), headers=admin).json["version"]
        barrier = threading.Barrier(2)
        results: dict[str, tuple[int, dict]] = {}

        def patch(description: str) -> None:
            own_client = app.test_client()
            barrier.wait()
            response = own_client.patch(url(job["id"]), json={"description": description},
                                        headers=if_match(version, admin))
            results[description] = (response.status_code, response.json)

        threads = [threading.Thread(target=patch, args=(f"round {round_} by {who}",)) for who in "ab"]
        # When both PATCH with the same If-Match
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        # Then exactly one wins; the other is told the version the winner made
        statuses = sorted(status for status, _ in results.values())
        assert statuses == [200, 409], results
        winner = next(d for d, (status, _) in results.items() if status == 200)
        loser = next(body for status, body in results.values() if status == 409)
        assert loser["current_version"] == version + 1
        row = job_row(app, job["id"])
        assert (row["description"], row["version"]) == (winner, version + 1)
    # And one audit row per winning change
    assert [action for action, _ in audit_rows(app, job["id"])] == ["job_created"] + ["job_updated"] * 5


def _blocked_behind(app, database_url: str, headers: dict, job_id: str, method: str, body: dict | None):
    """Send ``method`` while another transaction holds the job's row, having bumped its version
    after the request read it: the request's own UPDATE finds the version changed."""
    holder = raw_connection(database_url)
    holder.autocommit = False
    results = {}
    try:
        with holder.cursor() as cursor:
            cursor.execute("UPDATE jobs SET version = version + 1, description = 'by another' WHERE id = %s",
                           (job_id,))

        def send():
            results["response"] = app.test_client().open(url(job_id), method=method, json=body,
                                                         headers=if_match(1, headers))

        thread = threading.Thread(target=send)
        thread.start()
        engine = create_engine(database_url)
        try:
            with engine.connect() as watcher:
                wait_for(lambda: watcher.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE jobs%'")).scalar(),
                    timeout=10, message=f"the {method} to wait for the job's row")
        finally:
            engine.dispose()
        holder.commit()
        thread.join(timeout=30)
    finally:
        holder.close()
    return results["response"]


@pytest.mark.parametrize("method, body", [("PATCH", {"max_retries": 3}), ("PUT", {**VALID, "max_retries": 3}),
                                          ("DELETE", None)])
def test_a_change_committed_between_the_read_and_the_write_is_409(app, client, admin, settings, method, body):
    # Given a job at version 1, with a queued run
    job = create(client, admin)
    queued = add_execution(app, job["id"], "queued")
    # When it is changed with If-Match 1 while another transaction, not yet committed, moves it to
    # version 2 (so the check on read passes, and the write finds the version changed)
    response = _blocked_behind(app, settings["DATABASE_URL"], admin, job["id"], method, body)
    # Then the version column catches it: 409 with the version the other transaction made
    assert response.status_code == 409, response.get_data(as_text=True)
    assert response.json["current_version"] == 2
    # And only the other transaction's change is there
    row = job_row(app, job["id"])
    assert (row["version"], row["description"], row["max_retries"], row["status"]) == (2, "by another", 0, "active")
    assert execution_row(app, queued)["status"] == "queued"
    assert [action for action, _ in audit_rows(app, job["id"])] == ["job_created"]


# --- validation ------------------------------------------------------------------------------------

def test_bad_fields_are_all_named_and_nothing_changes(app, client, admin):
    # Given a job
    job = create(client, admin)
    before = job_row(app, job["id"])
    # When a PATCH breaks several rules at once
    response = client.patch(url(job["id"]), json={"timeout_minutes": 0, "max_retries": 9, "schedule": "61 * * * *",
                                                  "notification_emails": ["not-an-email"]}, headers=if_match(1, admin))
    # Then every bad field is named, and nothing changed or was audited
    assert response.status_code == 422, response.json
    assert set(response.json["errors"]["json"]) == {"timeout_minutes", "max_retries", "schedule",
                                                    "notification_emails"}
    assert job_row(app, job["id"]) == before
    assert [action for action, _ in audit_rows(app, job["id"])] == ["job_created"]


def test_a_patch_is_checked_against_the_whole_job(app, client, admin):
    # Given an inline-script job with a schedule
    job = create(client, admin)
    before = job_row(app, job["id"])
    # When a PATCH gives a field that contradicts what the job already has / Then it is refused
    response = client.patch(url(job["id"]), json={"run_at": (utcnow() + timedelta(days=1)).isoformat()},
                            headers=admin)
    assert response.status_code == 422 and "run_at" in response.json["errors"]["json"]
    response = client.patch(url(job["id"]), json={"script_url": "https://git.example.com/r.git",
                                                  "script_path": "a.sh"}, headers=admin)
    assert response.status_code == 422 and "script" in response.json["errors"]["json"]
    assert job_row(app, job["id"]) == before


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
@pytest.mark.parametrize("field", ["owner_id", "status", "id", "team_id", "created_at", "no_such_field"])
def test_unknown_or_read_only_fields_are_rejected(app, client, admin, method, field):
    job = create(client, admin)
    before = job_row(app, job["id"])
    response = client.open(url(job["id"]), method=method,
                           json={**VALID, field: "00000000-0000-0000-0000-000000000000"}, headers=admin)
    assert response.status_code == 422, response.json
    assert field in response.json["errors"]["json"]
    assert job_row(app, job["id"]) == before


def test_concurrent_allowed_and_concurrency_policy_follow_each_other(app, client, admin):
    # Given a job that forbids overlapping runs (the default)
    job = create(client, admin)
    assert (job["concurrent_allowed"], job["concurrency_policy"]) == (False, "forbid")

    def patch(**fields):
        response = client.patch(url(job["id"]), json=fields, headers=admin)
        assert response.status_code == 200, response.json
        return response.json["concurrent_allowed"], response.json["concurrency_policy"]

    # When only one of the pair is PATCHed / Then the other is derived from it again
    assert patch(concurrent_allowed=True) == (True, "allow")
    assert patch(concurrency_policy="replace") == (False, "replace")
    assert patch(concurrency_policy="allow") == (True, "allow")
    assert patch(concurrent_allowed=False) == (False, "forbid")
    # And both together must agree
    response = client.patch(url(job["id"]), json={"concurrent_allowed": True, "concurrency_policy": "forbid"},
                            headers=admin)
    assert response.status_code == 422 and "concurrent_allowed" in response.json["errors"]["json"]


def test_a_one_time_job_past_its_run_at_can_be_changed_but_not_set_to_a_new_past_time(app, client, admin):
    # Given a one-time job whose run_at has passed
    job = create(client, admin, schedule=None, run_at=(utcnow() + timedelta(hours=1)).isoformat())
    with app.app_context():
        db.session.execute(text("UPDATE jobs SET run_at = now() - interval '1 hour' WHERE id = :id"),
                           {"id": job["id"]})
        db.session.commit()
    past = job_row(app, job["id"])["run_at"]
    # When other fields are PATCHed / Then that is allowed, and run_at stays as it was
    response = client.patch(url(job["id"]), json={"description": "still here", "max_retries": 1}, headers=admin)
    assert response.status_code == 200, response.json
    assert job_row(app, job["id"])["run_at"] == past
    # And a PUT giving the same past run_at back is allowed too
    response = client.put(url(job["id"]), json={**VALID, "schedule": None, "run_at": past.isoformat()},
                          headers=admin)
    assert response.status_code == 200, response.json
    # When run_at is set to another past time / Then it is refused, naming run_at
    before = job_row(app, job["id"])
    response = client.patch(url(job["id"]), json={"run_at": (utcnow() - timedelta(minutes=10)).isoformat()},
                            headers=admin)
    assert response.status_code == 422 and "run_at" in response.json["errors"]["json"]
    assert job_row(app, job["id"]) == before
    # And a future run_at is accepted
    future = (utcnow() + timedelta(days=1)).replace(microsecond=0)
    response = client.patch(url(job["id"]), json={"run_at": future.isoformat()}, headers=admin)
    assert response.status_code == 200, response.json
    assert job_row(app, job["id"])["run_at"] == future


# --- the audit trail and notification settings -----------------------------------------------------

def test_an_update_audits_exactly_the_changed_fields_with_webhooks_masked(app, client, admin):
    # Given a job with a Slack webhook
    job = create(client, admin, notification_slack_webhook=SLACK, max_retries=2)
    # When its notification settings are PATCHed, with one field given at its current value
    response = client.patch(url(job["id"]), json={
        "notification_slack_webhook": SLACK_NEW, "notification_webhook_url": WEBHOOK,
        "notify_on": ["job_failed", "job_succeeded"], "notification_emails": ["ops@example.com"],
        "max_retries": 2}, headers=if_match(1, admin))
    assert response.status_code == 200, response.json
    # Then the settings are the new ones (the webhooks shown masked)
    body = response.json
    assert body["notify_on"] == ["job_failed", "job_succeeded"]
    assert body["notification_emails"] == ["ops@example.com"]
    assert body["notification_slack_webhook"] == "https://hooks.slack.com/****able"
    assert body["notification_webhook_url"] == "https://receiver.example.com/****oken"
    with app.app_context():
        stored = db.session.get(Job, uuid.UUID(job["id"]))
        assert (stored.notification_slack_webhook, stored.notification_webhook_url) == (SLACK_NEW, WEBHOOK)
    # And the audit row holds old and new of exactly the fields that changed, webhooks masked
    (action, changes), = audit_rows(app, job["id"])[1:]
    assert action == "job_updated"
    assert changes == {
        "notification_slack_webhook": {"old": "https://hooks.slack.com/****Hook",
                                       "new": "https://hooks.slack.com/****able"},
        "notification_webhook_url": {"old": None, "new": "https://receiver.example.com/****oken"},
        "notify_on": {"old": ["job_failed", "job_timeout", "job_lost", "job_recovered"],
                      "new": ["job_failed", "job_succeeded"]},
        "notification_emails": {"old": [], "new": ["ops@example.com"]},
    }
    # When the webhooks are removed / Then the row says so, still masked
    response = client.patch(url(job["id"]), json={"notification_slack_webhook": None,
                                                  "notification_webhook_url": ""}, headers=admin)
    assert response.status_code == 200, response.json
    assert response.json["notification_slack_webhook"] is None and response.json["notification_webhook_url"] is None
    (_, changes), = audit_rows(app, job["id"])[2:]
    assert changes == {
        "notification_slack_webhook": {"old": "https://hooks.slack.com/****able", "new": None},
        "notification_webhook_url": {"old": "https://receiver.example.com/****oken", "new": None},
    }
    # And no URL's secret part is anywhere in the audit log
    with app.app_context():
        trail = table_text("audit_logs")
    assert "job_updated" in trail
    for secret in ("Slack9RecognizableHook", "Slack5OtherRecognizable", "Wbhk7RecognizableToken"):
        assert secret not in trail


def test_a_put_audits_the_fields_it_reset(app, client, admin):
    job = create(client, admin, max_retries=2, env={"REGION": "eu"})
    response = client.put(url(job["id"]), json=VALID, headers=admin)
    assert response.status_code == 200, response.json
    (action, changes), = audit_rows(app, job["id"])[1:]
    assert action == "job_updated"
    assert changes == {"max_retries": {"old": 2, "new": 0}, "env": {"old": {"REGION": "eu"}, "new": {}}}


def test_a_bad_webhook_in_a_patch_is_refused(app, client, admin):
    job = create(client, admin)
    before = job_row(app, job["id"])
    response = client.patch(url(job["id"]), json={"notification_webhook_url": "http://169.254.169.254/latest",
                                                  "notify_on": ["job_exploded"]}, headers=admin)
    assert response.status_code == 422
    assert set(response.json["errors"]["json"]) == {"notification_webhook_url", "notify_on"}
    assert job_row(app, job["id"]) == before


# --- waking the scheduler --------------------------------------------------------------------------

def test_changing_the_schedule_notifies_the_scheduler_and_a_no_op_sends_nothing(app, client, admin, settings):
    # Given a job, and a connection LISTENing where the scheduler does
    job = create(client, admin)
    listener = raw_connection(settings["DATABASE_URL"])
    try:
        with listener.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        # When its schedule is PATCHed
        response = client.patch(url(job["id"]), json={"schedule": "*/5 * * * *"}, headers=if_match(1, admin))
        assert response.status_code == 200, response.json
        # Then the job's id is announced on the channel
        assert notifications(listener, wait=2) == [job["id"]]
        # When a PATCH gives only values the job already has
        audited = audit_rows(app, job["id"])
        response = client.patch(url(job["id"]), json={"schedule": "*/5 * * * *", "timezone": "Europe/Berlin",
                                                      "max_retries": 0}, headers=if_match(2, admin))
        # Then it succeeds without a new version, an audit row or an announcement
        assert response.status_code == 200, response.json
        assert response.json["version"] == 2 and response.headers["ETag"] == '"2"'
        assert audit_rows(app, job["id"]) == audited
        assert notifications(listener, wait=1) == []
        # And a DELETE is announced too (the scheduler drops its trigger)
        assert client.delete(url(job["id"]), headers=admin).status_code == 200
        assert notifications(listener, wait=2) == [job["id"]]
    finally:
        listener.close()


def test_a_refused_change_announces_nothing(app, client, admin, settings):
    job = create(client, admin)
    listener = raw_connection(settings["DATABASE_URL"])
    try:
        with listener.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        assert client.patch(url(job["id"]), json={"schedule": "61 * * * *"}, headers=admin).status_code == 422
        assert client.patch(url(job["id"]), json={"schedule": "*/5 * * * *"},
                            headers=if_match(7, admin)).status_code == 409
        assert notifications(listener, wait=1) == []
    finally:
        listener.close()


# --- DELETE ----------------------------------------------------------------------------------------

def test_delete_ends_the_job_but_keeps_its_history(app, client, admin):
    # Given a job with a secret, a queued run, a running one and a finished one; and another job
    job = create(client, admin)
    other = create(client, admin, name="other")
    assert client.put(f"{url(job['id'])}/secrets/DB_PASSWORD", json={"value": SECRET_VALUE},
                      headers=admin).status_code == 201
    queued = add_execution(app, job["id"], "queued")
    running = add_execution(app, job["id"], "running", minutes_ago=5)
    finished = add_execution(app, job["id"], "success", minutes_ago=60)
    other_queued = add_execution(app, other["id"], "queued")
    # When it is deleted with its current version
    response = client.delete(url(job["id"]), headers=if_match(1, admin))
    # Then it is deleted, and is no longer found or listed
    assert response.status_code == 200, response.json
    assert response.json["status"] == "deleted"
    assert job_row(app, job["id"])["status"] == "deleted"
    assert client.get(url(job["id"]), headers=admin).status_code == 404
    assert [j["id"] for j in client.get("/api/v1/jobs", headers=admin).json] == [other["id"]]
    # And its queued run is cancelled, saying why; the running one finishes; the history stays
    cancelled = execution_row(app, queued)
    assert cancelled["status"] == "cancelled" and "deleted" in cancelled["reason"]
    assert cancelled["completed_at"] is not None
    assert execution_row(app, running)["status"] == "running"
    assert execution_row(app, finished)["status"] == "success"
    assert execution_row(app, other_queued)["status"] == "queued"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Execution)
                                 .where(Execution.job_id == uuid.UUID(job["id"]))) == 3
    # And its secrets are gone, values included
    assert secret_count(app, job["id"]) == 0
    with app.app_context():
        assert SECRET_VALUE not in table_text("job_secrets")
    # And one audit row says what went with it
    (action, changes), = audit_rows(app, job["id"])[2:]  # created, secret_created, deleted
    assert action == "job_deleted"
    assert changes["status"] == {"old": "active", "new": "deleted"}
    assert changes["queued_runs_cancelled"]["old"] == 1 and changes["secrets_erased"]["old"] == ["DB_PASSWORD"]


def test_a_deleted_job_is_gone_for_every_change(app, client, admin):
    # Given a deleted job
    job = create(client, admin)
    assert client.delete(url(job["id"]), headers=admin).status_code == 200
    audited = audit_rows(app, job["id"])
    before = job_row(app, job["id"])
    # When it is deleted again, changed, replaced or run / Then it is not found, and nothing changes
    assert client.delete(url(job["id"]), headers=admin).status_code == 404
    assert client.patch(url(job["id"]), json={"description": "back"}, headers=admin).status_code == 404
    assert client.put(url(job["id"]), json=VALID, headers=admin).status_code == 404
    assert client.post(f"{url(job['id'])}/run", headers=admin).status_code == 404
    assert job_row(app, job["id"]) == before
    assert audit_rows(app, job["id"]) == audited


def test_a_paused_job_can_be_changed_and_deleted(app, client, admin):
    job = create(client, admin)
    assert client.post(f"{url(job['id'])}/pause", headers=admin).status_code == 200
    response = client.patch(url(job["id"]), json={"max_retries": 1}, headers=admin)
    assert response.status_code == 200 and response.json["status"] == "disabled"
    response = client.delete(url(job["id"]), headers=if_match(response.json["version"], admin))
    assert response.status_code == 200, response.json
    row = job_row(app, job["id"])
    assert (row["status"], row["paused_at"]) == ("deleted", None)


def test_patch_run_at_is_compared_as_an_instant(app, client, admin):
    # Given a one-time job (its run_at given with an offset)
    when = (utcnow() + timedelta(days=2)).replace(microsecond=0)
    job = create(client, admin, schedule=None, run_at=when.astimezone(timezone(timedelta(hours=2))).isoformat())
    # When the same instant is PATCHed in UTC / Then nothing changed
    response = client.patch(url(job["id"]), json={"run_at": when.isoformat()}, headers=admin)
    assert response.status_code == 200 and response.json["version"] == 1
    assert [action for action, _ in audit_rows(app, job["id"])] == ["job_created"]


def test_a_run_of_a_deleted_job_that_fails_is_not_retried(app):
    from datetime import datetime, timezone

    from app.models import Execution, Job
    from app.services import retries

    with app.app_context():
        job = Job(id=__import__("uuid").uuid4(), name="gone", job_type="bash", script="exit 1", status="deleted",
                  owner_id=None, max_retries=3, retry_on=["failed"])
        execution = Execution(job_id=job.id, attempt=1, status="failed", scheduled_for=datetime.now(timezone.utc))
        assert not retries.will_retry(job, execution, "failed")
        job.status = "active"
        assert retries.will_retry(job, execution, "failed")
