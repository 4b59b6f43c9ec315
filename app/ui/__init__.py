"""The web UI (Jinja + HTMX, vendored static files, no build step): sign-in, server-side sessions,
CSRF protection, the pages, live logs."""

from __future__ import annotations

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.middleware.proxy_fix import ProxyFix

from app import security_headers
from app.ui import (admin_pages, auth, csrf, dashboard_pages, execution_pages, job_editor, job_pages, live_log, pages,
                    sessions, views)


def init_app(app: Flask) -> None:
    if app.config["BEHIND_PROXY"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)
    sessions.install(app)
    csrf.install(app)
    security_headers.install(app)
    views.install(app)
    if app.config["OIDC_ENABLED"]:
        auth.register_sso_client(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(job_pages.bp)  # with job_editor's routes
    app.register_blueprint(auth.bp)
    app.register_blueprint(live_log.bp)
    app.register_blueprint(execution_pages.bp)
    app.register_blueprint(dashboard_pages.bp)
    app.register_blueprint(admin_pages.bp)
    _limit_sign_in(app)


def _limit_sign_in(app: Flask) -> None:
    """Sign-in attempts per client address: Redis-backed (shared by every web process), in memory
    in standalone mode.  Over the limit: 429 with Retry-After."""
    storage = "memory://" if app.config["ENV"] == "standalone" else app.config["REDIS_URL"]
    limiter = Limiter(get_remote_address, app=app, storage_uri=storage, headers_enabled=True,
                      key_prefix=f"{app.config['QUEUE_NAMESPACE']}:limits")
    rule = limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"])
    for endpoint in auth.SIGN_IN_ENDPOINTS:
        app.view_functions[endpoint] = rule(app.view_functions[endpoint])
