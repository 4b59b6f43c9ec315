"""Liveness and readiness: ``/health`` (the process answers) and ``/ready`` (it can do its work:
the database and Redis answer within ``JOBPLANE_READY_TIMEOUT_SECONDS`` and the schema is at
the migrations' head, or ahead of it).

A schema *ahead* of the code (at a revision its scripts do not know) is ready: during a rolling
upgrade the migration runs first, and the previous release must keep serving until its pods are
replaced. That holds because migrations are written expand-then-contract (docs/kubernetes.md): a
migration never breaks the release before it. A schema *behind* the code is not ready.

The checks use connections of their own, with short timeouts, so that a probe never waits
behind a busy pool nor hangs on a dead server for the length of a TCP timeout.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Mapping

import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from app.migrate import heads, known_revisions

#: ``scheme://user:password@`` in a URL: the password is never shown in a probe's answer.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def readiness(extensions: dict, config: Mapping[str, Any]) -> tuple[bool, dict[str, str]]:
    """Run the readiness checks.

    Parameters:
      extensions: where the probe's connections are kept (an app's ``extensions``).
      config: the settings.

    Returns:
      (ready, {check: "ok" or what is wrong}); Redis is not checked in standalone, which has none.
    """
    checks: dict[str, str] = {}
    try:
        engine = probe_engine(extensions, config)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
            revision = current_revision_of(connection)
        checks["migrations"] = migrations_check(revision, config["DATABASE_URL"])
    except Exception as exc:
        checks["database"] = f"down: {describe(exc)}"
        checks["migrations"] = "unknown (database down)"
    if config["ENV"] != "standalone":
        try:
            probe_redis(extensions, config).ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"down: {describe(exc)}"
    return all(value == "ok" for value in checks.values()), checks


def migrations_check(revision: str | None, database_url: str) -> str:
    """"ok" when the schema is at the code's head or ahead of it, else what to run."""
    wanted = _heads(database_url)
    if revision in wanted or (revision is not None and revision not in _known(database_url)):
        return "ok"
    return (f"the schema is at {revision or 'no revision'}, the code needs {', '.join(wanted)}: "
            "run `jobplane db upgrade`")


def current_revision_of(connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def describe(exc: BaseException) -> str:
    """The first line of an error, without any password a URL in it carries."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return _URL_PASSWORD.sub(r"\1****@", f"{type(exc).__name__}: {first}")[:300]


@functools.cache
def _heads(database_url: str) -> tuple[str, ...]:
    return heads(database_url)  # the scripts do not change while the process runs


@functools.cache
def _known(database_url: str) -> frozenset[str]:
    return known_revisions(database_url)


def probe_engine(extensions: dict, config: Mapping[str, Any]) -> Engine:
    """The probe's database engine (short timeouts, no pool), shared with the scrape-time collector."""
    engine = extensions.get("jobplane_probe_engine")
    if engine is None:
        url = config["DATABASE_URL"]
        timeout = config["READY_TIMEOUT_SECONDS"]
        connect_args: dict[str, Any] = {}
        if not url.startswith("sqlite"):
            connect_args = {"connect_timeout": max(1, math.ceil(timeout)),
                            "options": f"-c statement_timeout={int(timeout * 1000)}"}
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
        extensions["jobplane_probe_engine"] = engine
    return engine


def probe_redis(extensions: dict, config: Mapping[str, Any]) -> redis.Redis:
    """The probe's Redis client (short timeouts), shared with the scrape-time collector."""
    client = extensions.get("jobplane_probe_redis")
    if client is None:
        timeout = config["READY_TIMEOUT_SECONDS"]
        client = redis.Redis.from_url(config["REDIS_URL"], socket_timeout=timeout, socket_connect_timeout=timeout)
        extensions["jobplane_probe_redis"] = client
    return client
