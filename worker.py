"""The worker processes: ``dramatiq -Q executions -f worker:run_notifier worker:setup_broker``
(what ``jobplane worker`` runs).

Dramatiq calls ``setup_broker`` in each worker process; the broker is configured and the actors
declared before any message is consumed.  ``run_notifier`` is the forked process that consumes
the notifications queue with threads of its own.
"""

import signal
import sys
import threading

import dramatiq

from app import create_app, observability
from app.bootstrap import ensure_admin
from app.extensions import queue
from app.tasks.middleware import AppContextMiddleware


#: How long a thread holds the GIL while another wants it (Python's default is 5 ms).  A worker
#: process runs a burst's groups on some threads while others claim and start runs due now: each
#: of their many short waits (a database round trip, a spawn) ends by waiting for the GIL.
GIL_SWITCH_SECONDS = 0.002


def setup_broker() -> None:
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    app = create_app()
    ensure_admin(app)
    broker = queue.broker_of(app)
    observability.instrument_worker(app, broker)  # logs, Sentry, metrics and probes
    broker.add_middleware(AppContextMiddleware(app))
    dramatiq.set_broker(broker)


def run_notifier() -> int:
    """Deliver notifications until SIGTERM/SIGINT: Dramatiq forks this beside the run workers and
    stops them all if it dies. It also serves the worker's /metrics, /health and /ready."""
    from app.tasks.broker import THREAD_WAKE_MS
    from app.tasks.dispatch import NOTIFICATIONS_QUEUE

    app = create_app()
    broker = queue.broker_of(app)
    probes = observability.instrument_worker(app, broker, notifier=True)  # logs, Sentry, /metrics, /ready
    broker.add_middleware(AppContextMiddleware(app))
    notifier = dramatiq.Worker(broker, queues={NOTIFICATIONS_QUEUE}, worker_threads=app.config["NOTIFY_THREADS"],
                               worker_timeout=THREAD_WAKE_MS)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    notifier.start()
    stop.wait()
    notifier.stop()
    if probes is not None:
        probes.stop()
    return 0
