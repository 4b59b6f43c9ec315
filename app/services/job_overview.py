"""What a list of jobs shows beside each job: when it fires next and how its last run ended."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import func, select

from app.errors import InvalidInput
from app.extensions import db
from app.models import Execution, Job
from app.models.execution import EXECUTION_STATUSES
from app.services import schedules

#: every status but the ledger's records of fire times that never ran
_RUN_STATUSES = tuple(set(EXECUTION_STATUSES) - {"skipped", "missed"})


def next_fire_time(job: Job, *, now: datetime | None = None) -> datetime | None:
    """When the scheduler fires ``job`` next (aware UTC), or None: paused, deleted, ended, or a
    one-time job whose time has passed."""
    now = now or datetime.now(UTC)
    if job.status != "active":
        return None
    if job.schedule is None:
        run_at = job.run_at if job.run_at is None or job.run_at.tzinfo else job.run_at.replace(tzinfo=UTC)
        return run_at if run_at is not None and run_at > now else None
    try:
        trigger = schedules.parse_cron(job.schedule, job.timezone, start_date=job.start_at, end_date=job.end_at)
    except InvalidInput:  # a stored schedule the current rules refuse: shown as "no next run"
        return None
    fires = schedules.fire_times(trigger, count=1, after=now)
    return fires[0].astimezone(UTC) if fires else None


def last_runs(job_ids: list[UUID]) -> dict[UUID, Execution]:
    """Each job's latest run (by fire time; skipped and missed fire times are not runs), in one query."""
    if not job_ids:
        return {}
    ranked = (select(Execution.id, func.row_number().over(
        partition_by=Execution.job_id, order_by=(Execution.scheduled_for.desc(), Execution.attempt.desc())).label("n"))
        .where(Execution.job_id.in_(job_ids), Execution.status.in_(_RUN_STATUSES)).subquery())
    rows = db.session.scalars(select(Execution).join(ranked, ranked.c.id == Execution.id).where(ranked.c.n == 1))
    return {execution.job_id: execution for execution in rows}
