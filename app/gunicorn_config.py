"""gunicorn's configuration for ``jobplane web`` (``--config <path of this file>``).

It imports nothing of Jobplane's: gunicorn's master loads it, and whatever it imports is imported
before the worker's gevent patching.

Live log viewers keep a websocket open for as long as they watch a run.  Under gevent each one is
a greenlet, so one process holds hundreds of them (``JOBPLANE_WEB_CONNECTIONS``); gunicorn's
gevent worker monkey-patches the standard library in the worker before the app is loaded.
psycopg2 is a C library that waits on its sockets itself, out of gevent's sight: without
psycogreen's wait callback every query would stop the whole process, every viewer with it, until
PostgreSQL answered.  The callback is installed right after the fork, before any connection.
"""

from __future__ import annotations


def post_fork(server, worker) -> None:
    """In each new worker: make psycopg2 yield to other greenlets while it waits on PostgreSQL."""
    if type(worker).__module__.endswith("ggevent"):
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
        server.log.info("worker %s: gevent worker, psycopg2 made cooperative (psycogreen)", worker.pid)
