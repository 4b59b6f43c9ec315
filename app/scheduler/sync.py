"""Keeping APScheduler's job store in step with the ``jobs`` table.

``jobs`` is the source of truth; APScheduler's table is derived data.  A job's trigger is
replaced only when its schedule or timezone changed, so that a pending (possibly overdue) fire
time is never thrown away by an unrelated edit or by a new leader's first reconcile.
"""

from __future__ import annotations

import logging
from uuid import UUID

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.date import DateTrigger
from flask import Flask

from app.extensions import db
from app.models import Job
from app.services import jobs, schedules

logger = logging.getLogger(__name__)

#: APScheduler calls this by reference; FireExecutor intercepts it (see executor.py).
FIRE_FUNCTION = "app.scheduler.fire:apscheduler_target"


#: Bumped when the trigger classes change, so that every stored trigger is rebuilt.
TRIGGER_VERSION = "wall1"


def fingerprint(job: Job) -> str:
    """What, if changed, requires a new trigger."""
    if job.schedule is None:
        return f"{TRIGGER_VERSION}|once|{_iso(job.run_at)}"
    return f"{TRIGGER_VERSION}|{job.schedule}|{job.timezone}|{_iso(job.start_at)}|{_iso(job.end_at)}"


def _iso(value) -> str:
    return value.isoformat() if value else "-"


def reconcile(app: Flask, scheduler: BaseScheduler) -> tuple[int, int]:
    """Make the job store match every schedulable job. Returns (added or replaced, removed)."""
    with app.app_context():
        wanted = {str(job.id): job for job in jobs.schedulable_jobs()}
        db.session.expunge_all()
    present = {job.id: job.name for job in scheduler.get_jobs()}
    changed = 0
    for job_id, job in wanted.items():
        if present.get(job_id) != fingerprint(job):
            _put(scheduler, job)
            changed += 1
    removed = 0
    for job_id in present.keys() - wanted.keys():
        _remove(scheduler, job_id)
        removed += 1
    if changed or removed:
        logger.info("reconciled job store: %d added or replaced, %d removed", changed, removed)
    return changed, removed


def sync_job(app: Flask, scheduler: BaseScheduler, job_id: UUID | str) -> None:
    """Bring one job's trigger up to date (after a change notification)."""
    with app.app_context():
        job = db.session.get(Job, UUID(str(job_id)))
        schedulable = job is not None and jobs.is_schedulable(job)
        if schedulable:
            db.session.expunge(job)
    existing = scheduler.get_job(str(job_id))
    if not schedulable:
        if existing is not None:
            _remove(scheduler, str(job_id))
    elif existing is None or existing.name != fingerprint(job):
        _put(scheduler, job)


def _put(scheduler: BaseScheduler, job: Job) -> None:
    if job.schedule is None:
        trigger = DateTrigger(run_date=job.run_at, timezone="UTC")
    else:
        trigger = schedules.parse_cron(job.schedule, job.timezone, start_date=job.start_at, end_date=job.end_at)
    scheduler.add_job(FIRE_FUNCTION, trigger=trigger, args=[str(job.id)], id=str(job.id),
                      name=fingerprint(job), replace_existing=True)


def _remove(scheduler: BaseScheduler, job_id: str) -> None:
    try:
        scheduler.remove_job(job_id)
    except JobLookupError:
        pass
