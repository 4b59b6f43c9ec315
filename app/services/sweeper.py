"""The sweeper, run by the scheduler leader: no execution stays queued or running forever.

Queued executions whose message was lost (Redis restarted, a crash between commit and send) are
sent again, and only those: one still waiting in a long queue is not.  Running executions whose
worker stopped heartbeating are declared lost, their claim revoked, and retried by the job's
policy.  A run that kills its worker every time ends ``failed`` after its attempts instead of
looping.

A Kubernetes run outlives its worker: its pod keeps running.  So a stale Kubernetes run is not
lost but handed over: queued again (same execution, a new claim) and re-sent; the worker that
claims it finds its Job by the name derived from the execution id and follows the pod from where
the dead worker's log stopped.  After ``reattach_limit`` hand-overs it is declared lost like any run.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from sqlalchemy import select, update

from app.extensions import db
from app.models import Execution, Job
from app.models.base import utcnow
from app.observability import metrics
from app.services import notifications, retries
from app.tasks import dispatch


def resend_stale_queued(*, older_than: timedelta, limit: int = 500) -> list[UUID]:
    """Send the executions never sent (queued by the CLI beside a standalone process, whose queue
    lives in that process), and again those still queued after ``older_than`` whose message is
    gone (Redis restarted, a crash between commit and send).

    One whose message Redis still holds (waiting in a long queue, delayed, or fetched by a live
    worker) is left alone: sending it again would only cost a claim attempt in a busy queue.
    When the broker cannot tell (standalone mode), every one is sent again.  A second delivery
    is harmless anyway: only one claim can win.
    """
    cutoff = utcnow() - older_than
    never_sent = list(db.session.scalars(
        select(Execution.id).where(Execution.status == "queued", Execution.send_count == 0)
        .order_by(Execution.created_at).limit(limit)))
    stale = list(db.session.scalars(
        select(Execution.id).where(Execution.status == "queued", Execution.send_count > 0,
                                   Execution.created_at <= cutoff, Execution.sent_at <= cutoff)
        .order_by(Execution.created_at).limit(limit * _CANDIDATES_PER_RESEND)))
    lost: list[UUID] = []
    if stale:
        # A worker silent for as long as the threshold is taken for dead, with what it fetched.
        in_queue = dispatch.executions_in_queue(live_within_seconds=older_than.total_seconds())
        lost = [execution_id for execution_id in stale if in_queue is None or str(execution_id) not in in_queue]
    to_send = (never_sent + lost)[:limit]
    if not to_send:
        return []
    # Still queued now, after the look at Redis: one claimed meanwhile has its message acked.
    ids = list(db.session.scalars(
        update(Execution).where(Execution.id.in_(to_send), Execution.status == "queued")
        .values(sent_at=utcnow(), send_count=Execution.send_count + 1)
        .returning(Execution.id).execution_options(synchronize_session=False)))
    dispatch.send_runs_after_commit(ids)
    return ids


#: How many stale candidates are checked against the queue for each one that may be re-sent:
#: a backlog longer than the threshold is mostly messages still waiting.
_CANDIDATES_PER_RESEND = 20


def hand_over_stale_kubernetes_runs(*, stale_after: timedelta, reattach_limit: int) -> list[UUID]:
    """Queue again the Kubernetes runs whose worker stopped heartbeating (their pods run on), so
    that another worker re-attaches to them; their claims are revoked.  Call before
    ``mark_stale_running_lost``, which declares lost what is left."""
    cutoff = utcnow() - stale_after
    ids = list(db.session.scalars(
        update(Execution)
        .where(Execution.status == "running", Execution.heartbeat_at < cutoff, Execution.executor == "kubernetes",
               Execution.reattach_count < reattach_limit)
        .values(status="queued", claim_token=None, worker_id=None, sent_at=utcnow(),
                send_count=Execution.send_count + 1, reattach_count=Execution.reattach_count + 1)
        .returning(Execution.id)
        .execution_options(synchronize_session=False)).all())
    if ids:
        dispatch.send_runs_after_commit(ids)
    return ids


def mark_stale_running_lost(*, stale_after: timedelta, limit: int = 500) -> list[UUID]:
    """Declare lost the runs whose worker stopped heartbeating; their claims are revoked."""
    cutoff = utcnow() - stale_after
    ids = list(db.session.scalars(
        select(Execution.id).where(Execution.status == "running", Execution.heartbeat_at < cutoff)
        .limit(limit)))
    lost = []
    now = utcnow()
    for execution_id in ids:
        result = db.session.execute(
            update(Execution).where(Execution.id == execution_id, Execution.status == "running",
                                    Execution.heartbeat_at < cutoff)
            .values(status="lost", completed_at=now, claim_token=None,
                    error_message=f"the worker stopped reporting for over {int(stale_after.total_seconds())} s "
                                  "(killed, or out of memory?)")
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            continue  # it finished meanwhile
        lost.append(execution_id)
        execution = db.session.get(Execution, execution_id)
        db.session.refresh(execution)
        job = db.session.get(Job, execution.job_id)
        metrics.execution_finished_after_commit(job_type=job.job_type, outcome="lost",
                                                started_at=execution.started_at, completed_at=now)
        if retries.schedule_retry(job=job, execution=execution, outcome="lost", now=now) is None:
            if execution.attempt > 1:
                execution.status = "failed"
                execution.error_message = (f"lost {execution.attempt} times: the run kills its worker "
                                           "(out of memory?); giving up after its retries")
            notifications.record_outcome(job=job, execution=execution)
    return lost
