"""Bearer-token authentication for every API route."""

from __future__ import annotations

import uuid

from flask import g, request

from app.errors import Unauthorized
from app.services import users
from app.services.actors import Actor


def authenticate_request() -> None:
    """``before_request`` of the API blueprints: no valid bearer token, no access."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send an API token: 'Authorization: Bearer <token>'")
    user = users.authenticate_token(token.strip())
    g.actor = Actor(user=user, ip_address=request.remote_addr,
                    user_agent=request.headers.get("User-Agent"),
                    request_id=request.headers.get("X-Request-ID") or uuid.uuid4().hex)


def current_actor() -> Actor:
    return g.actor
