"""Unbound extension objects, attached to an app by ``create_app``.

None of them keeps a reference to an app: per-app state lives in ``app.extensions``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import dramatiq
from dramatiq.brokers.stub import StubBroker
from flask import Flask, current_app, g
from flask_smorest import Api
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from app.tasks.broker import KeyedRedisBroker


@dataclass
class _DatabaseState:
    engine: Engine
    sessionmaker: sessionmaker


class Database:
    """The SQLAlchemy engine of an app, and one session per app context.

    ``db.session`` is the session of the current app context; the entry point that pushed the
    context commits or rolls it back (see ``app.db_session``).
    """

    def init_app(self, app: Flask) -> None:
        url = app.config["DATABASE_URL"]
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                                   poolclass=NullPool)
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        app.extensions["jobplane_db"] = _DatabaseState(
            engine=engine, sessionmaker=sessionmaker(engine, expire_on_commit=False))
        app.teardown_appcontext(self._close_session)

    @staticmethod
    def _state() -> _DatabaseState:
        return current_app.extensions["jobplane_db"]

    @property
    def engine(self) -> Engine:
        return self._state().engine

    @property
    def session(self) -> Session:
        if "db_session" not in g:
            g.db_session = self._state().sessionmaker()
        return g.db_session

    @staticmethod
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """Commit what the block did, or roll it back if it raised.

        For entry points that are one long activity made of several transactions (a run that
        claims, streams its log and finishes); everything else commits once at its end.
        """
        session = self.session
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Queue:
    """The Dramatiq broker of an app: Redis in production, in memory in standalone."""

    def init_app(self, app: Flask) -> None:
        if app.config["ENV"] == "standalone":
            broker = StubBroker()
            broker.emit_after("process_boot")
        else:
            from dramatiq.common import dq_name

            from app.tasks.dispatch import BULK_LANE_THREAD_DIVISOR, EXECUTIONS_BULK_QUEUE, NOTIFICATIONS_QUEUE

            background = {name: app.config["BACKGROUND_POLL_MS"]
                          for queue_name in (EXECUTIONS_BULK_QUEUE, NOTIFICATIONS_QUEUE)
                          for name in (queue_name, dq_name(queue_name))}
            # The bulk lane's group messages hold a thread for all their runs: a worker process
            # holds no more of them than it has threads of its own for that lane (see dispatch).
            broker = KeyedRedisBroker(url=app.config["REDIS_URL"], namespace=app.config["QUEUE_NAMESPACE"],
                                      poll_ms=app.config["WORKER_POLL_MS"], poll_ms_by_queue=background,
                                      prefetch_divisors={EXECUTIONS_BULK_QUEUE: BULK_LANE_THREAD_DIVISOR})
        app.extensions["jobplane_broker"] = broker

    @property
    def broker(self) -> dramatiq.Broker:
        return self.broker_of(current_app)

    @staticmethod
    def broker_of(app: Flask) -> dramatiq.Broker:
        return app.extensions["jobplane_broker"]


db = Database()
queue = Queue()
api = Api()
