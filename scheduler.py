"""The scheduler process (what ``jobplane scheduler`` runs): stand by, lead, fire."""

import signal
import sys

from app import create_app, observability
from app.bootstrap import ensure_admin
from app.scheduler.leader import leader_lock_for
from app.scheduler.service import SchedulerService


def main() -> int:
    app = create_app()
    observability.setup(app.config, "scheduler")  # logs, Sentry, and /metrics, /health, /ready
    ensure_admin(app)
    service = SchedulerService(app, leader_lock_for(app.config))
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    signal.signal(signal.SIGINT, lambda *_: service.stop())
    return service.run()


if __name__ == "__main__":
    sys.exit(main())
