"""Errors of the web UI's pages as HTML pages; the API, websockets and scripts keep JSON."""

from __future__ import annotations

from http import HTTPStatus

from flask import render_template, request


def wanted() -> bool:
    """A browser asking for a page (not the API, not a websocket, not a script) gets HTML."""
    if request.path.startswith(("/api/", "/ws/")) or request.path in ("/health", "/ready", "/metrics"):
        return False
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html" or bool(request.headers.get("HX-Request"))


def render(status: int, message: str | None):
    return render_template("error.html", status=status, phrase=HTTPStatus(status).phrase,
                           message=message), status
