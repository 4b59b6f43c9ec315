"""The web process: ``gunicorn 'wsgi:create_web_app()'`` (what ``jobplane web`` runs)."""

from app import create_app, observability
from app.bootstrap import ensure_admin


def create_web_app():
    app = create_app()
    observability.setup(app.config, "web")
    if ensure_admin(app) and not app.config["BOOTSTRAP_ADMIN_TOKEN"]:
        app.logger.warning("no JOBPLANE_BOOTSTRAP_ADMIN_TOKEN was set: create a token with "
                           "`jobplane` or set the variable and start again")
    return app
