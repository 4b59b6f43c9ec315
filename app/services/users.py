"""Users and personal API tokens: creation, bootstrap, and authenticating a bearer token."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import select

from app.errors import InvalidInput, Unauthorized
from app.extensions import db
from app.models import ApiToken, User
from app.models.base import utcnow
from app.models.user import ROLES
from app.services import audit
from app.services.actors import SYSTEM, Actor

#: Every token Jobplane issues starts with this, so leaked tokens are easy to scan for.
TOKEN_PREFIX = "jp_"
BOOTSTRAP_ADMIN_EMAIL = "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(*, actor: Actor, email: str, role: str) -> User:
    if role not in ROLES:
        raise InvalidInput({"role": f"must be one of {', '.join(ROLES)}"})
    if not email or len(email) > 255:
        raise InvalidInput({"email": "is required (at most 255 characters)"})
    if db.session.scalar(select(User).where(User.email == email)) is not None:
        raise InvalidInput({"email": f"a user with email {email!r} already exists"})
    user = User(email=email, role=role, is_active=True)
    db.session.add(user)
    db.session.flush()
    audit.record(actor=actor, action="user_created", resource_type="user", resource_id=user.id,
                 changes={"email": {"old": None, "new": email}, "role": {"old": None, "new": role}})
    return user


def issue_token(*, actor: Actor, user: User, name: str, token: str | None = None,
                expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """Create an API token for ``user``; the plain token is returned once and never stored.

    Parameters:
      token: use this value (bootstrap); by default a random one is made.
    """
    plain = token or TOKEN_PREFIX + secrets.token_urlsafe(32)
    if len(plain) < 16:
        raise InvalidInput({"token": "must be at least 16 characters"})
    row = ApiToken(user_id=user.id, name=name, token_hash=hash_token(plain), prefix=plain[:8],
                   expires_at=expires_at)
    db.session.add(row)
    db.session.flush()
    audit.record(actor=actor, action="token_created", resource_type="api_token", resource_id=row.id,
                 changes={"user_id": {"old": None, "new": str(user.id)}, "name": {"old": None, "new": name}})
    return row, plain


def bootstrap_admin(*, token: str | None) -> str | None:
    """Make sure an admin exists; the first start of any process creates one.

    Parameters:
      token: ``JOBPLANE_BOOTSTRAP_ADMIN_TOKEN``; without it a random token is made.

    Returns:
      the new admin's token when one was created (to print once), else None.
    """
    if db.session.scalar(select(User.id).where(User.role == "admin").limit(1)) is not None:
        return None
    user = create_user(actor=SYSTEM, email=BOOTSTRAP_ADMIN_EMAIL, role="admin")
    _, plain = issue_token(actor=SYSTEM, user=user, name="bootstrap", token=token)
    return plain


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
