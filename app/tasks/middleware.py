"""One app context and one commit point per Dramatiq message (as a request has in Flask)."""

from __future__ import annotations

import threading

from dramatiq import Middleware
from flask import Flask

from app.extensions import db
from app.observability import logs


class AppContextMiddleware(Middleware):
    """Push an app context around each message; commit on success, roll back on error."""

    def __init__(self, app: Flask):
        self.app = app
        self._local = threading.local()

    def before_process_message(self, broker, message):
        logs.clear_run()  # this thread's previous message was another run
        context = self.app.app_context()
        context.push()
        self._local.context = context

    def after_process_message(self, broker, message, *, result=None, exception=None):
        context = getattr(self._local, "context", None)
        if context is None:
            return
        try:
            if exception is None:
                db.session.commit()
            else:
                db.session.rollback()
        finally:
            self._local.context = None
            context.pop()

    after_skip_message = after_process_message
