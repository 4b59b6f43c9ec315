"""How many API requests a user may make (spec: 100 a minute, ``JOBPLANE_API_RATE_LIMIT``).

A request is counted once its caller is known, by ``authenticate_request``: against the user's
budget, wherever they call from (a CI runner and a laptop share one; colleagues behind one
proxy do not). A request whose credentials fail counts against its client address instead, so
guessing tokens is limited too. One budget covers every route; ``/health`` and the OpenAPI
document authenticate nobody and are not counted. The counts live in Redis, shared by every web
process (in memory in standalone mode, which is one process, and while Redis is unreachable).

Over the limit: ``429`` with ``Retry-After`` (seconds) and the API's JSON error body. Every counted
response carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``.
"""

from __future__ import annotations

import math
import time

from flask import Flask, current_app, g
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from flask_limiter.util import get_remote_address

from app.errors import TooManyRequests

_EXTENSION = "jobplane_api_rate_limit"


def init_app(app: Flask) -> None:
    # Registered before the limiter's own after_request, so it runs after it (Flask runs them in
    # reverse): it has the last word on Retry-After.
    app.after_request(_retry_after)
    storage = "memory://" if app.config["ENV"] == "standalone" else app.config["REDIS_URL"]
    # Redis unreachable: each process counts in its own memory until Redis is back, rather than
    # every API request failing
    limiter = Limiter(_caller, app=app, storage_uri=storage, headers_enabled=True, in_memory_fallback_enabled=True,
                      key_prefix=f"{app.config['QUEUE_NAMESPACE']}:api-limits")
    # One budget for all routes ("shared"), read from the settings at each request.
    budget = limiter.shared_limit(lambda: current_app.config["API_RATE_LIMIT"], scope="api")
    app.extensions[_EXTENSION] = (limiter, budget(_counted))


def count_request() -> None:
    """Count the current API request against its caller's budget: the authenticated user's, or
    (before or without authentication) the client address's.

    Raises:
      TooManyRequests: the budget is spent; the response's ``Retry-After`` says for how long.
    """
    limiter, count = current_app.extensions[_EXTENSION]
    g.api_rate_limited = False
    try:
        count()
    except RateLimitExceeded as exceeded:
        wait = max(1, math.ceil(limiter.current_limit.window.reset_time - time.time()))
        g.api_rate_limited = wait
        whose = "your user" if _user_id() else f"requests from {get_remote_address()} without a valid token"
        raise TooManyRequests(f"too many requests: {whose} may make {exceeded.limit.limit}; try again in "
                              f"{wait} s") from None


def _counted() -> None:
    """What the limiter wraps: calling the wrapper is one request counted (or refused)."""


def _caller() -> str:
    user_id = _user_id()
    return f"user:{user_id}" if user_id else f"address:{get_remote_address()}"


def _user_id() -> str | None:
    actor = g.get("actor")
    return str(actor.user.id) if actor is not None and actor.user is not None else None


def _retry_after(response):
    """``Retry-After`` on a refused request only (Flask-Limiter would put it on every counted one)."""
    if "api_rate_limited" in g:
        if g.api_rate_limited and response.status_code == 429:
            response.headers["Retry-After"] = str(g.api_rate_limited)
        else:
            response.headers.pop("Retry-After", None)
    return response
