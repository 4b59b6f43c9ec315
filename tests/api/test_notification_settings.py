"""A job's notification settings: which events notify (``notify_on``), the webhook URLs and their
SSRF rules, the URLs' encryption at rest (migration 0006 included), the notifications list and
the test notification.  Real PostgreSQL; the migration tests use a scratch database of their own.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import create_engine, func, make_url, select, text

from app import create_app
from app.config import ConfigError
from app.extensions import db
from app.migrate import alembic_config, current_revision, upgrade
from app.models import AuditLog, Execution, Job, Notification
from app.models.base import utcnow
from app.notifications.urls import UnsafeUrl, check_before_call
from tests.secrets.helpers import other_app, table_text

VALID = {"name": "nightly-report", "job_type": "bash", "script": "echo hi", "schedule": "0 2 * * *"}
DEFAULT_EVENTS = ["job_failed", "job_timeout", "job_lost", "job_recovered"]
SLACK = "https://hooks.slack.com/services/T000/B000/Slack9RecognizableHook"
WEBHOOK = "https://receiver.example.com/jobplane/Wbhk7RecognizableToken"
FIELDS = ("notification_slack_webhook", "notification_webhook_url")


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def create(client, headers, **fields):
    return client.post("/api/v1/jobs", json={**VALID, **fields}, headers=headers)


def raw_webhooks(job_id: str) -> tuple[str | None, str | None]:
    """The two webhook columns as stored, read with plain SQL (inside an app context)."""
    return tuple(db.session.execute(text("SELECT notification_slack_webhook, notification_webhook_url "
                                         "FROM jobs WHERE id = :id"), {"id": job_id}).one())


# --- notify_on ------------------------------------------------------------------------------------

def test_notify_on_defaults_to_the_failure_events_and_recovery(client, admin):
    # Given a job created without notify_on / Then it notifies of failures, timeouts, losses, recoveries
    response = create(client, admin)
    assert response.status_code == 201, response.json
    assert response.json["notify_on"] == DEFAULT_EVENTS


def test_notify_on_drops_duplicates_and_keeps_the_order(client, admin):
    response = create(client, admin, notify_on=["job_succeeded", "job_failed", "job_succeeded", "job_failed"])
    assert response.status_code == 201, response.json
    assert response.json["notify_on"] == ["job_succeeded", "job_failed"]
    assert client.get(f"/api/v1/jobs/{response.json['id']}", headers=admin).json["notify_on"] == \
        ["job_succeeded", "job_failed"]


def test_an_unknown_event_is_422_naming_notify_on_and_creates_nothing(app, client, admin):
    # Given a misspelt event
    audit_rows = count(app, AuditLog)
    # When a job is created with it
    response = create(client, admin, notify_on=["job_failed", "job_crashed"])
    # Then notify_on is named, with the events that exist, and nothing is created
    assert response.status_code == 422, response.json
    message = response.json["errors"]["json"]["notify_on"][0]
    assert "job_succeeded" in message and "job_failed" in message
    assert count(app, Job) == 0 and count(app, AuditLog) == audit_rows


# --- webhook URLs: what may be saved ----------------------------------------------------------------

PRIVATE_LITERALS = [
    "https://127.0.0.1/hook", "https://127.8.9.10/hook", "https://10.1.2.3/hook", "https://172.16.0.1/hook",
    "https://192.168.1.20:8443/hook", "https://169.254.169.254/latest/meta-data/", "https://169.254.10.20/hook",
    "https://[::1]/hook", "https://[::ffff:127.0.0.1]/hook", "https://[::ffff:169.254.169.254]/hook",
    "https://[fe80::1]/hook", "https://[fd00::1]/hook", "https://0.0.0.0/hook",
]

#: (why, URL, the setting that would allow it, its value) — each refused by default
REFUSED = [
    ("http", "http://receiver.example.com/hook", "JOBPLANE_WEBHOOK_ALLOW_HTTP", {"WEBHOOK_ALLOW_HTTP": True}),
    *[(f"private {url}", url, "JOBPLANE_WEBHOOK_ALLOW_PRIVATE", {"WEBHOOK_ALLOW_PRIVATE": True})
      for url in PRIVATE_LITERALS],
]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("why, url, setting, allowing", REFUSED, ids=[case[0] for case in REFUSED])
def test_a_webhook_url_is_refused_naming_the_field_and_the_setting_that_allows_it(
        app, client, admin, settings, field, why, url, setting, allowing):
    # Given the default settings
    audit_rows = count(app, AuditLog)
    # When a job is created with this URL
    response = create(client, admin, **{field: url})
    # Then it is refused: the field and the setting that would allow it are named, and nothing is created
    assert response.status_code == 422, response.json
    errors = response.json["errors"]["json"]
    assert list(errors) == [field]
    assert setting in errors[field][0], errors
    assert count(app, Job) == 0 and count(app, AuditLog) == audit_rows
    # And with that setting, the same URL is accepted
    with other_app(settings, **allowing) as allowed:
        response = create(allowed.test_client(), admin, **{field: url})
        assert response.status_code == 201, response.json
    assert count(app, Job) == 1


@pytest.mark.parametrize("field", FIELDS)
def test_a_host_outside_the_allow_list_is_refused(app, client, admin, settings, field):
    with other_app(settings, WEBHOOK_ALLOWED_HOSTS="hooks.slack.com, receiver.example.com") as allowing:
        client = allowing.test_client()
        # Given an allow-list / When a job's URL is on another host / Then it is refused, naming the list
        response = create(client, admin, **{field: "https://attacker.example.net/hook"})
        assert response.status_code == 422, response.json
        message = response.json["errors"]["json"][field][0]
        assert "JOBPLANE_WEBHOOK_ALLOWED_HOSTS" in message and "attacker.example.net" in message
        assert count(app, Job) == 0
        # And a listed host (any case) is accepted
        response = create(client, admin, **{field: "https://Receiver.Example.com/hook"})
        assert response.status_code == 201, response.json


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("url", ["https://jobplane:Pw4RecognizableSecret@hooks.slack.com/services/x",
                                 "https://:Pw4RecognizableSecret@hooks.slack.com/services/x",
                                 "https://jobplane@hooks.slack.com/services/x"])
def test_a_url_with_credentials_is_refused_without_repeating_them(app, client, admin, settings, field, url):
    # Given every setting that loosens the rules
    with other_app(settings, WEBHOOK_ALLOW_HTTP=True, WEBHOOK_ALLOW_PRIVATE=True) as loose:
        # When the URL carries a user name or password
        response = create(loose.test_client(), admin, **{field: url})
    # Then it is refused anyway, the field named, and the password is not echoed
    assert response.status_code == 422, response.json
    assert "user name or password" in response.json["errors"]["json"][field][0]
    assert "Pw4RecognizableSecret" not in response.get_data(as_text=True)
    assert count(app, Job) == 0


@pytest.mark.parametrize("field", FIELDS)
def test_a_url_with_a_port_that_is_not_a_number_is_refused(app, client, admin, field):
    # A port that cannot be parsed would otherwise fail each delivery with an unexpected error
    response = create(client, admin, **{field: "https://hooks.slack.com:webhook/services/x"})
    assert response.status_code == 422, response.json
    assert "port" in response.json["errors"]["json"][field][0]
    assert count(app, Job) == 0


def test_every_bad_field_is_named_at_once(app, client, admin):
    response = create(client, admin, notify_on=["nope"], notification_slack_webhook="http://hooks.slack.com/x",
                      notification_webhook_url="https://10.0.0.1/x")
    assert response.status_code == 422
    assert set(response.json["errors"]["json"]) == {"notify_on", *FIELDS}
    assert count(app, Job) == 0


# --- webhook URLs at rest -------------------------------------------------------------------------

def test_both_webhook_urls_are_stored_encrypted_and_shown_masked(app, client, admin):
    # Given a job with a Slack webhook and a generic webhook
    response = create(client, admin, notification_slack_webhook=SLACK, notification_webhook_url=WEBHOOK)
    assert response.status_code == 201, response.json
    job_id = response.json["id"]
    # Then the API shows them masked: scheme, host and the last 4 characters
    masked = {"notification_slack_webhook": "https://hooks.slack.com/****Hook",
              "notification_webhook_url": "https://receiver.example.com/****oken"}
    for shown in (response.json, client.get(f"/api/v1/jobs/{job_id}", headers=admin).json):
        assert {field: shown[field] for field in FIELDS} == masked
    with app.app_context():
        # And the columns hold ciphertext, not the URLs
        stored = raw_webhooks(job_id)
        assert all(value.startswith("enc1:") for value in stored), stored
        assert SLACK not in "".join(stored) and WEBHOOK not in "".join(stored)
        # And neither URL's secret part is anywhere in the jobs table or the audit log
        for table in ("jobs", "audit_logs"):
            assert "RecognizableHook" not in table_text(table) and "RecognizableToken" not in table_text(table)
        # While the app reads them back in plain
        job = db.session.get(Job, uuid.UUID(job_id))
        assert (job.notification_slack_webhook, job.notification_webhook_url) == (SLACK, WEBHOOK)


def test_a_rotated_secret_key_still_reads_the_urls_with_the_old_key_listed_as_previous(client, admin, settings):
    # Given a job whose URLs were encrypted with the current key
    job_id = create(client, admin, notification_slack_webhook=SLACK, notification_webhook_url=WEBHOOK).json["id"]
    # When an app runs with a new key and the old one in JOBPLANE_SECRET_KEY_PREVIOUS
    with other_app(settings, SECRET_KEY="the-new-key", SECRET_KEY_PREVIOUS="retired-key, test-secret-key"):
        job = db.session.get(Job, uuid.UUID(job_id))
        # Then it reads both URLs
        assert (job.notification_slack_webhook, job.notification_webhook_url) == (SLACK, WEBHOOK)


def test_an_unrelated_secret_key_reads_none_and_logs_an_error_instead_of_crashing(client, admin, settings, caplog):
    # Given a job whose URLs were encrypted with another key
    job_id = create(client, admin, notification_slack_webhook=SLACK, notification_webhook_url=WEBHOOK).json["id"]
    # When an app that knows neither the key nor a previous one reads the job
    with other_app(settings, SECRET_KEY="an-unrelated-key") as unrelated:
        with caplog.at_level(logging.ERROR, logger="app.models.base"):
            job = db.session.get(Job, uuid.UUID(job_id))
            # Then both URLs read as None
            assert (job.notification_slack_webhook, job.notification_webhook_url) == (None, None)
            # And the API still shows the job
            response = unrelated.test_client().get(f"/api/v1/jobs/{job_id}", headers=admin)
            assert response.status_code == 200, response.json
            assert {field: response.json[field] for field in FIELDS} == dict.fromkeys(FIELDS)
        # And the log says what to do
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors and all("JOBPLANE_SECRET_KEY_PREVIOUS" in message for message in errors), errors
        # And the stored ciphertext was left alone
        assert all(value.startswith("enc1:") for value in raw_webhooks(job_id))
    with other_app(settings, SECRET_KEY="test-secret-key"):
        job = db.session.get(Job, uuid.UUID(job_id))
        assert (job.notification_slack_webhook, job.notification_webhook_url) == (SLACK, WEBHOOK)


# --- migration 0006 -------------------------------------------------------------------------------

MIGRATION_KEY = "the-key-the-app-runs-with"


@pytest.fixture
def scratch_database_url(database_url):
    """A database of this test's own, next to the test database, dropped afterwards."""
    url = make_url(database_url)
    scratch = url.set(database=f"{url.database}_mig")
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{scratch.database}"'))
    try:
        yield scratch.render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)'))
        server.dispose()


