"""Jobplane's errors as JSON problem bodies, in the same shape as flask-smorest's own:
``{"code": 422, "status": "Unprocessable Entity", "message": "...", "errors": {"json": {...}}}``.
"""

from __future__ import annotations

from http import HTTPStatus

from flask import Flask, jsonify

from app.errors import InvalidInput, JobplaneError


def init_app(app: Flask) -> None:
    app.register_error_handler(JobplaneError, _render)


def _render(error: JobplaneError):
    body = {"code": error.status_code, "status": HTTPStatus(error.status_code).phrase,
            "message": error.message}
    if isinstance(error, InvalidInput):
        body["errors"] = {"json": error.errors}
    if getattr(error, "current_version", None) is not None:
        body["current_version"] = error.current_version
    response = jsonify(body)
    response.status_code = error.status_code
    if error.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="jobplane"'
    return response
