"""Idempotency keys (spec §3.8: "idempotent API operations to prevent duplicate job creation").

A client sends ``Idempotency-Key: <key>`` with ``POST /jobs`` or ``POST /jobs/{id}/run`` and
the same key with every retry. The first request *reserves* the key; its successful response
is stored with the change it made, in the same transaction; a retry with the same method, path
and body gets that response again and changes nothing. The same key with another request is
refused, and a retry while the first is still running is told to come back (409), so two
concurrent duplicates never both create.

The reservation is the one write here that does not wait for the request's commit: it is
committed at once, on a connection of its own, because the point is that a concurrent duplicate
sees it while the first request is still running. An error response stores nothing (its
transaction rolled back, so nothing changed) and the key is released for a corrected retry.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.errors import Conflict, InvalidInput
from app.extensions import db
from app.models import IdempotencyKey
from app.models.base import new_id, utcnow

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
#: A reservation this old whose request never finished (its process died): a retry may take it over.
STALE_RESERVATION = timedelta(minutes=2)
#: Response headers worth replaying: what the body is, and where and which version it is.
REPLAYED_HEADERS = ("Content-Type", "Location", "ETag")


@dataclass(frozen=True)
class Reservation:
    """The key a request holds while it runs."""

    id: UUID
    holder: str


@dataclass(frozen=True)
class StoredResponse:
    """The first request's response, to answer a retry with."""

    status: int
    headers: dict[str, str]
    body: bytes


def check_key(key: str) -> str:
    """The key, if it is 1 to 255 printable ASCII characters.

    Raises:
      InvalidInput: named after the header, with what a good key is.
    """
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key) or not key.strip():
        raise InvalidInput({HEADER: f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters, e.g. a UUID "
                                    "made for this request and sent again with each retry of it"})
    return key


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What "the same request" means: method, path and body. A JSON body is compared by its
    content, so a retry that orders keys or spaces differently is still the same request."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(canonical)
    return digest.hexdigest()


def reserve(*, user_id: UUID, key: str, route: str, request_fingerprint: str, ttl: timedelta,
            now: datetime | None = None) -> Reservation | StoredResponse:
    """Reserve ``key`` for this request, or find how an earlier request with it went.

    Committed at once on its own connection (see the module's docstring).

    Returns:
      a Reservation: this request is the first (or the earlier one expired or died); run it.
      a StoredResponse: the same request succeeded before; answer with its response.

    Raises:
      InvalidInput: the key was used with a different method, path or body.
      Conflict: the first request with this key is still running; retry in a moment.
    """
    now = now or utcnow()
    holder = secrets.token_hex(16)
    with db.engine.begin() as connection:
        for _ in range(2):  # a second round after removing an expired or stale row
            if _insert(connection, user_id=user_id, key=key, route=route, fingerprint=request_fingerprint,
                       holder=holder, now=now, ttl=ttl):
                row_id = connection.scalar(select(IdempotencyKey.id).where(IdempotencyKey.user_id == user_id,
                                                                            IdempotencyKey.key == key))
                return Reservation(id=row_id, holder=holder)
            row = connection.execute(select(IdempotencyKey.__table__)
                                     .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)).first()
            if row is None:
                continue  # released meanwhile
            if row.expires_at <= now or (row.status == "in_progress" and row.created_at <= now - STALE_RESERVATION):
                connection.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row.id,
                                                                IdempotencyKey.holder == row.holder))
                continue
            if row.fingerprint != request_fingerprint:
                raise InvalidInput({HEADER: f"this key was already used for a different request ({row.route}, or "
                                            "another body); use a new key for a new request"})
            if row.status == "in_progress":
                raise Conflict(f"a request with this {HEADER} is still in progress; retry in a moment to get "
                               "its response")
            return StoredResponse(status=row.response_status, headers=dict(row.response_headers or {}),
                                  body=bytes(row.response_body or b""))
    raise Conflict(f"the {HEADER} is being reserved and released by other requests at once; retry in a moment")


def _insert(connection, *, user_id: UUID, key: str, route: str, fingerprint: str, holder: str,
            now: datetime, ttl: timedelta) -> bool:
    """Insert the reservation unless the key exists; True if it was inserted.

    ON CONFLICT DO NOTHING rather than catching the unique violation: a failed INSERT would abort
    the transaction on PostgreSQL, and this one goes on to read the row that is there.
    """
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    values = IdempotencyKey.__table__.c
    statement = dialect.insert(IdempotencyKey.__table__).values({
        values.id: new_id(), values.user_id: user_id, values.key: key, values.route: route[:255],
        values.fingerprint: fingerprint, values.status: "in_progress", values.holder: holder,
        values.created_at: now, values.expires_at: now + ttl,
    }).on_conflict_do_nothing(index_elements=["user_id", "key"])
    return connection.execute(statement).rowcount == 1


def complete(*, reservation: Reservation, status: int, headers: dict[str, str], body: bytes, ttl: timedelta) -> None:
    """Store the successful response with the request's own changes (flushed, committed with them),
    so a retry finds both or neither.

    Raises:
      Conflict: the reservation was taken over meanwhile (this request outlived STALE_RESERVATION).
    """
    result = db.session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == reservation.id, IdempotencyKey.holder == reservation.holder,
               IdempotencyKey.status == "in_progress")
        .values(status="completed", response_status=status, response_body=body,
                response_headers={name: value for name, value in headers.items() if name in REPLAYED_HEADERS},
                expires_at=utcnow() + ttl)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise Conflict(f"this request took so long that a retry with the same {HEADER} took it over; "
                       "send the request again")


def release(reservation: Reservation) -> None:
    """Forget a reservation whose request did not complete (an error, a rollback): nothing was
    changed, so the client may retry with the same key. A completed key is left alone.

    Runs on its own connection, after the request's transaction has ended.
    """
    with db.engine.begin() as connection:
        connection.execute(delete(IdempotencyKey).where(IdempotencyKey.id == reservation.id,
                                                        IdempotencyKey.holder == reservation.holder,
                                                        IdempotencyKey.status == "in_progress"))


def prune_expired(*, now: datetime | None = None) -> int:
    """Remove the keys past their time (the scheduler leader, hourly); returns how many."""
    return db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= (now or utcnow()))
                              .execution_options(synchronize_session=False)).rowcount
