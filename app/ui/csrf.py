"""CSRF protection for every state-changing request to the web UI (the API takes bearer tokens
only, which a browser never sends by itself, so it needs none).

The token is kept in the server-side session; forms send it as ``csrf_token``, HTMX and scripts
as the ``X-CSRF-Token`` header (``static/app.js`` adds it to every HTMX request).
"""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, abort, request, session

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
HEADER = "X-CSRF-Token"
FIELD = "csrf_token"


def csrf_token() -> str:
    """The session's token, made on first use (templates call it as ``csrf_token()``)."""
    token = session.get(FIELD)
    if not token:
        token = session[FIELD] = secrets.token_urlsafe(32)
    return token


def _check() -> None:
    if request.method in SAFE_METHODS or request.path.startswith("/api/"):
        return
    expected = session.get(FIELD)
    sent = request.headers.get(HEADER) or request.form.get(FIELD)
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        abort(400, description="the form's CSRF token is missing or stale: reload the page and try again")


def install(app: Flask) -> None:
    app.before_request(_check)
    app.jinja_env.globals["csrf_token"] = csrf_token
