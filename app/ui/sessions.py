"""Server-side web sessions: the cookie carries only a random id; the data lives in Redis
(production) or the database (standalone).  A session ends ``SESSION_LIFETIME_MINUTES`` after
sign-in (spec: 60 minutes), whatever happens in between.

Only the SHA-256 of the id is used as the key, so a copy of Redis or the table opens no session.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import redis
from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from werkzeug.datastructures import CallbackDict

from app.models import WebSession

COOKIE_NAME = "jobplane_session"
#: a session that has not signed in yet (the sign-in redirect's state) lasts this long
ANONYMOUS_TTL_SECONDS = 600


class SessionStore(Protocol):
    def load(self, key: str) -> dict[str, Any] | None: ...
    def save(self, key: str, data: dict[str, Any], ttl_seconds: int) -> None: ...
    def delete(self, key: str) -> None: ...


class RedisSessionStore:
    def __init__(self, url: str, namespace: str):
        self.client = redis.Redis.from_url(url)
        self.prefix = f"{namespace}:session:"

    def load(self, key):
        raw = self.client.get(self.prefix + key)
        return json.loads(raw) if raw else None

    def save(self, key, data, ttl_seconds):
        self.client.set(self.prefix + key, json.dumps(data), ex=max(1, ttl_seconds))

    def delete(self, key):
        self.client.delete(self.prefix + key)


class DatabaseSessionStore:
    """Sessions in the ``web_sessions`` table, each call its own short transaction (a session is
    saved after the request's own transaction has ended)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def load(self, key):
        now = datetime.now(timezone.utc)
        with self.engine.begin() as connection:
            row = connection.execute(select(WebSession.data, WebSession.expires_at)
                                     .where(WebSession.id_hash == key)).first()
        if row is None or row.expires_at.replace(tzinfo=row.expires_at.tzinfo or timezone.utc) <= now:
            return None
        return json.loads(row.data)

    def save(self, key, data, ttl_seconds):
        now = datetime.now(timezone.utc)
        expires = now + timedelta(seconds=max(1, ttl_seconds))
        with self.engine.begin() as connection:
            connection.execute(delete(WebSession).where(
                (WebSession.id_hash == key) | (WebSession.expires_at <= now)))
            connection.execute(WebSession.__table__.insert().values(
                id_hash=key, data=json.dumps(data), expires_at=expires))

    def delete(self, key):
        with self.engine.begin() as connection:
            connection.execute(delete(WebSession).where(WebSession.id_hash == key))


class ServerSession(CallbackDict, SessionMixin):
    def __init__(self, initial: dict[str, Any] | None = None, sid: str | None = None, new: bool = False):
        def on_update(session):
            session.modified = True

        super().__init__(initial, on_update)
        self.sid = sid or secrets.token_urlsafe(32)
        self.new = new
        self.modified = False
        self.previous_sid: str | None = None

    def regenerate(self) -> None:
        """A new id for the same data: called at sign-in, so an id planted before it is worthless."""
        self.previous_sid, self.sid = self.previous_sid or self.sid, secrets.token_urlsafe(32)
        self.modified = True


def _key(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class ServerSessionInterface(SessionInterface):
    def __init__(self, store: SessionStore, lifetime_seconds: int, secure: bool):
        self.store = store
        self.lifetime_seconds = lifetime_seconds
        self.secure = secure

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        sid = request.cookies.get(COOKIE_NAME)
        if sid and len(sid) < 100:
            data = self.store.load(_key(sid))
            if data is not None and not self._expired(data):
                return ServerSession(data, sid=sid)
            if data is not None:
                self.store.delete(_key(sid))
        return ServerSession(new=True)

    def _expired(self, data: dict[str, Any]) -> bool:
        signed_in_at = data.get("signed_in_at")
        return signed_in_at is not None and time.time() - signed_in_at > self.lifetime_seconds

    def _ttl(self, data: dict[str, Any]) -> int:
        signed_in_at = data.get("signed_in_at")
        if signed_in_at is None:
            return ANONYMOUS_TTL_SECONDS
        return int(self.lifetime_seconds - (time.time() - signed_in_at)) + 1

    def save_session(self, app: Flask, session: ServerSession, response: Response) -> None:
        if session.previous_sid:
            self.store.delete(_key(session.previous_sid))
        if not session:
            if not session.new:
                self.store.delete(_key(session.sid))
                response.delete_cookie(COOKIE_NAME, path="/")
            return
        if not session.modified and not session.new:
            return
        self.store.save(_key(session.sid), dict(session), self._ttl(session))
        response.set_cookie(COOKIE_NAME, session.sid, httponly=True, secure=self.secure, samesite="Lax",
                            path="/")
        response.vary.add("Cookie")


def install(app: Flask) -> None:
    config = app.config
    if config["ENV"] == "standalone":
        store: SessionStore = DatabaseSessionStore(app.extensions["jobplane_db"].engine)
    else:
        store = RedisSessionStore(config["REDIS_URL"], config["QUEUE_NAMESPACE"])
    secure = bool(config.get("BASE_URL") and config["BASE_URL"].startswith("https://"))
    app.session_interface = ServerSessionInterface(store, config["SESSION_LIFETIME_MINUTES"] * 60, secure)
