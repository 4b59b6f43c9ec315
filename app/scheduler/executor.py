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
from datetime import datetime, timedelta, timezone

from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.base import BaseExecutor
from flask import Flask

from app.scheduler import fire

logger = logging.getLogger(__name__)

#: Exit status of a scheduler that could not record a fire (its supervisor restarts it).
EXIT_FIRE_FAILED = 75
_ATTEMPTS = 5
_RETRY_PAUSE = 0.5


class FireExecutor(BaseExecutor):
    def __init__(self, app: Flask, *, misfire_grace_seconds: int):
        super().__init__()
        self.app = app
        self.grace = timedelta(seconds=misfire_grace_seconds)

    def submit_job(self, job, run_times: list[datetime]) -> None:
        # No instance counting: a fire returns once recorded, and how many runs of a job may
        # overlap is the job's concurrency policy, enforced in the database.
        self._do_submit_job(job, run_times)

    def _do_submit_job(self, job, run_times: list[datetime]) -> None:
        now = datetime.now(timezone.utc)
        due = [t for t in run_times if now - t <= self.grace]
        events = [JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, t)
                  for t in run_times if now - t > self.grace]
        if len(due) < len(run_times):
            logger.warning("job %s: %d fire time(s) older than %s s skipped", job.id,
                           len(run_times) - len(due), self.grace.total_seconds())
        if due:
            self._fire_or_exit(job.id, due)
            events += [JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, t) for t in due]
        for event in events:
            self._scheduler._dispatch_event(event)

    def _fire_or_exit(self, job_id: str, run_times: list[datetime]) -> None:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                fire.fire_due_job(self.app, job_id, run_times)
                return
            except Exception:
                logger.exception("job %s: could not record fire %d/%d", job_id, attempt, _ATTEMPTS)
                time.sleep(_RETRY_PAUSE)
        logger.critical("job %s: the fire could not be recorded; exiting so that it is not lost "
                        "(the next leader fires it)", job_id)
        logging.shutdown()
        os._exit(EXIT_FIRE_FAILED)
