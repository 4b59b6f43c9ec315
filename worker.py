"""The worker process: ``dramatiq worker:setup_broker`` (what ``jobplane worker`` runs).

Dramatiq calls ``setup_broker`` in each worker process; the broker is configured and the actors
declared before any message is consumed.
"""

import dramatiq

from app import create_app
from app.bootstrap import ensure_admin
from app.extensions import queue
from app.tasks.middleware import AppContextMiddleware


def setup_broker() -> None:
    app = create_app()
    ensure_admin(app)
    broker = queue.broker_of(app)
    broker.add_middleware(AppContextMiddleware(app))
    dramatiq.set_broker(broker)
