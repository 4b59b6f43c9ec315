"""Jobplane's errors as JSON problem bodies, in the same shape as flask-smorest's own:
``{"code": 422, "status": "Unprocessable Entity", "message": "...", "errors": {"json": {...}}}``.

Every error of every route has that body and a message saying what to do: Jobplane's own errors,
HTTP errors (an unknown route, a wrong method, a body too large, a rate limit) and unexpected
exceptions, which are logged with their traceback and answered with a request id, never with
the exception's text.
"""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from app.errors import InvalidInput, JobplaneError
from app.ui import error_pages

logger = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    app.register_error_handler(JobplaneError, _render)
    app.register_error_handler(HTTPException, _render_http)
    app.register_error_handler(Exception, _render_unexpected)


def _http_message(error: HTTPException) -> str | None:
    """What to do about a plain HTTP error, where werkzeug's text is only the status."""
    if error.code == 404:
        return f"no route {request.method} {request.path}; the API's routes are listed in /api/openapi.json"
    if error.code == 405:
        allowed = ", ".join(error.valid_methods or ()) if getattr(error, "valid_methods", None) else "another method"
        return f"{request.path} does not take {request.method}; use {allowed}"
    if error.code == 413:
        return (f"the request body is larger than {current_app.config['MAX_BODY_BYTES']} bytes "
                "(JOBPLANE_MAX_BODY_BYTES)")
    return None


def _render_http(error: HTTPException):
    """HTTP errors in the JSON shape, keeping what flask-smorest put in (field errors, headers)."""
    data = getattr(error, "data", None) or {}
    body = {"code": error.code, "status": HTTPStatus(error.code).phrase}
    message = data.get("message") or _http_message(error) or (error.description if error.code != 500 else None)
    if error_pages.wanted():
        page = error_pages.render(error.code, message if error.code != 404 else "There is no such page.")
        return page[0], page[1], {k: v for k, v in error.get_response().headers.items() if k in ("Allow", "Retry-After")}
    if message:
        body["message"] = message
    if "errors" in data or "messages" in data:
        body["errors"] = data.get("errors") or data.get("messages")
    response = jsonify(body)
    response.status_code = error.code
    for name, value in (error.get_response().headers.items()):
        if name in ("Allow", "Retry-After", "WWW-Authenticate") or name.startswith("X-RateLimit"):
            response.headers[name] = value
    for name, value in (data.get("headers") or {}).items():
        response.headers[name] = value
    return response


def _render_unexpected(error: Exception):
    """A bug or an outage: logged in full, answered with an id to quote, no internals."""
    if isinstance(error, HTTPException):  # raised as such by a library below the handlers
        return _render_http(error)
    reference = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    logger.exception("unexpected error on %s %s (request %s)", request.method, request.path, reference)
    if error_pages.wanted():
        return error_pages.render(500, f"Something went wrong on our side; it is logged as request {reference}.")
    response = jsonify(code=500, status="Internal Server Error",
                       message=f"something went wrong on our side; it is logged as request {reference}")
    response.status_code = 500
    return response


def _render(error: JobplaneError):
    if error_pages.wanted():
        return error_pages.render(error.status_code, error.message)
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
