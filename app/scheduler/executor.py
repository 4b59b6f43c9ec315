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
    def __init__(self, app: Flask):
        super().__init__()
        self.app = app

    def submit_job(self, job, run_times: list[datetime]) -> None:
        # No instance counting: a fire returns once recorded, and how many runs of a job may
        # overlap is the job's concurrency policy, enforced in the database.
        self._do_submit_job(job, run_times)

    def _do_submit_job(self, job, run_times: list[datetime]) -> None:
        # Every due fire time goes to the fire function: late ones too, since the job's misfire
        # policy (not APScheduler's grace time) decides what becomes of them.
        result = self._fire_or_exit(job.id, run_times)
        missed = set(result.missed)  # in UTC
        events = [JobExecutionEvent(EVENT_JOB_MISSED if t.astimezone(timezone.utc) in missed else EVENT_JOB_EXECUTED,
                                    job.id, job._jobstore_alias, t) for t in run_times]
        for event in events:
            self._scheduler._dispatch_event(event)
        faults.point(self.app, "before_store_next")

    def _fire_or_exit(self, job_id: str, run_times: list[datetime]) -> FireResult:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return fire.fire_due_job(self.app, job_id, run_times)
            except Exception:
                logger.exception("job %s: could not record fire %d/%d", job_id, attempt, _ATTEMPTS)
                time.sleep(_RETRY_PAUSE)
        logger.critical("job %s: the fire could not be recorded; exiting so that it is not lost "
                        "(the next leader fires it)", job_id)
        logging.shutdown()
        os._exit(EXIT_FIRE_FAILED)
