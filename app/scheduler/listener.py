"""Listening for job changes on PostgreSQL (``LISTEN jobplane_jobs``).

APScheduler never notices a job another process wrote until it wakes up; the API sends a
``NOTIFY`` in the change's transaction and this thread syncs that job at once.  After a lost
connection it reconnects and asks for a full reconcile, since notifications may have been missed.
"""

from __future__ import annotations

import logging
import select
import threading
from typing import Callable

import psycopg2
from sqlalchemy.engine import make_url

from app.services.scheduler_signal import CHANNEL

logger = logging.getLogger(__name__)


class JobChangeListener(threading.Thread):
    def __init__(self, database_url: str, *, on_change: Callable[[str], None],
                 on_reconnect: Callable[[], None]):
        super().__init__(name="jobplane-listen", daemon=True)
        self.dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.on_change = on_change
        self.on_reconnect = on_reconnect
        self.stopping = threading.Event()
        self.ready = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        first = True
        while not self.stopping.is_set():
            try:
                connection = psycopg2.connect(self.dsn, keepalives=1, keepalives_idle=5,
                                              keepalives_interval=2, keepalives_count=2,
                                              application_name="jobplane-scheduler-listen")
            except psycopg2.Error as exc:
                logger.warning("LISTEN connection failed (%s); retrying", exc)
                self.stopping.wait(1.0)
                continue
            try:
                connection.autocommit = True
                with connection.cursor() as cursor:
                    cursor.execute(f"LISTEN {CHANNEL}")
                self.ready.set()
                if not first:
                    self.on_reconnect()
                first = False
                self._listen(connection)
            except psycopg2.Error as exc:
                logger.warning("LISTEN connection lost (%s); reconnecting", exc)
            except Exception:
                logger.exception("job change handling failed; reconnecting and reconciling")
            finally:
                connection.close()

    def _listen(self, connection) -> None:
        while not self.stopping.is_set():
            if select.select([connection], [], [], 1.0) == ([], [], []):
                continue
            connection.poll()
            changed = {note.payload for note in connection.notifies}
            connection.notifies.clear()
            for job_id in changed:
                self.on_change(job_id)
