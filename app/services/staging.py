"""Staging fires ahead of their time: the leader's side.

A fire of a *stageable* job is recorded ``JOBPLANE_STAGE_AHEAD_SECONDS`` before its time — the
``executions`` row with ``scheduled_for`` = the real fire time, ``queued``, and its message sent
at once — so that a worker can prepare the run and start it exactly at that time (see
``staged_runs``).  APScheduler is left as it is: it still fires every job at its time, and for a
staged fire the unique (job, scheduled time) makes that fire a no-op.  Staging is therefore only
an advance on the fire path, never a second one: if the stager is late, stopped or failing, the
fire happens at its time as before, and misfires, DST, start and end dates and one-time jobs stay
APScheduler's and the trigger's business.

Only jobs whose fate at the fire time cannot depend on what runs then are staged: ``allow`` with
no ``max_concurrent``.  ``forbid``, ``replace`` and ``max_concurrent`` look at the runs active
*at the fire time*; those jobs fire at their time, as before (docs/scheduling.md says why).
"""

from __future__ import annotations

from datetime import datetime, timezone
from uuid import UUID

from sqlalchemy import Float, column, delete, select, table

from app.extensions import db
from app.models import Execution, Job
from app.models.base import utcnow
from app.services import schedules

#: APScheduler's job store: its ``next_run_time`` is the next fire time it will hand over.
_STORE = table("apscheduler_jobs", column("id"), column("next_run_time", Float))


def is_stageable(job: Job) -> bool:
    """Whether the job's fires can be recorded before their time: the concurrency policy must not
    depend on which runs are active at the fire time."""
    return job.status == "active" and job.concurrency_policy == "allow" and job.max_concurrent is None


def fires_to_stage(*, now: datetime, until: datetime) -> dict[str, list[datetime]]:
    """The fire times in (``now``, ``until``] that APScheduler will hand over, of stageable jobs,
    not yet recorded.

    Each is checked against the job's current schedule: APScheduler's store can lag an edit by
    a moment, and an edit withdraws the runs staged under the old one (``withdraw_staged``).
    """
    due = {row.id: datetime.fromtimestamp(row.next_run_time, timezone.utc) for row in db.session.execute(
        select(_STORE.c.id, _STORE.c.next_run_time).where(_STORE.c.next_run_time > now.timestamp(),
                                                          _STORE.c.next_run_time <= until.timestamp()))}
    if not due:
        return {}
    # Only the stageable ones are loaded: at a minute boundary hundreds of other jobs are due.
    jobs = {job.id: job for job in db.session.scalars(select(Job).where(
        Job.id.in_([UUID(i) for i in due]), Job.status == "active", Job.concurrency_policy == "allow",
        Job.max_concurrent.is_(None)))}
    if not jobs:
        return {}
    recorded = set(db.session.execute(select(Execution.job_id, Execution.scheduled_for).where(
        Execution.job_id.in_(list(jobs)), Execution.scheduled_for.in_(sorted(set(due.values()))))))
    return {job_id: [fire_time] for job_id, fire_time in due.items()
            if (job := jobs.get(UUID(job_id))) is not None and is_stageable(job)
            and (job.id, fire_time) not in recorded and is_fire_time(job, fire_time)}


def is_fire_time(job: Job, fire_time: datetime) -> bool:
    """Whether ``fire_time`` is a fire time of the job as it is now."""
    if job.schedule is None:
        return job.run_at is not None and job.run_at == fire_time
    trigger = schedules.parse_cron(job.schedule, job.timezone, start_date=job.start_at, end_date=job.end_at)
    found = trigger.get_next_fire_time(None, fire_time)
    return found is not None and found == fire_time


def withdraw_staged(*, job_id: UUID) -> int:
    """Delete the job's staged runs that no worker has claimed yet (their fire time is still ahead).

    Called when a job is paused or edited: its fire times ahead are then the scheduler's to decide
    again, under the new state (an edited job is staged again; a paused one fires nothing).  A staged
    row is an advance on a fire, not the fire itself, so removing it leaves the ledger as if it had
    never been staged; a worker holding it finds it gone and discards what it prepared.

    Returns:
      how many were withdrawn.
    """
    return db.session.execute(
        delete(Execution).where(Execution.job_id == job_id, Execution.status == "queued",
                                Execution.triggered_by == "scheduled", Execution.attempt == 1,
                                Execution.claim_token.is_(None), Execution.scheduled_for > utcnow())
        .execution_options(synchronize_session=False)).rowcount
