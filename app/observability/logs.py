"""Log lines: one JSON object each (web, scheduler, worker) or plain text (standalone), carrying the
request id, job id and execution id, and never a secret.

The ids come from where the work is: the request (``X-Request-ID``, or one made up), and the run a
worker thread is handling (``bind_run``).  Every message goes through the current run's secret
masker, then through patterns for credentials that may appear anywhere (bearer tokens, Jobplane
API tokens, passwords in URLs).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import uuid
from datetime import datetime, timezone
from typing import Any

from flask import Flask, g, has_request_context, request

#: the run the current thread (or greenlet) works on: (job id, execution id, secret masker)
_RUN: contextvars.ContextVar[tuple[str | None, str | None, Any] | None] = contextvars.ContextVar(
    "jobplane_run", default=None)
#: an ``X-Request-ID`` is taken as given only if it looks like an id (it is echoed into logs)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: credentials that may show up in any message, with what they become
_CREDENTIALS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ********"),
    (re.compile(r"\bjp_[A-Za-z0-9_-]{8,}"), "jp_********"),
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+@"), r"\1********@"),
    (re.compile(r"(?i)\b(password|passwd|secret|token|api_key|apikey)(\s*[=:]\s*)(\"?)[^\s\"',;&]+"),
     r"\1\2\3********"),
)


def scrub(text: str) -> str:
    """``text`` with the current run's secret values and any credential-looking value masked."""
    run = _RUN.get()
    if run is not None and run[2] is not None:
        text = run[2].mask(text)
    for pattern, replacement in _CREDENTIALS:
        text = pattern.sub(replacement, text)
    return text


def bind_run(*, job_id: Any, execution_id: Any, masker: Any = None) -> None:
    """Say which run the current thread works on, until the next ``bind_run`` or ``clear_run``."""
    _RUN.set((str(job_id) if job_id else None, str(execution_id) if execution_id else None, masker))


def clear_run() -> None:
    _RUN.set(None)


def current_run() -> tuple[str | None, str | None, Any]:
    return _RUN.get() or (None, None, None)


def request_id() -> str | None:
    if has_request_context():
        return g.get("request_id")
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, process and the ids in context."""

    def __init__(self, process_kind: str):
        super().__init__()
        self.process_kind = process_kind

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": scrub(record.getMessage()),
            "process": self.process_kind, "pid": record.process,
        }
        job_id, execution_id, _ = current_run()
        for key, value in (("request_id", request_id()), ("job_id", job_id), ("execution_id", execution_id)):
            if value:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For people: the usual line, with the ids in brackets when there are any."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        job_id, execution_id, _ = current_run()
        ids = " ".join(f"{k}={v}" for k, v in (("request", request_id()), ("job", job_id),
                                                ("execution", execution_id)) if v)
        line = scrub(super().format(record))
        return f"{line} [{ids}]" if ids else line


def configure(*, level: str, log_format: str, process_kind: str) -> None:
    """Format every log line of this process: the root logger's handlers (Dramatiq's, in a worker),
    or one on stderr."""
    formatter = JsonFormatter(process_kind) if log_format == "json" else TextFormatter()
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(level)


def init_app(app: Flask) -> None:
    """Give each request an id (its ``X-Request-ID`` if it has a sane one) and send it back."""
    app.wsgi_app = _RequestId(app.wsgi_app)
    app.before_request(_take_request_id)
    app.after_request(_echo_request_id)


class _RequestId:
    """Settles the request's id before Flask sees the request, so that everything reading
    ``X-Request-ID`` (the audit trail, error pages, the logs) agrees on one id."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if not _REQUEST_ID.match(environ.get("HTTP_X_REQUEST_ID", "")):
            environ["HTTP_X_REQUEST_ID"] = uuid.uuid4().hex
        return self.wsgi_app(environ, start_response)


def _take_request_id() -> None:
    g.request_id = request.headers["X-Request-ID"]


def _echo_request_id(response):
    if "request_id" in g:
        response.headers["X-Request-ID"] = g.request_id
    return response
