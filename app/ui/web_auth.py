"""Who is signed in to the web UI: the actor of each UI request, from the server-side session."""

from __future__ import annotations

import time
import uuid

from flask import g, request, session

from app.extensions import db
from app.models import User
from app.services.actors import Actor


def request_context() -> Actor:
    """The request's facts (address, user agent, request id) with no user yet."""
    return Actor(user=None, ip_address=request.remote_addr, user_agent=request.headers.get("User-Agent"),
                 request_id=request.headers.get("X-Request-ID") or uuid.uuid4().hex)


def web_actor() -> Actor | None:
    """The signed-in, still active user of this request as an actor, or None."""
    if "web_actor" in g:
        return g.web_actor
    actor = None
    user_id = session.get("user_id")
    if user_id:
        user = db.session.get(User, uuid.UUID(user_id))
        if user is not None and user.is_active:
            context = request_context()
            actor = Actor(user=user, ip_address=context.ip_address, user_agent=context.user_agent,
                          request_id=context.request_id)
        else:
            session.clear()
    g.web_actor = actor
    return actor


def start_session(user: User, *, id_token: str | None = None) -> None:
    """Bind the session to ``user`` under a fresh id; its lifetime starts now."""
    session.clear()
    session.regenerate()
    session["user_id"] = str(user.id)
    session["signed_in_at"] = time.time()
    if id_token:
        session["id_token"] = id_token
    g.pop("web_actor", None)
