"""Retries: a failed, timed-out or lost attempt of a fire gets another attempt, with backoff.

Each attempt is its own execution of the same fire time (``attempt`` 2, 3…, linked to the first
by ``first_attempt_id``), due after the job's retry delay doubled per attempt up to its cap, and
sent with that delay.  Retries continue a fire, so the concurrency policy does not apply to them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from app.extensions import db
from app.models import Execution, Job
from app.services.transactions import after_commit
from app.tasks import dispatch


def delay_before(job: Job, attempt: int) -> timedelta:
    """How long attempt number ``attempt`` (2 or more) waits after the previous one ended."""
    base = job.retry_delay_seconds if job.retry_delay_seconds is not None else job.retry_delay_minutes * 60
    return timedelta(seconds=min(base * 2 ** (attempt - 2), job.retry_delay_max_seconds))


def will_retry(job: Job, execution: Execution, outcome: str) -> bool:
    """A deleted job is retried no more: it fires nothing once deleted."""
    return job.status != "deleted" and outcome in (job.retry_on or ()) and execution.attempt <= job.max_retries


def schedule_retry(*, job: Job, execution: Execution, outcome: str, now: datetime) -> Execution | None:
    """Queue the next attempt after ``execution`` ended with ``outcome``, if the job retries it.

    Returns:
      the new attempt (sent with its delay after the commit), or None.
    """
    if not will_retry(job, execution, outcome):
        return None
    attempt = execution.attempt + 1
    due = now + delay_before(job, attempt)
    retry = Execution(job_id=job.id, scheduled_for=execution.scheduled_for, attempt=attempt,
                      first_attempt_id=execution.first_attempt_id or execution.id,
                      triggered_by=execution.triggered_by, status="queued", fired_by="retry",
                      due_at=due, created_at=now, sent_at=due)
    db.session.add(retry)
    db.session.flush()
    send = dispatch.run_execution_sender()
    delay = (due - now).total_seconds()
    after_commit(lambda: send(retry.id, delay_seconds=delay))
    return retry
