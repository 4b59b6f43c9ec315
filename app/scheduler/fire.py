"""The fire function: a due fire time becomes a queued execution and a message.

Called by ``FireExecutor`` in APScheduler's thread, before APScheduler stores the job's next
run time: if this process dies anywhere in between, the fire time is still due when a
scheduler takes over, and the unique (job, scheduled time) makes the repeat a no-op.
"""

from __future__ import annotations

import logging
from datetime import datetime
from uuid import UUID

from flask import Flask

from app.extensions import db
from app.services import executions

logger = logging.getLogger(__name__)


def fire_due_job(app: Flask, job_id: str, run_times: list[datetime]) -> list[UUID]:
    """Create the executions of ``job_id`` for ``run_times``; send them once committed."""
    with app.app_context():
        with db.unit_of_work():
            created = executions.create_scheduled_executions(job_id=UUID(job_id), run_times=run_times)
    if created:
        logger.info("fired job %s for %s: %d new execution(s)", job_id,
                    ", ".join(t.isoformat() for t in run_times), len(created))
    return created


def apscheduler_target(job_id: str) -> None:
    """What APScheduler's stored jobs point at. ``FireExecutor`` performs the fire instead
    (it needs the app and all the run times, which APScheduler does not pass to a function)."""
    raise RuntimeError(f"job {job_id} reached a thread pool: the scheduler must use FireExecutor")
