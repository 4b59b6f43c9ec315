"""An APScheduler executor that fires synchronously, before the next run time is stored.

APScheduler's ``_process_jobs`` submits a due job with its run times, then stores the next run
time, logging and carrying on if submission failed: a fire lost for good.  This executor does
the fire function's insert and commit inside ``submit_job``; if the database cannot take it
after a few tries, the process exits before APScheduler can move on, so a restarted or standby
scheduler finds the fire time still due.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone

from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.base import BaseExecutor
from flask import Flask

from app.scheduler import faults, fire
from app.services.firing import FireResult

logger = logging.getLogger(__name__)

#: Exit status of a scheduler that could not record a fire (its supervisor restarts it).
EXIT_FIRE_FAILED = 75
_ATTEMPTS = 5
_RETRY_PAUSE = 0.5


class FireExecutor(BaseExecutor):
    """Records fires synchronously; within a batch (see ``BatchingScheduler``) it holds them
    back until ``flush``, which records them all in one transaction."""

    def __init__(self, app: Flask):
        super().__init__()
        self.app = app
        self.batch: list[tuple[object, list[datetime]]] | None = None

    def begin_batch(self) -> None:
        self.batch = []

    def submit_job(self, job, run_times: list[datetime]) -> None:
        # No instance counting: how many runs of a job may overlap is the job's concurrency
        # policy, enforced in the database.  Every due fire time goes to the fire function, late
        # ones too: the job's misfire policy (not APScheduler's grace time) decides.
        if self.batch is not None:
            self.batch.append((job, run_times))
        else:
            self._fire([(job, run_times)])

    def _do_submit_job(self, job, run_times: list[datetime]) -> None:
        self._fire([(job, run_times)])

    def flush(self) -> None:
        """Record every fire held back by the batch, then stop batching."""
        batch, self.batch = self.batch or [], None
        if batch:
            self._fire(batch)

    def _fire(self, batch: list[tuple[object, list[datetime]]]) -> None:
        result = self._fire_or_exit({job.id: run_times for job, run_times in batch})
        missed = set(result.missed)  # in UTC
        for job, run_times in batch:
            for t in run_times:
                code = EVENT_JOB_MISSED if t.astimezone(timezone.utc) in missed else EVENT_JOB_EXECUTED
                self._scheduler._dispatch_event(JobExecutionEvent(code, job.id, job._jobstore_alias, t))
        faults.point(self.app, "before_store_next")

    def _fire_or_exit(self, fires: dict[str, list[datetime]]) -> FireResult:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return fire.fire_due_jobs(self.app, fires)
            except Exception:
                logger.exception("could not record the fires of %d job(s), try %d/%d", len(fires), attempt,
                                 _ATTEMPTS)
                time.sleep(_RETRY_PAUSE)
        logger.critical("the fires of %d job(s) could not be recorded; exiting so that they are not lost "
                        "(the next leader fires them)", len(fires))
        logging.shutdown()
        os._exit(EXIT_FIRE_FAILED)
