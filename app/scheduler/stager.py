"""The leader's stager: records the fires of stageable jobs ``JOBPLANE_STAGE_AHEAD_SECONDS``
before their time and sends their messages at once (see ``app.services.staging``).

It runs beside APScheduler, never instead of it: APScheduler still fires every job at its time
(a no-op for a staged fire), so a stager that is late, failing or stopped costs lag, not fires.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from flask import Flask

from app.extensions import db
from app.models.base import utcnow
from app.scheduler import fire
from app.services import staging

logger = logging.getLogger(__name__)

#: Longest pause between two passes; a fire is staged between ``lead - poll`` and ``lead`` ahead.
POLL_SECONDS = 0.2


class Stager:
    """A thread that stages the fires due within ``lead`` seconds, every ``POLL_SECONDS``."""

    def __init__(self, app: Flask, lead: float):
        self.app = app
        self.lead = lead
        self.poll = min(POLL_SECONDS, lead / 4)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="jobplane-stager", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)

    def _loop(self) -> None:
        while not self.stopping.wait(self.poll):
            try:
                self.stage_once()
            except Exception:  # APScheduler fires them at their time anyway
                logger.exception("staging failed; the fires will happen at their time; will try again")

    def stage_once(self) -> int:
        """Stage what is due within the lead. Returns how many fires were staged."""
        now = utcnow()
        with self.app.app_context():
            fires = staging.fires_to_stage(
                now=now, until=now + timedelta(seconds=self.lead),
                misfire_threshold=timedelta(seconds=self.app.config["MISFIRE_THRESHOLD_SECONDS"]))
            db.session.rollback()
        if not fires:
            return 0
        return len(fire.fire_due_jobs(self.app, fires, deliver_ahead=staging.DELIVER_AHEAD).queued)
