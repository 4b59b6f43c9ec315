"""Telling the scheduler leader that a job changed, so it does not wait for its next reconcile.

On PostgreSQL this is ``NOTIFY jobplane_jobs`` in the change's own transaction (delivered at
commit, never after a rollback).  In standalone mode the scheduler runs in the same process and
registers a listener that is called after the commit.
"""

from __future__ import annotations

from typing import Callable
from uuid import UUID

from flask import current_app
from sqlalchemy import text

from app.extensions import db
from app.services.transactions import after_commit

#: PostgreSQL channel the scheduler LISTENs on; the payload is the job id.
CHANNEL = "jobplane_jobs"
_LISTENERS = "jobplane_job_listeners"


def announce_job_change(job_id: UUID) -> None:
    """Wake the scheduler for ``job_id`` once the current transaction commits."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_notify(:channel, :payload)"),
                           {"channel": CHANNEL, "payload": str(job_id)})
    listeners = list(current_app.extensions.get(_LISTENERS, ()))
    if listeners:
        after_commit(lambda: [listener(job_id) for listener in listeners])


def add_listener(app, listener: Callable[[UUID], None]) -> None:
    """Call ``listener(job_id)`` in this process after each committed job change."""
    app.extensions.setdefault(_LISTENERS, []).append(listener)
