"""The fire function: due fire times become ledger rows, and queued ones a message each.

Called by ``FireExecutor`` in APScheduler's thread, before APScheduler stores the job's next
run time: if this process dies anywhere in between, the fire time is still due when a
scheduler takes over, and the unique (job, scheduled time) makes the repeat a no-op.  A
message that could not be sent (Redis down) is sent again by the sweeper.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timedelta, timezone
from uuid import UUID

from flask import Flask

from app.extensions import db
from app.observability import metrics
from app.scheduler import faults
from app.services import firing
from app.services.firing import FireResult
from app.tasks import dispatch

logger = logging.getLogger(__name__)

#: How this replica signs the executions it fires.
FIRED_BY = f"{socket.gethostname()}:{os.getpid()}"


def fire_due_job(app: Flask, job_id: str, run_times: list[datetime]) -> FireResult:
    """Record the fires of one job (see ``fire_due_jobs``)."""
    return fire_due_jobs(app, {job_id: run_times})


def fire_due_jobs(app: Flask, fires: dict[str, list[datetime]], *,
                  deliver_ahead: timedelta | None = None, burst: bool = False) -> FireResult:
    """Record the fires of every job due at one wake-up in one transaction; send the queued
    ones once it is committed.

    Parameters:
      deliver_ahead: fires recorded before their time (staged): their messages reach a worker
        this long before the earliest of them, not sooner (see ``staging.DELIVER_AHEAD``).
      burst: these fires are part of a burst recorded in several transactions: their runs go
        to the bulk lane whatever their number.
    """
    config = app.config
    with app.app_context():
        faults.point(app, "before_insert")
        with db.unit_of_work():
            result = firing.record_fire_batch(
                fires={UUID(job_id): run_times for job_id, run_times in fires.items()}, fired_by=FIRED_BY,
                misfire_threshold=timedelta(seconds=config["MISFIRE_THRESHOLD_SECONDS"]),
                run_all_cap=config["MISFIRE_RUN_ALL_CAP"])
            faults.point(app, "after_insert")
        metrics.fires_recorded(result)
        faults.point(app, "before_send")
        delay = None
        if deliver_ahead is not None:
            earliest = min(t for times in fires.values() for t in times)
            delay = (earliest - deliver_ahead - datetime.now(timezone.utc)).total_seconds()
        try:
            dispatch.send_runs(result.queued, delay_seconds=delay if delay and delay > 0 else None, burst=burst)
        except Exception:
            logger.exception("could not send %d run message(s); the sweeper will", len(result.queued))
    if len(fires) == 1 and (result.queued or result.skipped or result.missed):
        [(job_id, run_times)] = fires.items()
        logger.info("fired job %s for %s: %d new execution(s), %d skipped, %d missed", job_id,
                    ", ".join(t.isoformat() for t in run_times), len(result.queued), len(result.skipped),
                    len(result.missed))
    elif len(fires) > 1:
        logger.info("fired %d jobs: %d new execution(s), %d skipped, %d missed", len(fires), len(result.queued),
                    len(result.skipped), len(result.missed))
    return result


def apscheduler_target(job_id: str) -> None:
    """What APScheduler's stored jobs point at. ``FireExecutor`` performs the fire instead
    (it needs the app and all the run times, which APScheduler does not pass to a function)."""
    raise RuntimeError(f"job {job_id} reached a thread pool: the scheduler must use FireExecutor")
