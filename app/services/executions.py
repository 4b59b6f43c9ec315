"""Executions as users see them: manual runs, reading, listing, logs and cancel.

Fires are recorded by ``firing``; the worker's side (claim, heartbeat, outcome) is ``claims``;
the leader's recovery is ``sweeper``.  Messages are always sent after the commit.
"""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import func, select, update

from app.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.extensions import db
from app.models import Execution, ExecutionLogChunk, Job
from app.models.base import utcnow
from app.models.execution import ACTIVE_STATUSES, EXECUTION_STATUSES
from app.services import access, audit, firing, jobs
from app.services.actors import Actor
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
    dispatch.send_runs_after_commit([execution.id])
    return execution


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


def log_chunks(*, actor: Actor, execution_id: UUID, after_seq: int = 0,
               limit: int = 500) -> tuple[Execution, list[ExecutionLogChunk]]:
    """The execution (if the actor may see it) and its stored log pieces after ``after_seq``, in order:
    what a live viewer replays before following the live channel."""
    execution = get_execution(actor=actor, execution_id=execution_id)
    chunks = db.session.scalars(select(ExecutionLogChunk)
                                .where(ExecutionLogChunk.execution_id == execution_id, ExecutionLogChunk.seq > after_seq)
                                .order_by(ExecutionLogChunk.seq).limit(limit)).all()
    return execution, list(chunks)


def read_log(*, execution_id: UUID, offset: int = 0, limit: int | None = None) -> str:
    """The execution's stored output, as text, from character ``offset``."""
    chunks = db.session.scalars(select(ExecutionLogChunk.data)
                                .where(ExecutionLogChunk.execution_id == execution_id)
                                .order_by(ExecutionLogChunk.seq)).all()
    text = "".join(chunks)
    return text[offset:] if limit is None else text[offset:offset + limit]


def cancel_execution(*, actor: Actor, execution_id: UUID) -> Execution:
    """Cancel a queued or running execution (``POST /executions/{id}/cancel``).

    A queued one never starts; a running one loses its claim, and its worker stops the run at
    its next heartbeat (SIGTERM, the grace period, then SIGKILL of its whole process group).

    Raises:
      NotFound: no execution the actor may see.
      Forbidden: the actor may see it but not manage its job.
      Conflict: it has already ended.
    """
    execution = get_execution(actor=actor, execution_id=execution_id)
    job = db.session.get(Job, execution.job_id)
    if not access.can_run_job(actor, job):
        raise Forbidden("only the job's owner or an admin may cancel its runs")
    previous = execution.status
    who = actor.user.email if actor.user else "jobplane"
    result = db.session.execute(
        update(Execution).where(Execution.id == execution_id, Execution.status.in_(ACTIVE_STATUSES))
        .values(status="cancelled", claim_token=None, completed_at=utcnow(), reason=f"cancelled by {who}")
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise Conflict(f"execution {execution_id} has already ended ({previous}); there is nothing to cancel")
    audit.record(actor=actor, action="execution_cancelled", resource_type="execution", resource_id=execution_id,
                 changes={"status": {"old": previous, "new": "cancelled"}})
    db.session.refresh(execution)
    return execution
