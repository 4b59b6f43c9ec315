"""The scheduler leader's hourly maintenance purges what is past JOBPLANE_RETENTION_DAYS, in
batches of JOBPLANE_RETENTION_BATCH_SIZE, on real PostgreSQL: the same rules as ``jobplane purge``
(tests/test_cli_purge.py), run by Jobplane itself."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.config import ConfigError, load_settings
from app.extensions import db
from app.models import AuditLog
from app.scheduler.service import SchedulerService
from tests.test_cli_purge import DAY, execution, job_id, remaining  # noqa: F401  (job_id: a fixture)


def test_the_leader_purges_finished_runs_past_retention_and_nothing_else(app, job_id):  # noqa: F811
    app.config.update(RETENTION_DAYS=30, RETENTION_BATCH_SIZE=2)
    # Given five finished runs 31–35 days old, one 29 days old, and a queued and a running run 40 days old
    with app.app_context():
        old = {execution(job_id, status=status, age=days * DAY, notified=True)
               for days, status in zip(range(31, 36), ("success", "failed", "timed_out", "missed", "lost"))}
        young = execution(job_id, status="success", age=29 * DAY)
        active = {execution(job_id, status="queued", age=40 * DAY), execution(job_id, status="running", age=41 * DAY)}
        db.session.commit()
    # When the leader's maintenance runs (batches of 2, so three of them)
    SchedulerService(app, lock=None).maintain()
    # Then exactly the old finished runs are gone, with their logs and notifications
    ids, chunks, notifications = remaining(app)
    assert ids == {young} | active and not ids & old
    assert (chunks, notifications) == (2 * 3, 0)
    with app.app_context():
        purged = db.session.scalars(select(AuditLog).where(AuditLog.action == "executions_purged")).one()
    assert purged.user_id is None and purged.changes["executions"] == {"old": 5, "new": 0}
    # And a second run finds nothing more to do, and records nothing
    SchedulerService(app, lock=None).maintain()
    assert remaining(app)[0] == {young} | active
    with app.app_context():
        assert len(db.session.scalars(select(AuditLog).where(AuditLog.action == "executions_purged")).all()) == 1


@pytest.mark.parametrize("size", ["0", "100001", "lots"])
def test_a_batch_size_out_of_range_stops_start_up_by_name(size):
    environ = {"JOBPLANE_DATABASE_URL": "postgresql://u:p@db/jobplane", "JOBPLANE_SECRET_KEY": "k",
               "JOBPLANE_RETENTION_BATCH_SIZE": size}
    with pytest.raises(ConfigError, match="JOBPLANE_RETENTION_BATCH_SIZE"):
        load_settings(environ=environ)
