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

from sqlalchemy import insert, select, update

from app.errors import Conflict
from app.extensions import db
from app.models import Execution, Job
from app.models.base import new_id, utcnow
from app.models.execution import ACTIVE_STATUSES
from app.observability import metrics
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
    """Decide and record what each due fire time of one job becomes (see ``record_fire_batch``)."""
    return record_fire_batch(fires={job_id: run_times}, fired_by=fired_by, misfire_threshold=misfire_threshold,
                             run_all_cap=run_all_cap, now=now, replay=replay)


def record_fire_batch(*, fires: dict[UUID, list[datetime]], fired_by: str, misfire_threshold: timedelta,
                      run_all_cap: int, now: datetime | None = None, replay: bool = False) -> FireResult:
    """Decide and record what each due fire time of each job becomes, in a handful of statements
    whatever the number of jobs (a burst of 5,000 jobs due at once is one transaction).
    Messages are the caller's, after the commit.

    Parameters:
      fires: due fire times by job; those already in the ledger (a repeated fire) are ignored.
      misfire_threshold: a fire time older than this is late, and the misfire policy applies.
      replay: the times are a paused job's, chosen for replay at resume: run them all.

    Returns:
      the new ledger entries of all the jobs; ``queued`` ones must be sent after the commit.
    """
    result = FireResult()
    now = now or utcnow()
    # In UTC: a wall time that occurs twice at fall-back never compares equal across zones.
    wanted = {UUID(str(job_id)): sorted({t.astimezone(timezone.utc) for t in times}) for job_id, times in fires.items()}
    jobs = [job for job in _lock_jobs(list(wanted)) if job.status == "active"]
    if not jobs:
        return result
    recorded = _recorded(wanted, [job.id for job in jobs])
    active = _active_runs([job.id for job in jobs if job.concurrency_policy != "allow"])
    rows: list[dict] = []
    for job in jobs:
        times = [t for t in wanted[job.id] if (job.id, t) not in recorded]
        if replay:
            to_run, missed = times, []
        else:
            to_run, missed = choose_by_misfire_policy(job, times, now=now, threshold=misfire_threshold,
                                                      run_all_cap=run_all_cap)
        for fire_time in missed:
            rows.append(_row(job, fire_time, "missed", fired_by, now, reason=(
                f"missed: fired {int((now - fire_time).total_seconds())} s late (no scheduler could fire it "
                f"in time); misfire policy {job.misfire_policy}, max lateness {job.max_lateness_seconds} s")))
            result.missed.append(fire_time)
        for fire_time in to_run:
            running = active.setdefault(job.id, [])
            if job.concurrency_policy == "forbid" and running:
                rows.append(_row(job, fire_time, "skipped", fired_by, now, reason=_forbid_reason(running[0])))
                result.skipped.append(fire_time)
                continue
            if job.concurrency_policy == "replace" and running:
                _cancel(running, now=now, reason=f"replaced by the run for {fire_time.isoformat()}", job=job)
                result.cancelled.extend(running)
                running.clear()
            row = _row(job, fire_time, "queued", fired_by, now)
            rows.append(row)
            result.queued.append(row["id"])
            running.append(row["id"])
    if rows:
        db.session.execute(insert(Execution), rows)
    return result


def _lock_jobs(job_ids: list[UUID]) -> list[Job]:
    """The jobs, their rows locked in id order (a fixed order: no deadlock between lockers)."""
    return list(db.session.scalars(select(Job).where(Job.id.in_(job_ids)).order_by(Job.id).with_for_update()))


def _recorded(wanted: dict[UUID, list[datetime]], job_ids: list[UUID]) -> set[tuple[UUID, datetime]]:
    times = sorted({t for job_id in job_ids for t in wanted[job_id]})
    return {(job_id, scheduled_for) for job_id, scheduled_for in db.session.execute(
        select(Execution.job_id, Execution.scheduled_for).where(
            Execution.job_id.in_(job_ids), Execution.scheduled_for.in_(times)))}


def _active_runs(job_ids: list[UUID]) -> dict[UUID, list[UUID]]:
    active: dict[UUID, list[UUID]] = {}
    if job_ids:
        for job_id, execution_id in db.session.execute(select(Execution.job_id, Execution.id).where(
                Execution.job_id.in_(job_ids), Execution.status.in_(ACTIVE_STATUSES))):
            active.setdefault(job_id, []).append(execution_id)
    return active


def _forbid_reason(active_id: UUID) -> str:
    return f"skipped: run {active_id} was still active (concurrency policy forbid)"


def _cancel(execution_ids: list[UUID], *, now: datetime, reason: str, job: Job) -> None:
    result = db.session.execute(
        update(Execution).where(Execution.id.in_(execution_ids), Execution.status.in_(ACTIVE_STATUSES))
        .values(status="cancelled", claim_token=None, completed_at=now, reason=reason)
        .execution_options(synchronize_session=False))
    metrics.executions_cancelled_after_commit(job_type=job.job_type, count=result.rowcount)


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


def admit_manual_run(job: Job, *, now: datetime) -> None:
    """The concurrency policy for a run asked for by hand (the job's row must be locked): refused
    with 409 under ``forbid`` while a run is active; under ``replace`` the active runs are cancelled."""
    if job.concurrency_policy == "allow":
        return
    running = _active_runs([job.id]).get(job.id, [])
    if running and job.concurrency_policy == "forbid":
        raise Conflict(f"{_forbid_reason(running[0])}; wait for it to finish, or set concurrency_policy to "
                       "allow or replace")
    if running:
        _cancel(running, now=now, reason="replaced by a manual run", job=job)


def _row(job: Job, fire_time: datetime, status: str, fired_by: str, now: datetime,
         reason: str | None = None) -> dict:
    final = status != "queued"
    return {"id": new_id(), "job_id": job.id, "scheduled_for": fire_time, "status": status, "attempt": 1,
            "triggered_by": "scheduled", "fired_by": fired_by, "reason": reason, "created_at": now, "sent_at": now,
            "completed_at": now if final else None, "send_count": 1, "log_bytes": 0, "log_truncated": False}


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
