"""Executions: creating them when a job fires, claiming, heartbeating and finishing them.

The fire path's invariants live here: one execution per (job, scheduled time), messages sent
only after the commit, and only the claim winner's updates count.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import func, select, update

from app.errors import Forbidden, InvalidInput, NotFound
from app.extensions import db
from app.models import Execution, ExecutionLogChunk, Job
from app.models.base import utcnow
from app.models.execution import EXECUTION_STATUSES
from app.services import access, audit, firing, jobs
from app.services.actors import Actor
from app.services.transactions import after_commit
from app.tasks import dispatch


def trigger_manual_run(*, actor: Actor, job_id: UUID) -> Execution:
    """Queue a run of the job now, on behalf of the actor (spec: ``POST /jobs/{id}/run``).

    Raises:
      NotFound: no job the actor may see.
      Forbidden: the actor may see the job but not run it.
      Conflict: the job forbids overlapping runs and one is active.
    """
    job = jobs.get_job(actor=actor, job_id=job_id)
    if not access.can_run_job(actor, job):
        raise Forbidden("only the job's owner or an admin may run it")
    job = firing.lock_job(job.id)
    now = utcnow()
    firing.admit_manual_run(job, now=now)
    execution = Execution(job_id=job.id, scheduled_for=now, triggered_by="manual", status="queued",
                          fired_by="api", created_at=now, sent_at=now)
    db.session.add(execution)
    db.session.flush()
    audit.record(actor=actor, action="job_executed", resource_type="job", resource_id=job.id,
                 changes={"execution_id": {"old": None, "new": str(execution.id)}})
    _send_after_commit([execution.id])
    return execution


def _send_after_commit(execution_ids: list[UUID]) -> None:
    if execution_ids:
        send = dispatch.run_execution_sender()
        after_commit(lambda: [send(execution_id) for execution_id in execution_ids])


def send_now(execution_ids: list[UUID]) -> None:
    """Send run messages for committed executions (the scheduler's fire path)."""
    send = dispatch.run_execution_sender()
    for execution_id in execution_ids:
        send(execution_id)


def get_execution(*, actor: Actor, execution_id: UUID) -> Execution:
    """The execution, if the actor may see its job (spec: same rule as the job)."""
    execution = db.session.get(Execution, execution_id)
    if execution is None:
        raise NotFound(f"execution {execution_id} not found")
    job = db.session.get(Job, execution.job_id)
    if job is None or not access.can_view_job(actor, job):
        raise NotFound(f"execution {execution_id} not found")
    return execution


def list_job_executions(*, actor: Actor, job_id: UUID, limit: int = 100, offset: int = 0,
                        statuses: list[str] | None = None) -> tuple[list[Execution], int]:
    """The job's executions (its fire ledger), newest fire time first, and how many there are.

    Parameters:
      statuses: only these statuses, e.g. ``["skipped", "missed"]`` for "why did it not run".
    """
    jobs.get_job(actor=actor, job_id=job_id)
    query = select(Execution).where(Execution.job_id == job_id)
    if statuses:
        unknown = set(statuses) - set(EXECUTION_STATUSES)
        if unknown:
            raise InvalidInput({"status": f"unknown status {', '.join(sorted(unknown))}; use "
                                          f"{', '.join(EXECUTION_STATUSES)}"})
        query = query.where(Execution.status.in_(statuses))
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.order_by(Execution.scheduled_for.desc(), Execution.id)
                              .limit(limit).offset(offset)).all()
    return list(rows), total


def read_log(*, execution_id: UUID, offset: int = 0, limit: int | None = None) -> str:
    """The execution's stored output, as text, from character ``offset``."""
    chunks = db.session.scalars(select(ExecutionLogChunk.data)
                                .where(ExecutionLogChunk.execution_id == execution_id)
                                .order_by(ExecutionLogChunk.seq)).all()
    text = "".join(chunks)
    return text[offset:] if limit is None else text[offset:offset + limit]


@dataclass(frozen=True)
class ClaimOutcome:
    """A claim won, lost to another delivery (``claim`` None), or deferred by ``max_concurrent``."""

    claim: "Claim | None"
    deferred: bool = False


@dataclass(frozen=True)
class Claim:
    """What the worker that won an execution needs to run it."""

    execution_id: UUID
    token: str
    job: Job
    scheduled_for: datetime
    attempt: int


