"""The REST API (flask-smorest): thin resources that parse, authorize, call a service, render."""

from __future__ import annotations

from flask import Flask

from app.api import errors, idempotency, rate_limit
from app.api.audit import blp as audit_blp
from app.api.executions import blp as executions_blp
from app.api.jobs import blp as jobs_blp
from app.api.notifications import blp as notifications_blp
from app.api.schedules import blp as schedules_blp
from app.api.secrets import blp as secrets_blp
from app.api.teams import blp as teams_blp
from app.api.tokens import blp as tokens_blp
from app.api.users import blp as users_blp
from app.extensions import api


def init_app(app: Flask) -> None:
    app.config.setdefault("API_TITLE", "Jobplane")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/api")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    api.init_app(app, spec_kwargs={"components": {"securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer", "description": "a personal API token, or an OIDC access token from the configured issuer"}}},
        "security": [{"bearer": []}]})
    api.register_blueprint(jobs_blp)
    api.register_blueprint(executions_blp)
    api.register_blueprint(schedules_blp)
    api.register_blueprint(secrets_blp)
    api.register_blueprint(notifications_blp)
    api.register_blueprint(users_blp)
    api.register_blueprint(teams_blp)
    api.register_blueprint(tokens_blp)
    api.register_blueprint(audit_blp)
    errors.init_app(app)
    idempotency.init_app(app)
    rate_limit.init_app(app)