def _insert_0005_job(url: str, webhook: str | None) -> str:
    """A user and a job as revision 0005 stored them (the Slack webhook in plain); returns the job id."""
    engine = create_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    user_id, job_id = uuid.uuid4(), uuid.uuid4()

    def as_id(value: uuid.UUID) -> str:
        return value.hex if sqlite else str(value)

    now = "2026-01-01 00:00:00"
    try:
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO users (id, email, role, is_active, created_at) "
                "VALUES (:id, :email, 'job_creator', :yes, :now)"),
                {"id": as_id(user_id), "email": f"{user_id.hex[:8]}@example.com", "yes": True, "now": now})
            connection.execute(text(
                "INSERT INTO jobs (id, name, owner_id, job_type, script, timezone, timeout_minutes, max_retries, "
                "retry_delay_minutes, concurrent_allowed, status, notification_emails, "
                "notification_slack_webhook, env, created_at, updated_at, version, misfire_policy, "
                "max_lateness_seconds, concurrency_policy, retry_delay_max_seconds, retry_on, network_enabled, "
                "cpu_limit, memory_limit_mb, max_open_files, max_processes) "
                "VALUES (:id, 'from-0005', :owner, 'bash', 'echo hi', 'UTC', 60, 0, 5, :no, 'active', '[]', "
                ":webhook, '{}', :now, :now, 1, 'run_latest', 3600, 'forbid', 3600, "
                "'[\"failed\", \"timed_out\", \"lost\"]', :yes, 1, 2048, 1024, 512)"),
                {"id": as_id(job_id), "owner": as_id(user_id), "webhook": webhook, "no": False, "yes": True,
                 "now": now})
    finally:
        engine.dispose()
    return str(job_id)


