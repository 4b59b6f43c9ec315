"""The REST API (flask-smorest): thin resources that parse, authorize, call a service, render."""

from __future__ import annotations

from flask import Flask

from app.api import docs, errors, idempotency, openapi, rate_limit
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

API_DESCRIPTION = """Jobplane's REST API: jobs, their runs and logs, secrets, notifications, users, teams,
API tokens and the audit trail.

Every operation needs a bearer token (`Authorization: Bearer <token>`): a personal API token
(`POST /api/v1/tokens`, or `jobplane tokens create`) or an OIDC access token from the configured
issuer. Each operation's description says which role it requires: `admin`, `job_creator` or
`team_viewer`. Objects you may not see answer 404; objects you may see but not change answer 403.

Every error has one JSON body: `code`, `status`, `message` (what to do), and for invalid input
`errors`, naming each field. Each user may make `JOBPLANE_API_RATE_LIMIT` requests a minute
(100 by default); past it, 429 with `Retry-After`. Lists are paginated with `page` and
`page_size`; the `X-Pagination` header gives the total and a `Link` header the neighbouring pages.

This document and its Swagger UI (`/api/docs`) are readable without signing in: they describe
the API and hold no data.
"""


def init_app(app: Flask) -> None:
    app.config.setdefault("API_TITLE", "Jobplane")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/api")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("API_SPEC_OPTIONS", {"info": {"description": API_DESCRIPTION}})
    # Every error body, documented or not, has the shape app/api/errors.py writes
    api.ERROR_SCHEMA = openapi.ErrorSchema
    # No catch-all "default" response: each operation lists the errors it really answers, so a
    # client (and schemathesis) can tell an undocumented status from a documented one
    api.DEFAULT_ERROR_RESPONSE_NAME = None
    api.init_app(app, spec_kwargs={"components": {"securitySchemes": {
        openapi.BEARER: {"type": "http", "scheme": "bearer", "description": "a personal API token, or an OIDC access token from the configured issuer"}}},
        "security": [{openapi.BEARER: []}]})
    openapi.init_spec(api)
    api.register_blueprint(jobs_blp)
    api.register_blueprint(executions_blp)
    api.register_blueprint(schedules_blp)
    api.register_blueprint(secrets_blp)
    api.register_blueprint(notifications_blp)
    api.register_blueprint(users_blp)
    api.register_blueprint(teams_blp)
    api.register_blueprint(tokens_blp)
    api.register_blueprint(audit_blp)
    docs.init_app(app)
    errors.init_app(app)
    idempotency.init_app(app)
    rate_limit.init_app(app)
