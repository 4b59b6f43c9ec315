"""Work that must happen only once the current transaction has committed.

Sending a Dramatiq message or waking the scheduler before the commit could let a worker look
for a row that does not exist yet; after a rollback it must not happen at all.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from app.extensions import db

_KEY = "jobplane_after_commit"


def after_commit(callback: Callable[[], None]) -> None:
    """Run ``callback`` after the current session's transaction commits (dropped on rollback)."""
    db.session.info.setdefault(_KEY, []).append(callback)


def install(factory: sessionmaker) -> None:
    """Hook the callbacks into every session ``factory`` makes."""
    event.listen(factory, "after_commit", _run_callbacks)
    event.listen(factory, "after_soft_rollback", _drop_callbacks)


def _run_callbacks(session: Session) -> None:
    callbacks = session.info.pop(_KEY, [])
    for callback in callbacks:
        callback()


def _drop_callbacks(session: Session, _previous_transaction) -> None:
    session.info.pop(_KEY, None)