def _raw_slack_webhook(url: str, job_id: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.scalar(text("SELECT notification_slack_webhook FROM jobs WHERE id = :id"),
                                     {"id": _id_as_stored(engine, job_id)})
    finally:
        engine.dispose()


def _id_as_stored(engine, job_id: str) -> str:
    return uuid.UUID(job_id).hex if engine.dialect.name == "sqlite" else job_id


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def _read_through_the_app(settings: dict, url: str, job_id: str, **overrides) -> Job:
    with other_app(settings, DATABASE_URL=url, **overrides):
        job = db.session.get(Job, uuid.UUID(job_id))
        db.session.expunge(job)
        return job


def test_migration_0006_encrypts_the_slack_webhooks_stored_in_plain(scratch_database_url, settings, monkeypatch):
    # Given a database at revision 0005 with a job whose Slack webhook is stored in plain, and one without
    upgrade(scratch_database_url, "0005")
    job_id = _insert_0005_job(scratch_database_url, SLACK)
    quiet_id = _insert_0005_job(scratch_database_url, None)
    # When it is upgraded to the head with the app's secret key in the environment
    monkeypatch.setenv("JOBPLANE_SECRET_KEY", MIGRATION_KEY)
    upgrade(scratch_database_url)
    monkeypatch.delenv("JOBPLANE_SECRET_KEY")
    # Then the stored value is ciphertext
    raw = _raw_slack_webhook(scratch_database_url, job_id)
    assert raw.startswith("enc1:") and SLACK not in raw
    assert _raw_slack_webhook(scratch_database_url, quiet_id) is None
    # And the app, running with that key, reads the same URL, and the default events
    job = _read_through_the_app(settings, scratch_database_url, job_id, SECRET_KEY=MIGRATION_KEY)
    assert job.notification_slack_webhook == SLACK
    assert job.notify_on == DEFAULT_EVENTS and job.notification_webhook_url is None
    # And a downgrade puts the URL back in plain, as revision 0005's code reads it
    monkeypatch.setenv("JOBPLANE_SECRET_KEY", MIGRATION_KEY)
    command.downgrade(alembic_config(scratch_database_url), "0005")
    assert _raw_slack_webhook(scratch_database_url, job_id) == SLACK


@pytest.mark.parametrize("environment", [{}, {"JOBPLANE_ENV": "development"}], ids=["production", "development"])
def test_migration_0006_without_the_secret_key_stops_and_changes_nothing(scratch_database_url, monkeypatch,
                                                                          environment):
    # Given a database at 0005 with a Slack webhook in plain, and no JOBPLANE_SECRET_KEY (in development a
    # key would be made up for the run, and the URL encrypted with a key nobody has)
    upgrade(scratch_database_url, "0005")
    job_id = _insert_0005_job(scratch_database_url, SLACK)
    monkeypatch.delenv("JOBPLANE_SECRET_KEY", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    # When it is upgraded / Then the upgrade stops, naming the setting
    with pytest.raises(ConfigError, match="JOBPLANE_SECRET_KEY"):
        upgrade(scratch_database_url)
    # And the database is as it was
    assert _revision(scratch_database_url) == "0005"
    assert _raw_slack_webhook(scratch_database_url, job_id) == SLACK


def test_migration_0006_in_standalone_mode_uses_the_key_kept_in_the_data_directory(tmp_path, settings, monkeypatch):
    # Given a standalone installation (SQLite, no JOBPLANE_SECRET_KEY: the key is kept in the data
    # directory) at revision 0005, with a Slack webhook in plain
    data_dir = tmp_path / "data"
    url = f"sqlite:///{tmp_path / 'jobplane.db'}"
    monkeypatch.delenv("JOBPLANE_SECRET_KEY", raising=False)
    monkeypatch.delenv("JOBPLANE_ENV", raising=False)
    monkeypatch.setenv("JOBPLANE_DATA_DIR", str(data_dir))
    standalone = create_app({"ENV": "standalone", "DATABASE_URL": url})
    upgrade(url, "0005")
    job_id = _insert_0005_job(url, SLACK)
    # When `jobplane standalone` upgrades it on start (its settings come from itself, not the environment)
    upgrade(url)
    # Then the URL is encrypted with the data directory's key, which the standalone app reads it with
    raw = _raw_slack_webhook(url, job_id)
    assert raw.startswith("enc1:") and SLACK not in raw
    with standalone.app_context():
        assert db.session.get(Job, uuid.UUID(job_id)).notification_slack_webhook == SLACK
    standalone.extensions["jobplane_db"].engine.dispose()


# --- the notifications of a job -------------------------------------------------------------------

def test_the_notifications_list_is_newest_first_with_how_each_delivery_went(app, client, admin):
    # Given a job with three notifications of different ages and outcomes, and another job's
    job_id = create(client, admin, notification_emails=["ops@example.com"],
                    notification_slack_webhook=SLACK).json["id"]
    other_id = create(client, admin, name="other", notification_emails=["ops@example.com"]).json["id"]
    now = utcnow()
    with app.app_context():
        def row(job, minutes_ago, **fields):
            fields = {"channel": "email", "recipients": ["ops@example.com"], **fields}
            notification = Notification(job_id=uuid.UUID(job), event="test", next_attempt_at=now,
                                        created_at=now - timedelta(minutes=minutes_ago), **fields)
            db.session.add(notification)
            db.session.flush()
            return str(notification.id)

        oldest = row(job_id, 30, status="sent", attempts=1, sent_at=now - timedelta(minutes=29))
        newest = row(job_id, 1, status="pending", attempts=0)
        middle = row(job_id, 10, channel="slack", recipients=[], status="failed", attempts=3,
                     last_error="webhook answered 500")
        row(other_id, 0, status="sent", attempts=1)
        db.session.commit()
    # When the job's notifications are listed
    response = client.get(f"/api/v1/jobs/{job_id}/notifications", headers=admin)
    # Then they are the job's, newest first, each with its status, attempts and last error
    assert response.status_code == 200, response.json
    assert [n["id"] for n in response.json] == [newest, middle, oldest]
    assert [(n["channel"], n["status"], n["attempts"], n["last_error"]) for n in response.json] == [
        ("email", "pending", 0, None), ("slack", "failed", 3, "webhook answered 500"), ("email", "sent", 1, None)]
    assert response.json[2]["sent_at"] is not None and response.json[0]["sent_at"] is None


def test_a_test_notification_is_one_row_per_configured_channel_and_no_execution(app, client, admin):
    # Given a job with email recipients, a Slack webhook and a generic webhook
    job_id = create(client, admin, notification_emails=["ops@example.com", "dev@example.com"],
                    notification_slack_webhook=SLACK, notification_webhook_url=WEBHOOK).json["id"]
    last_audit = count(app, AuditLog)
    # When a test notification is asked for
    response = client.post(f"/api/v1/jobs/{job_id}/notifications/test", headers=admin)
    # Then one pending "test" notification is made per channel, about no execution
    assert response.status_code == 202, response.json
    made = sorted((n["channel"], n["event"], n["status"], n["execution_id"]) for n in response.json)
    assert made == [("email", "test", "pending", None), ("slack", "test", "pending", None),
                    ("webhook", "test", "pending", None)]
    with app.app_context():
        rows = db.session.scalars(select(Notification).where(Notification.job_id == uuid.UUID(job_id))).all()
        assert sorted(r.channel for r in rows) == ["email", "slack", "webhook"]
        assert next(r for r in rows if r.channel == "email").recipients == ["ops@example.com", "dev@example.com"]
        assert db.session.scalar(select(func.count()).select_from(Execution)) == 0
        # And one audit row says which channels were tested
        audit = db.session.scalars(select(AuditLog).order_by(AuditLog.id.desc())).first()
        assert (audit.action, audit.resource_id) == ("notification_tested", job_id)
        assert audit.changes["channels"]["new"] == ["email", "slack", "webhook"]
    assert count(app, AuditLog) == last_audit + 1
    # And the list shows them
    listed = client.get(f"/api/v1/jobs/{job_id}/notifications", headers=admin).json
    assert sorted(n["id"] for n in listed) == sorted(n["id"] for n in response.json)


def test_a_test_notification_uses_only_the_channels_configured(app, client, admin):
    job_id = create(client, admin, notification_slack_webhook=SLACK).json["id"]
    response = client.post(f"/api/v1/jobs/{job_id}/notifications/test", headers=admin)
    assert response.status_code == 202, response.json
    assert [n["channel"] for n in response.json] == ["slack"]


def test_a_test_notification_for_a_job_without_a_channel_is_422_and_makes_nothing(app, client, admin):
    job_id = create(client, admin).json["id"]
    audit_rows = count(app, AuditLog)
    response = client.post(f"/api/v1/jobs/{job_id}/notifications/test", headers=admin)
    assert response.status_code == 422, response.json
    assert "notification_emails" in response.json["errors"]["json"]
    assert count(app, Notification) == 0 and count(app, AuditLog) == audit_rows


# --- the check before each call -------------------------------------------------------------------

def test_a_host_name_that_resolves_to_loopback_is_refused_before_the_call(app):
    # Given a URL whose host is a name (accepted when saved: it is not resolved then)
    url = "https://localhost/hook"
    # When it is checked just before a call / Then the address it resolves to is refused
    with pytest.raises(UnsafeUrl, match="JOBPLANE_WEBHOOK_ALLOW_PRIVATE") as refused:
        check_before_call(url, app.config)
    assert "127.0.0.1" in str(refused.value) or "::1" in str(refused.value)
    # And with private addresses allowed, it passes
    check_before_call(url, {**app.config, "WEBHOOK_ALLOW_PRIVATE": True})
