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


#: A wake-up with more due jobs than this records them in transactions of this many, each sent as
#: soon as committed: the first runs of a burst of 5,000 start while APScheduler still works
#: through the rest, instead of 2.5 s after the instant (bench/burst.py).  A wake-up of no more
#: than ``BULK_FIRE_THRESHOLD`` jobs is never split, so one burst takes one lane.
FIRE_CHUNK = 500


class FireExecutor(BaseExecutor):
    """Records fires synchronously; within a batch (see ``BatchingScheduler``) it holds them
    back until ``flush``, which records them in one transaction — or, for a big batch, in
    transactions of ``FIRE_CHUNK`` jobs as they come."""

    def __init__(self, app: Flask):
        super().__init__()
        self.app = app
        self.batch: list[tuple[object, list[datetime]]] | None = None
        self.batch_total = 0
        self.threshold = app.config["BULK_FIRE_THRESHOLD"]
        self.chunk = max(FIRE_CHUNK, self.threshold + 1)

    def begin_batch(self) -> None:
        self.batch, self.batch_total = [], 0

    def submit_job(self, job, run_times: list[datetime]) -> None:
        # No instance counting: how many runs of a job may overlap is the job's concurrency
        # policy, enforced in the database.  Every due fire time goes to the fire function, late
        # ones too: the job's misfire policy (not APScheduler's grace time) decides.
        if self.batch is None:
            self._fire([(job, run_times)])
            return
        self.batch.append((job, run_times))
        self.batch_total += 1
        if len(self.batch) >= self.chunk:
            chunk, self.batch = self.batch, []
            self._fire(chunk, burst=True)

    def _do_submit_job(self, job, run_times: list[datetime]) -> None:
        self._fire([(job, run_times)])

    def flush(self) -> None:
        """Record every fire held back by the batch, then stop batching."""
        batch, self.batch = self.batch or [], None
        if batch:
            self._fire(batch, burst=self.batch_total > self.threshold)

    def _fire(self, batch: list[tuple[object, list[datetime]]], *, burst: bool = False) -> None:
        result = self._fire_or_exit({job.id: run_times for job, run_times in batch}, burst=burst)
        missed = set(result.missed)  # in UTC
        for job, run_times in batch:
            for t in run_times:
                code = EVENT_JOB_MISSED if t.astimezone(timezone.utc) in missed else EVENT_JOB_EXECUTED
                self._scheduler._dispatch_event(JobExecutionEvent(code, job.id, job._jobstore_alias, t))
        faults.point(self.app, "before_store_next")

    def _fire_or_exit(self, fires: dict[str, list[datetime]], *, burst: bool) -> FireResult:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return fire.fire_due_jobs(self.app, fires, burst=burst)
            except Exception:
                logger.exception("could not record the fires of %d job(s), try %d/%d", len(fires), attempt,
                                 _ATTEMPTS)
                time.sleep(_RETRY_PAUSE)
        logger.critical("the fires of %d job(s) could not be recorded; exiting so that they are not lost "
                        "(the next leader fires them)", len(fires))
        logging.shutdown()
        os._exit(EXIT_FIRE_FAILED)
