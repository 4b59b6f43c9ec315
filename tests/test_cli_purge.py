"""``jobplane purge`` and ``app.services.retention`` on real PostgreSQL: exactly the finished
executions older than the cut-off go, with their log chunks and notification records; a queued or
running execution never does, however old, nor a first attempt whose retry is still young."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from app.errors import InvalidInput
from app.extensions import db
from app.models import AuditLog, Execution, ExecutionLogChunk, Notification
from app.services import retention, users
from app.services.actors import SYSTEM, Actor
from app.services.jobs import create_job
from tests.test_cli_admin import LOGIN, jobplane  # noqa: F401  (fixture: the CLI in this process)

DAY = timedelta(days=1)


@pytest.fixture
def job_id(app):
    with app.app_context():
        owner = users.create_user(actor=SYSTEM, email="maya@example.com", role="job_creator")
        job = create_job(actor=Actor(user=owner), data={"name": "history", "job_type": "bash", "script": "true"})
        db.session.commit()
        return job.id


def execution(job_id, *, status: str, age: timedelta, chunks: int = 2, notified: bool = False,
              first_attempt_id=None, attempt: int = 1, scheduled_for: datetime | None = None) -> uuid.UUID:
    """An execution that finished ``age`` ago (or, queued/running, was created then), with its log
    chunks and, if ``notified``, a notification record. Call inside an app context."""
    when = datetime.now(timezone.utc) - age  # at the call: a suite can import this file minutes earlier
    final = status not in ("queued", "running")
    ran = status not in ("queued", "skipped", "missed")
    row = Execution(job_id=job_id, status=status, scheduled_for=scheduled_for or when - timedelta(seconds=5),
                    triggered_by="scheduled", attempt=attempt, first_attempt_id=first_attempt_id,
                    created_at=when - timedelta(seconds=5), sent_at=when - timedelta(seconds=5),
                    started_at=when - timedelta(seconds=4) if ran else None,
                    completed_at=when if final and status not in ("skipped", "missed") else None)
    db.session.add(row)
    db.session.flush()
    for seq in range(1, chunks + 1):
        db.session.add(ExecutionLogChunk(execution_id=row.id, seq=seq, offset=(seq - 1) * 5, stream="stdout",
                                         data="line\n"))
    if notified:
        db.session.add(Notification(job_id=job_id, execution_id=row.id, event="job_failed", channel="email",
                                    recipients=["oncall@example.com"], status="sent"))
    db.session.flush()
    return row.id


def remaining(app) -> tuple[set[uuid.UUID], int, int]:
    """The executions left, and how many log chunks and notifications."""
    with app.app_context():
        ids = set(db.session.scalars(select(Execution.id)))
        chunks = db.session.scalar(select(func.count()).select_from(ExecutionLogChunk))
        notifications = db.session.scalar(select(func.count()).select_from(Notification))
        db.session.rollback()
        return ids, chunks, notifications


def chunk_owners(app) -> set[uuid.UUID]:
    with app.app_context():
        owners = set(db.session.scalars(select(ExecutionLogChunk.execution_id)))
        db.session.rollback()
        return owners


def purge_rows(app) -> list[AuditLog]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditLog).where(AuditLog.action == "executions_purged")))
        db.session.expunge_all()
        return rows


@pytest.fixture
def history(app, job_id):
    """Executions either side of the 90-day cut-off, in every state."""
    with app.app_context():
        made = {
            "old_success": execution(job_id, status="success", age=90 * DAY + timedelta(minutes=5), notified=True),
            "old_failed": execution(job_id, status="failed", age=200 * DAY, chunks=3, notified=True),
            "old_missed": execution(job_id, status="missed", age=120 * DAY, chunks=0),
            "young_success": execution(job_id, status="success", age=90 * DAY - timedelta(minutes=5),
                                       notified=True),
            "young_failed": execution(job_id, status="failed", age=3 * DAY),
            "old_running": execution(job_id, status="running", age=150 * DAY, chunks=4),
            "old_queued": execution(job_id, status="queued", age=100 * DAY, chunks=0),
        }
        db.session.commit()
        return made


def test_purge_removes_exactly_the_finished_executions_older_than_the_cut_off(app, history, jobplane):
    # Given executions either side of 90 days ago, two of them still queued or running
    # When the operator purges with the default retention
    result = jobplane("purge")
    # Then exactly the three finished before the cut-off are gone, with their 5 chunks and 2 notifications
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("removed 3 execution(s), 5 log chunk(s) and 2 notification(s) finished before ")
    assert "(90 days ago)" in result.stdout
    kept = {history[name] for name in ("young_success", "young_failed", "old_running", "old_queued")}
    ids, chunks, notifications = remaining(app)
    assert ids == kept
    # And the logs of what stayed are whole; those of what went are gone
    assert chunk_owners(app) == {history["young_success"], history["young_failed"], history["old_running"]}
    assert (chunks, notifications) == (2 + 2 + 4, 1)
    # And the purge is one audit row, as the operator's login, with its counts
    (row,) = purge_rows(app)
    assert (row.email, row.user_agent) == (f"cli:{LOGIN}", "jobplane-cli")
    assert row.changes["executions"] == {"old": 3, "new": 0}
    assert row.changes["log_chunks"] == {"old": 5, "new": 0}
    assert row.changes["notifications"] == {"old": 2, "new": 0}


def test_a_dry_run_counts_the_same_and_changes_nothing(app, history, jobplane):
    before = remaining(app)
    result = jobplane("purge", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("would remove 3 execution(s), 5 log chunk(s) and 2 notification(s)")
    assert remaining(app) == before and purge_rows(app) == []


def test_older_than_days_and_the_setting_move_the_cut_off(app, history, jobplane):
    # Given retention set to 100 days: only the 120- and 200-day-old finished ones are older
    result = jobplane("purge", RETENTION_DAYS="100")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("removed 2 execution(s)") and "(100 days ago)" in result.stdout
    assert history["old_success"] in remaining(app)[0]
    # When --older-than-days 1 is given, it wins over the setting: all but the active ones go
    result = jobplane("purge", "--older-than-days", "1", RETENTION_DAYS="100")
    assert result.stdout.startswith("removed 3 execution(s)")
    assert remaining(app)[0] == {history["old_running"], history["old_queued"]}


def test_small_batches_remove_the_same_rows(app, job_id, jobplane):
    # Given 7 old finished executions and a running one
    with app.app_context():
        old = {execution(job_id, status="success", age=(100 + n) * DAY) for n in range(7)}
        running = execution(job_id, status="running", age=100 * DAY + timedelta(hours=1))
        db.session.commit()
    # When purged 2 at a time (4 transactions)
    result = jobplane("purge", "--batch-size", "2")
    # Then all 7 went and the running one stayed; still one audit row for the whole purge
    assert result.exit_code == 0 and result.stdout.startswith("removed 7 execution(s), 14 log chunk(s)")
    assert remaining(app)[0] == {running} and not old & remaining(app)[0]
    assert len(purge_rows(app)) == 1


def test_a_first_attempt_stays_while_its_retry_is_running_or_young(app, job_id, jobplane):
    # Given three fires with retries: both attempts old; a running retry; a recent retry
    with app.app_context():
        chains = {}
        for name, retry_status, retry_age in (("old", "failed", 95 * DAY), ("running", "running", 95 * DAY),
                                              ("young", "success", 2 * DAY)):
            fire = datetime.now(timezone.utc) - 100 * DAY - timedelta(hours=len(chains))
            first = execution(job_id, status="failed", age=99 * DAY, scheduled_for=fire)
            retry = execution(job_id, status=retry_status, age=retry_age, scheduled_for=fire, attempt=2,
                              first_attempt_id=first)
            chains[name] = (first, retry)
        db.session.commit()
    # When the history is purged (the dry run counts what the purge does)
    dry = jobplane("purge", "--dry-run")
    result = jobplane("purge", "--batch-size", "1")
    # Then the old chain is gone whole; the others keep their first attempt (deleting it would take
    # the retry with it) and their retry
    assert dry.stdout.startswith("would remove 2 execution(s), 4 log chunk(s)")
    assert result.stdout.startswith("removed 2 execution(s), 4 log chunk(s)")
    assert remaining(app)[0] == {*chains["running"], *chains["young"]}


def test_nothing_to_purge_writes_no_audit_row(app, job_id, jobplane):
    result = jobplane("purge")
    assert result.exit_code == 0 and result.stdout.startswith("removed 0 execution(s)")
    assert purge_rows(app) == []


@pytest.mark.parametrize("args, option", [
    (["--older-than-days", "0"], "--older-than-days"),
    (["--older-than-days", "ninety"], "--older-than-days"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "100001"], "--batch-size"),
])
def test_bad_options_are_refused_naming_them(app, history, jobplane, args, option):
    before = remaining(app)
    result = jobplane("purge", *args)
    assert result.exit_code == 2 and option in result.stderr
    assert remaining(app) == before


def test_a_malformed_retention_setting_names_the_variable(app, history, jobplane):
    before = remaining(app)
    for value in ("ninety", "0"):
        result = jobplane("purge", RETENTION_DAYS=value)
        assert result.exit_code == 1 and "JOBPLANE_RETENTION_DAYS" in result.stderr
    assert remaining(app) == before


def test_the_service_refuses_a_naive_cut_off_and_a_bad_batch_size(app):
    with app.app_context():
        with pytest.raises(InvalidInput) as refused:
            retention.purge_executions(older_than=datetime.now(), batch_size=0)
        assert set(refused.value.errors) == {"older_than", "batch_size"}


def test_purge_works_on_a_standalone_sqlite_database(tmp_path, jobplane):
    # Given a standalone installation's SQLite database with an old and a young run, and an old running one
    (tmp_path / "var").mkdir()
    data = {"ENV": "standalone", "DATA_DIR": str(tmp_path / "var"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'jobplane.db'}"}
    assert jobplane("db", "upgrade", **data).exit_code == 0
    from app import create_app

    standalone = create_app(data)
    with standalone.app_context():
        owner = users.create_user(actor=SYSTEM, email="solo@example.com", role="job_creator")
        job = create_job(actor=Actor(user=owner), data={"name": "solo", "job_type": "bash", "script": "true"})
        old = execution(job.id, status="success", age=100 * DAY, notified=True)
        young = execution(job.id, status="failed", age=DAY)
        running = execution(job.id, status="running", age=120 * DAY)
        db.session.commit()
    # When it is purged with the standalone settings
    result = jobplane("purge", "--batch-size", "1", **data)
    # Then the old run went, with its log and notification, and nothing else
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("removed 1 execution(s), 2 log chunk(s) and 1 notification(s)")
    with standalone.app_context():
        assert set(db.session.scalars(select(Execution.id))) == {young, running}
        assert old not in set(db.session.scalars(select(ExecutionLogChunk.execution_id)))
        assert db.session.scalar(select(func.count()).select_from(AuditLog)
                                 .where(AuditLog.action == "executions_purged")) == 1
    standalone.extensions["jobplane_db"].engine.dispose()


def test_a_row_locked_by_another_transaction_is_skipped_not_waited_for(app, settings, history):
    # Given another transaction (a worker finishing with it, say) holding a lock on one old execution
    import subprocess

    from sqlalchemy import create_engine, text

    from tests.helpers import JOBPLANE, process_env

    def purge() -> subprocess.CompletedProcess:
        # the installed command, in its own process: had it waited for the lock, the timeout ends it
        # and fails the test (a wait in this process could not be interrupted)
        return subprocess.run([JOBPLANE, "purge"], env=process_env(settings, {}), capture_output=True, text=True,
                              timeout=60)

    engine = create_engine(app.config["DATABASE_URL"])
    try:
        with engine.connect() as other:
            other.execute(text("SELECT id FROM executions WHERE id = :id FOR UPDATE"), {"id": history["old_failed"]})
            # When the purge runs meanwhile
            result = purge()
            # Then it does not wait for that lock: it removes the other two and leaves the locked one
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith("removed 2 execution(s)")
            other.rollback()
    finally:
        engine.dispose()
    assert history["old_failed"] in remaining(app)[0]
    # And the next purge removes it
    assert purge().stdout.startswith("removed 1 execution(s)")
