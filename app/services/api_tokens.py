"""Personal API tokens: issued once in plain, stored as SHA-256 only, with expiry, revocation
and last-used time."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import func, select

from app.errors import InvalidInput, NotFound, Unauthorized
from app.extensions import db
from app.models import ApiToken, User
from app.models.base import utcnow
from app.services import access, audit
from app.services.actors import Actor

#: Every token Jobplane issues starts with this, so leaked tokens are easy to scan for.
TOKEN_PREFIX = "jp_"
MAX_LIFETIME_DAYS = 365
DEFAULT_LIFETIME_DAYS = 90


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(*, actor: Actor, user: User, name: str, token: str | None = None,
                expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """Create an API token for ``user``; the plain token is returned once and never stored.

    Parameters:
      token: use this value (bootstrap); by default a random one is made.
      expires_at: None for a token that never expires (only Jobplane itself issues those).
    """
    if not actor.system and (actor.user is None or actor.user.id != user.id):
        access.require_admin(actor, "issue tokens for other users")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise InvalidInput({"name": "is required: 1 to 100 characters that tell this token apart"})
    plain = token or TOKEN_PREFIX + secrets.token_urlsafe(32)
    if len(plain) < 16:
        raise InvalidInput({"token": "must be at least 16 characters"})
    row = ApiToken(user_id=user.id, name=name.strip(), token_hash=hash_token(plain), prefix=plain[:8],
                   expires_at=expires_at)
    db.session.add(row)
    db.session.flush()
    audit.record(actor=actor, action="token_created", resource_type="api_token", resource_id=row.id,
                 changes={"user_id": {"old": None, "new": str(user.id)}, "name": {"old": None, "new": row.name},
                          "expires_at": {"old": None, "new": audit.jsonable(expires_at)}})
    return row, plain


def issue_own_token(*, actor: Actor, name: str, expires_in_days: int | None) -> tuple[ApiToken, str]:
    """``POST /api/v1/tokens``: a token for the caller, expiring in 1–365 days (default 90)."""
    days = DEFAULT_LIFETIME_DAYS if expires_in_days is None else expires_in_days
    if not isinstance(days, int) or not 1 <= days <= MAX_LIFETIME_DAYS:
        raise InvalidInput({"expires_in_days": f"must be a whole number of days from 1 to {MAX_LIFETIME_DAYS}"})
    return issue_token(actor=actor, user=actor.user, name=name, expires_at=utcnow() + timedelta(days=days))


def list_own_tokens(*, actor: Actor) -> list[ApiToken]:
    return list(db.session.scalars(select(ApiToken).where(ApiToken.user_id == actor.user.id)
                                   .order_by(ApiToken.created_at.desc(), ApiToken.id)))


def list_user_tokens(*, actor: Actor, user: User) -> list[ApiToken]:
    """The tokens of ``user``, newest first (never their values): their own, or anyone's for an admin."""
    if not actor.system and (actor.user is None or actor.user.id != user.id):
        access.require_admin(actor, "list other users' tokens")
    return list(db.session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                                   .order_by(ApiToken.created_at.desc(), ApiToken.id)))


def list_own_tokens_page(*, actor: Actor, limit: int = 100, offset: int = 0) -> tuple[list[ApiToken], int]:
    """A page of the actor's tokens, newest first (ties by id), and how many they have."""
    query = select(ApiToken).where(ApiToken.user_id == actor.user.id)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.order_by(ApiToken.created_at.desc(), ApiToken.id).limit(limit).offset(offset))
    return list(rows), total


def revoke_token(*, actor: Actor, token_id: UUID) -> ApiToken:
    """Revoke a token: the caller's own, or anyone's for an admin. Revoking twice changes nothing.

    Raises:
      NotFound: no such token among those the actor may manage.
    """
    row = db.session.get(ApiToken, token_id)
    mine = row is not None and actor.user is not None and row.user_id == actor.user.id
    if row is None or not (mine or actor.system or (actor.user and actor.user.role == "admin")):
        raise NotFound(f"token {token_id} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(actor=actor, action="token_revoked", resource_type="api_token", resource_id=row.id,
                     changes={"revoked_at": {"old": None, "new": audit.jsonable(row.revoked_at)}})
    return row


def authenticate_token(token: str) -> User:
    """The active user holding this API token, recording when it was last used.

    Raises:
      Unauthorized: unknown, expired or revoked token, or a disabled user.
    """
    row = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    now = utcnow()
    if row is None or row.revoked_at is not None or (row.expires_at and row.expires_at <= now):
        raise Unauthorized("invalid, expired or revoked API token")
    if not row.user.is_active:
        raise Unauthorized("this user is disabled")
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now  # at most once a minute: a read should not cost a write each time
    return row.user
