"""Leader election: one scheduler replica fires, the others stand by.

On PostgreSQL the leader holds a session advisory lock on a dedicated connection (never a
pooled one: a pool's pre-ping would silently reconnect without the lock) and checks every
second that it still holds it.  In standalone mode (SQLite) a file lock keeps a second
process on the same data directory from firing.
"""

from __future__ import annotations

import fcntl
import logging
import os
from typing import Protocol

import psycopg2
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

_HOLDS_LOCK = ("SELECT EXISTS(SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
               "AND pid = pg_backend_pid() AND classid = 0 AND objid = %s AND objsubid = 1)")


class LeaderLock(Protocol):
    def try_acquire(self) -> bool: ...
    def is_held(self) -> bool: ...
    def release(self) -> None: ...


class PostgresLeaderLock:
    """``pg_try_advisory_lock(lock_id)`` on a connection of its own, with TCP keepalives."""

    def __init__(self, database_url: str, lock_id: int):
        if not 0 < lock_id < 2**31:
            raise ValueError("the scheduler lock id must be between 1 and 2^31-1")
        self.dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.lock_id = lock_id
        self.connection = None

    def try_acquire(self) -> bool:
        try:
            if self.connection is None or self.connection.closed:
                self.connection = psycopg2.connect(
                    self.dsn, keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2,
                    application_name="jobplane-scheduler-lock")
                self.connection.autocommit = True
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_id,))
                return bool(cursor.fetchone()[0])
        except psycopg2.Error as exc:
            logger.warning("cannot reach PostgreSQL for the leader lock: %s", exc)
            self.release()
            return False

    def is_held(self) -> bool:
        """Ask the server; a lost connection means a lost lock."""
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(_HOLDS_LOCK, (self.lock_id,))
                return bool(cursor.fetchone()[0])
        except (psycopg2.Error, AttributeError):
            return False

    def backend_pid(self) -> int | None:
        return self.connection.get_backend_pid() if self.connection else None

    def release(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except psycopg2.Error:
                pass
        self.connection = None


class FileLeaderLock:
    """An exclusive ``flock`` on a file: one standalone scheduler per data directory."""

    def __init__(self, path: str):
        self.path = path
        self.handle = None

    def try_acquire(self) -> bool:
        if self.handle is not None:
            return True
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self.handle = handle
        return True

    def is_held(self) -> bool:
        return self.handle is not None

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def leader_lock_for(config) -> LeaderLock:
    if config["SQLALCHEMY_IS_SQLITE"]:
        return FileLeaderLock(os.path.join(config["DATA_DIR"], "scheduler.lock"))
    return PostgresLeaderLock(config["DATABASE_URL"], config["SCHEDULER_LOCK_ID"])
