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

from datetime import datetime, timedelta, timezone
from uuid import UUID

from sqlalchemy import Float, cast, column, delete, func, select, table
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from app.extensions import db
from app.models import Execution, Job
from app.models.base import utcnow
from app.services import schedules

#: How long before its fire time a staged run's message reaches a worker (it waits meanwhile in
#: Redis's delay queue, which holds no worker thread).  A worker holds the run from then until it
#: ends: it prepares the run (a transaction, the workdir, the sandbox and the launcher: about 30 ms
#: idle, 100-200 ms on a machine saturated by a burst) and claims it ``CLAIM_AHEAD_SECONDS`` (0.2 s)
#: before its time.  Delivered as soon as recorded (up to 0.6 s ahead), ten per-second jobs kept
#: 5-6 threads waiting on average; 0.35 s ahead, about 4.
DELIVER_AHEAD = timedelta(seconds=0.35)

#: APScheduler's job store: its ``next_run_time`` is the next fire time it will hand over.
_STORE = table("apscheduler_jobs", column("id"), column("next_run_time", Float))


def is_stageable(job: Job) -> bool:
    """Whether the job's fires can be recorded before their time: the concurrency policy must not
    depend on which runs are active at the fire time."""
    return job.status == "active" and job.concurrency_policy == "allow" and job.max_concurrent is None


def fires_to_stage(*, now: datetime, until: datetime, misfire_threshold: timedelta) -> dict[str, list[datetime]]:
    """The fire times in (``now``, ``until``] of stageable jobs, not yet recorded.

    A job's next fire time is the one APScheduler has stored, which it will hand over.  While
    APScheduler is still busy with a fire time that has come (a wake-up of hundreds of jobs at
    the top of a minute takes it a second or more on a loaded machine), it has not stored the
    next one yet: for such a job the next fire time after ``now`` is taken from its schedule, so
    that a job firing every second is staged through a burst as at any other time (APScheduler's
    own fire of it, when it gets there, finds it recorded).  Not for a job whose stored fire time
    is older than ``misfire_threshold``: that one is a misfire (no scheduler ran), and its misfire
    policy must see its fire times before any later one is recorded.

    Each is checked against the job's current schedule: APScheduler's store can lag an edit by
    a moment, and an edit withdraws the runs staged under the old one (``withdraw_staged``).
    """
    # Only the stageable ones, picked by PostgreSQL: at a minute boundary hundreds of other jobs are
    # due, and while APScheduler works through them this runs every 0.15 s beside it.
    rows = db.session.execute(
        select(Job, _STORE.c.next_run_time).join(_STORE, _store_id_is_job_id())
        .where(_STORE.c.next_run_time <= until.timestamp(),
               _STORE.c.next_run_time > (now - misfire_threshold).timestamp(),
               Job.status == "active", Job.concurrency_policy == "allow", Job.max_concurrent.is_(None))).all()
    if not rows:
        return {}
    jobs = {job.id: job for job, _ in rows}
    stored = {job.id: datetime.fromtimestamp(next_run_time, timezone.utc) for job, next_run_time in rows}
    due = {}
    for job_id, job in jobs.items():
        fire_time = stored[job_id]
        if fire_time <= now:  # APScheduler is behind: its next fire time is not stored yet
            fire_time = next_fire_time(job, after=now)
        if fire_time is not None and now < fire_time <= until and is_stageable(job):
            due[job_id] = fire_time
    if not due:
        return {}
    recorded = set(db.session.execute(select(Execution.job_id, Execution.scheduled_for).where(
        Execution.job_id.in_(list(due)), Execution.scheduled_for.in_(sorted(set(due.values()))))))
    return {str(job_id): [fire_time] for job_id, fire_time in due.items()
            if (job_id, fire_time) not in recorded and is_fire_time(jobs[job_id], fire_time)}


def _store_id_is_job_id():
    """APScheduler's job id (the job's id as text) matched to ``jobs.id``: PostgreSQL keeps a UUID,
    SQLite (standalone) its 32 hex digits."""
    if db.engine.dialect.name == "postgresql":
        return Job.id == cast(_STORE.c.id, PG_UUID(as_uuid=True))
    return Job.id == func.replace(_STORE.c.id, "-", "")


def next_fire_time(job: Job, *, after: datetime) -> datetime | None:
    """The job's first fire time strictly after ``after`` by its current schedule (None: none left)."""
    if job.schedule is None:
        return job.run_at if job.run_at is not None and job.run_at > after else None
    trigger = schedules.parse_cron(job.schedule, job.timezone, start_date=job.start_at, end_date=job.end_at)
    found = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    return found.astimezone(timezone.utc) if found is not None else None


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
