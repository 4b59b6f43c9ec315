"""``jobplane standalone``: everything in one process, for trying Jobplane on a laptop.

SQLite in ``JOBPLANE_DATA_DIR``, Dramatiq's in-memory broker with worker threads in this process,
the scheduler, and the web server.  Messages in memory die with the process, so on start every
execution still queued is sent again and any left ``running`` by the previous process is lost.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from typing import Any

import dramatiq
from werkzeug.serving import make_server

from app import create_app
from app import observability
from app.bootstrap import ensure_admin
from app.extensions import db, queue
from app.migrate import upgrade
from app.scheduler.leader import FileLeaderLock
from app.scheduler.service import SchedulerService
from app.services import sweeper
from app.tasks.dispatch import NOTIFICATIONS_QUEUE, RUN_QUEUES, bulk_lane_threads
from app.tasks.middleware import AppContextMiddleware

logger = logging.getLogger(__name__)


def run_standalone(overrides: dict[str, Any] | None = None) -> int:
    app = create_app({"ENV": "standalone", **(overrides or {})})
    config = app.config
    observability.setup(config, "standalone")
    upgrade(config["DATABASE_URL"])
    lock = FileLeaderLock(f"{config['DATA_DIR']}/scheduler.lock")
    if not lock.try_acquire():
        logger.error("another Jobplane is running on %s; stop it or use another JOBPLANE_DATA_DIR",
                     config["DATA_DIR"])
        return 2
    token = ensure_admin(app)
    _recover(app)

    broker = queue.broker_of(app)
    broker.add_middleware(AppContextMiddleware(app))
    threads = config["WORKER_THREADS"] + bulk_lane_threads(config["WORKER_THREADS"])
    worker = dramatiq.Worker(broker, queues=set(RUN_QUEUES), worker_threads=threads,
                             worker_timeout=config["WORKER_POLL_MS"])
    worker.start()
    # notifications on threads of their own: never behind long job runs
    notifier = dramatiq.Worker(broker, queues={NOTIFICATIONS_QUEUE}, worker_threads=config["NOTIFY_THREADS"],
                               worker_timeout=config["WORKER_POLL_MS"])
    notifier.start()
    scheduler = SchedulerService(app, lock)
    scheduler_thread = threading.Thread(target=scheduler.run, name="jobplane-scheduler", daemon=True)
    scheduler_thread.start()
    server = make_server(config["HOST"], config["PORT"], app, threaded=True)

    url = f"http://{config['HOST']}:{config['PORT']}"
    print(f"Jobplane is running at {url}  (data in {config['DATA_DIR']})", flush=True)
    if token:
        print(f"Admin API token (shown once, keep it): {token}", flush=True)
    else:
        print("Sign in with the admin token printed at the first start "
              "(or the one in JOBPLANE_BOOTSTRAP_ADMIN_TOKEN).", flush=True)
    print(f"Try: curl -H 'Authorization: Bearer <token>' {url}/api/v1/jobs", flush=True)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: (stop.set(), threading.Thread(target=server.shutdown).start()))
    server_thread = threading.Thread(target=server.serve_forever, name="jobplane-web", daemon=True)
    server_thread.start()
    while not stop.wait(1.0):
        if not scheduler_thread.is_alive():
            logger.critical("the scheduler stopped; shutting down")
            break
    scheduler.stop()
    server.shutdown()
    worker.stop(timeout=int(config["KILL_GRACE_SECONDS"] * 1000) + 5000)
    notifier.stop(timeout=10_000)
    scheduler_thread.join(timeout=5)
    return 0


def _recover(app) -> None:
    """Re-send queued executions; runs left 'running' died with the previous process."""
    with app.app_context(), db.unit_of_work():
        sweeper.hand_over_stale_kubernetes_runs(stale_after=timedelta(0),
                                                reattach_limit=app.config["K8S_REATTACH_LIMIT"])
        lost = sweeper.mark_stale_running_lost(stale_after=timedelta(0))
        resent = sweeper.resend_stale_queued(older_than=timedelta(0))
    if lost or resent:
        logger.warning("recovered after restart: %d execution(s) re-sent, %d declared lost",
                       len(resent), len(lost))
