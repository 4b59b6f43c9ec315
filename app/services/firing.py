"""Turning due fire times into the fire ledger: runs, skips and misses, by the job's policies.

Every due fire time of a job ends as exactly one ``executions`` row: ``queued`` (it will run),
``skipped`` (the concurrency policy refused it) or ``missed`` (it passed unfired; the misfire
policy said not to run it).  The job's row is locked while its fires are decided, so the
decisions of the scheduler and of manual runs never interleave, whichever replica or API
process makes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from uuid import UUID

from sqlalchemy import select, update

from app.errors import Conflict
from app.extensions import db
from app.models import Execution, Job
from app.models.base import new_id, utcnow
from app.models.execution import ACTIVE_STATUSES
from app.services import schedules


@dataclass
class FireResult:
    """What a batch of fire times became."""

    queued: list[UUID] = field(default_factory=list)
    skipped: list[datetime] = field(default_factory=list)
    missed: list[datetime] = field(default_factory=list)
    #: active runs cancelled by the ``replace`` policy
    cancelled: list[UUID] = field(default_factory=list)


def lock_job(job_id: UUID) -> Job | None:
    """The job, its row locked until the transaction ends (PostgreSQL; SQLite has one writer)."""
    return db.session.scalar(select(Job).where(Job.id == job_id).with_for_update())


def record_fires(*, job_id: UUID, run_times: list[datetime], fired_by: str, misfire_threshold: timedelta,
                 run_all_cap: int, now: datetime | None = None, replay: bool = False) -> FireResult:
    """Decide and record what each due fire time of a job becomes. Messages are the caller's.

    Parameters:
      run_times: due fire times; those already in the ledger (a repeated fire) are ignored.
      misfire_threshold: a fire time older than this is late, and the misfire policy applies.
      replay: the times are a paused job's, chosen for replay at resume: run them all.

    Returns:
      the new ledger entries; ``queued`` ones must be sent after the commit.
    """
    result = FireResult()
    job = lock_job(job_id)
    if job is None or job.status != "active":
        return result
    now = now or utcnow()
    # In UTC: a wall time that occurs twice at fall-back never compares equal across zones.
    run_times = sorted({t.astimezone(timezone.utc) for t in run_times})
    recorded = set(db.session.scalars(select(Execution.scheduled_for).where(
        Execution.job_id == job_id, Execution.scheduled_for.in_(run_times))))
    times = [t for t in run_times if t not in recorded]
    if replay:
        to_run, missed = times, []
    else:
        to_run, missed = choose_by_misfire_policy(job, times, now=now, threshold=misfire_threshold,
                                                  run_all_cap=run_all_cap)
    for fire_time in missed:
        _add(job, fire_time, "missed", fired_by, now,
             reason=f"missed: fired {int((now - fire_time).total_seconds())} s late (no scheduler could fire "
                    f"it in time); misfire policy {job.misfire_policy}, max lateness "
                    f"{job.max_lateness_seconds} s")
        result.missed.append(fire_time)
    for fire_time in to_run:
        decision, reason = admit(job, now=now, reason_for_cancel=f"replaced by the run for {fire_time.isoformat()}",
                                 result=result)
        if decision == "skip":
            _add(job, fire_time, "skipped", fired_by, now, reason=reason)
            result.skipped.append(fire_time)
        else:
            result.queued.append(_add(job, fire_time, "queued", fired_by, now))
    db.session.flush()
    return result


def choose_by_misfire_policy(job: Job, times: list[datetime], *, now: datetime, threshold: timedelta,
                             run_all_cap: int) -> tuple[list[datetime], list[datetime]]:
    """Split fire times into (to run, missed) by the job's misfire policy.

    On-time fire times always run.  Late ones: ``skip`` misses them all; ``run_latest`` runs the
    latest (unless an on-time fire already runs) and misses the rest; ``run_all`` runs the most
    recent ``run_all_cap``.  A fire time later than the job's max lateness is always missed.
    """
    on_time = [t for t in times if now - t <= threshold]
    late = [t for t in times if now - t > threshold]
    eligible = [t for t in late if now - t <= timedelta(seconds=job.max_lateness_seconds)]
    if job.misfire_policy == "run_all":
        replayed = eligible[-run_all_cap:] if run_all_cap > 0 else []
    elif job.misfire_policy == "run_latest" and not on_time:
        replayed = eligible[-1:]
    else:
        replayed = []
    return replayed + on_time, [t for t in late if t not in replayed]


def admit(job: Job, *, now: datetime, reason_for_cancel: str, result: FireResult | None = None) -> tuple[str, str | None]:
    """Apply the job's concurrency policy to a new run; the job's row must be locked.

    Returns:
      ("run", None), or ("skip", why) under ``forbid`` while a run is active.  Under ``replace``
      the active runs are cancelled first (a running one is stopped at its next heartbeat).
    """
    if job.concurrency_policy == "allow":
        return "run", None
    active = list(db.session.scalars(select(Execution.id).where(
        Execution.job_id == job.id, Execution.status.in_(ACTIVE_STATUSES))))
    if not active:
        return "run", None
    if job.concurrency_policy == "forbid":
        return "skip", f"skipped: run {active[0]} was still active (concurrency policy forbid)"
    db.session.execute(
        update(Execution).where(Execution.id.in_(active), Execution.status.in_(ACTIVE_STATUSES))
        .values(status="cancelled", claim_token=None, completed_at=now, reason=reason_for_cancel)
        .execution_options(synchronize_session=False))
    if result is not None:
        result.cancelled.extend(active)
    return "run", None


def admit_manual_run(job: Job, *, now: datetime) -> None:
    """Concurrency for a run asked for by hand: refused with 409 under ``forbid``."""
    decision, reason = admit(job, now=now, reason_for_cancel="replaced by a manual run")
    if decision == "skip":
        raise Conflict(f"{reason}; wait for it to finish, or set concurrency_policy to allow or replace")


def _add(job: Job, fire_time: datetime, status: str, fired_by: str, now: datetime,
         reason: str | None = None) -> UUID:
    execution_id = new_id()
    final = status != "queued"
    db.session.add(Execution(id=execution_id, job_id=job.id, scheduled_for=fire_time, status=status,
                             triggered_by="scheduled", fired_by=fired_by, reason=reason, created_at=now,
                             sent_at=now, completed_at=now if final else None))
    return execution_id


def fire_times_between(job: Job, start: datetime, end: datetime, *, limit: int) -> list[datetime]:
    """The job's fire times in (start, end], at most the ``limit`` latest."""
    trigger = schedules.parse_cron(job.schedule, job.timezone, start_date=job.start_at, end_date=job.end_at)
    times: list[datetime] = []
    previous, cursor = None, start
    while True:
        fire = trigger.get_next_fire_time(previous, cursor)
        if fire is None or fire > end:
            break
        if fire > start:
            times.append(fire)
            times = times[-limit:]
        previous, cursor = fire, fire + timedelta(microseconds=1)
    return times
