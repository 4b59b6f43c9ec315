"""What every entry point does before serving: the first admin. (Logging, metrics and Sentry are
set up by ``app.observability.setup``.)"""

from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.services import users

logger = logging.getLogger(__name__)


def ensure_admin(app: Flask) -> str | None:
    """Create the first admin if there is none (see JOBPLANE_BOOTSTRAP_ADMIN_TOKEN).

    Returns:
      the admin's API token when this call created it, else None.
    """
    with app.app_context():
        try:
            with db.unit_of_work():
                token = users.bootstrap_admin(token=app.config["BOOTSTRAP_ADMIN_TOKEN"])
        except IntegrityError:
            return None  # another process created it at the same moment
    if token:
        logger.warning("created the first admin user 'admin'")
    return token