def claim_execution(*, execution_id: UUID, worker_id: str) -> ClaimOutcome:
    """Take a queued execution for this worker with one conditional update.

    A job that allows overlapping runs up to ``max_concurrent`` is checked under its row lock,
    so the limit holds across every worker; a run over the limit stays queued (deferred).

    Returns:
      the outcome: ``claim`` is None when another delivery took it or it is no longer queued.
    """
    job_id = db.session.scalar(select(Execution.job_id).where(Execution.id == execution_id))
    if job_id is None:
        return ClaimOutcome(None)
    job = firing.lock_job(job_id)
    if job is not None and job.concurrency_policy == "allow" and job.max_concurrent:
        running = db.session.scalar(select(func.count()).where(
            Execution.job_id == job_id, Execution.status == "running"))
        if running >= job.max_concurrent:
            db.session.execute(update(Execution).where(Execution.id == execution_id, Execution.status == "queued")
                               .values(sent_at=utcnow()).execution_options(synchronize_session=False))
            return ClaimOutcome(None, deferred=True)
    token = secrets.token_hex(16)
    now = utcnow()
    result = db.session.execute(
        update(Execution)
        .where(Execution.id == execution_id, Execution.status == "queued")
        .values(status="running", claim_token=token, worker_id=worker_id, started_at=now, heartbeat_at=now)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return ClaimOutcome(None)
    execution = db.session.get(Execution, execution_id)
    db.session.refresh(execution)
    job = db.session.get(Job, execution.job_id)
    return ClaimOutcome(Claim(execution_id=execution_id, token=token, job=job,
                              scheduled_for=execution.scheduled_for, attempt=execution.attempt))


def append_log(*, claim: Claim, chunks: list[tuple[str, str]], truncated: bool = False) -> bool:
    """Append output chunks ``(stream, text)`` and heartbeat, if the claim still holds.

    Returns:
      False when the claim was revoked (the sweeper declared the run lost): stop the run.
    """
    size = sum(len(text.encode()) for _, text in chunks)
    values = {"heartbeat_at": utcnow(), "log_bytes": Execution.log_bytes + size}
    if truncated:
        values["log_truncated"] = True
    result = db.session.execute(
        update(Execution)
        .where(Execution.id == claim.execution_id, Execution.claim_token == claim.token,
               Execution.status == "running")
        .values(**values)
        .returning(Execution.log_bytes)
        .execution_options(synchronize_session=False))
    new_total = result.scalar()
    if new_total is None:
        return False
    if chunks:
        last_seq = db.session.scalar(select(func.max(ExecutionLogChunk.seq))
                                     .where(ExecutionLogChunk.execution_id == claim.execution_id))
        seq = 0 if last_seq is None else last_seq + 1
        offset = new_total - size
        for stream, text in chunks:
            db.session.add(ExecutionLogChunk(execution_id=claim.execution_id, seq=seq, offset=offset,
                                             stream=stream, data=text))
            seq += 1
            offset += len(text.encode())
    return True


def finish_execution(*, claim: Claim, status: str, exit_code: int | None, error_message: str | None,
                     started_at: datetime | None, completed_at: datetime) -> bool:
    """Record the outcome of a claimed run. Returns False if the claim was revoked meanwhile."""
    values = {"status": status, "exit_code": exit_code, "error_message": error_message,
              "completed_at": completed_at, "heartbeat_at": completed_at}
    if started_at is not None:
        values["started_at"] = started_at
        values["duration_seconds"] = round((completed_at - started_at).total_seconds(), 3)
    result = db.session.execute(
        update(Execution)
        .where(Execution.id == claim.execution_id, Execution.claim_token == claim.token,
               Execution.status == "running")
        .values(**values)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def resend_stale_queued(*, older_than: timedelta, limit: int = 500) -> list[UUID]:
    """Send again the executions still queued after ``older_than`` (a lost message, a crash
    between commit and send). A second delivery is harmless: only one claim can win."""
    cutoff = utcnow() - older_than
    ids = list(db.session.scalars(
        select(Execution.id).where(Execution.status == "queued", Execution.created_at <= cutoff,
                                   Execution.sent_at <= cutoff)
        .order_by(Execution.created_at).limit(limit)))
    if ids:
        db.session.execute(update(Execution).where(Execution.id.in_(ids))
                           .values(sent_at=utcnow(), send_count=Execution.send_count + 1)
                           .execution_options(synchronize_session=False))
        _send_after_commit(ids)
    return ids


def mark_stale_running_lost(*, stale_after: timedelta, limit: int = 500) -> list[UUID]:
    """Declare lost the runs whose worker stopped heartbeating; their claims are revoked."""
    cutoff = utcnow() - stale_after
    ids = list(db.session.scalars(
        select(Execution.id).where(Execution.status == "running", Execution.heartbeat_at < cutoff)
        .limit(limit)))
    if ids:
        now = utcnow()
        db.session.execute(
            update(Execution).where(Execution.id.in_(ids), Execution.status == "running",
                                    Execution.heartbeat_at < cutoff)
            .values(status="lost", completed_at=now, claim_token=None,
                    error_message=f"the worker stopped reporting for over {int(stale_after.total_seconds())} s "
                                  "(killed or out of memory?)")
            .execution_options(synchronize_session=False))
    return ids
