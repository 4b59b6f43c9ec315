"""Signing in and out: single sign-on identities mapped to users, API-token sign-in, and the
audit rows of every attempt.

A single sign-on identity is the pair (issuer, ``sub``).  At the first sign-in it is linked to the
user an admin created with the same email (when the provider does not say the email is
unverified), or a new user is created with ``OIDC_DEFAULT_ROLE``.  Failed attempts are committed
at once, on their own: the request that failed rolls back everything else.
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy import func, select

from app.errors import Unauthorized
from app.extensions import db
from app.models import User
from app.models.base import utcnow
from app.services import api_tokens, audit, users
from app.services.actors import SYSTEM, Actor


def _claims_email(claims: dict[str, Any]) -> str | None:
    # Azure AD puts the sign-in name in preferred_username (or upn) when email is absent
    for claim in ("email", "preferred_username", "upn"):
        value = claims.get(claim)
        if isinstance(value, str) and "@" in value:
            return value.strip()
    return None


def user_for_claims(issuer: str, claims: dict[str, Any], *, create: bool) -> User:
    """The active user behind a verified ID or access token's claims.

    Raises:
      Unauthorized: the user is disabled, or unknown and cannot be created (no email, or
        ``create`` is False).
    """
    subject = str(claims["sub"])
    user = db.session.scalar(select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject))
    email = _claims_email(claims)
    if user is None and email and claims.get("email_verified") is not False:
        user = db.session.scalar(select(User).where(func.lower(User.email) == email.lower(),
                                                    User.oidc_subject.is_(None)))
        if user is not None:
            user.oidc_issuer, user.oidc_subject = issuer, subject
            audit.record(actor=SYSTEM, action="user_linked", resource_type="user", resource_id=user.id,
                         changes={"oidc_subject": {"old": None, "new": subject}})
    if user is None:
        if not create or not email:
            raise Unauthorized("no Jobplane user for this identity; sign in to the web UI once, or ask an "
                               "admin to create your user (with your oidc_subject for a service principal)")
        user = users.create_user(actor=SYSTEM, email=email, role=current_app.config["OIDC_DEFAULT_ROLE"],
                                 display_name=claims.get("name"), oidc_issuer=issuer, oidc_subject=subject)
    if not user.is_active:
        raise Unauthorized("this user is disabled; ask an admin")
    return user


def sign_in_with_oidc(*, context: Actor, issuer: str, claims: dict[str, Any]) -> User:
    """The user for a verified ID token, with the sign-in audited (and a failure committed)."""
    try:
        user = user_for_claims(issuer, claims, create=True)
    except Unauthorized as error:
        record_failed_sign_in(context=context, email=_claims_email(claims), reason=error.message)
        raise
    user.last_login_at = utcnow()
    audit.record(actor=_as(context, user), action="login_succeeded", resource_type="user", resource_id=user.id,
                 changes={"method": {"old": None, "new": "oidc"}})
    return user


def sign_in_with_token(*, context: Actor, token: str) -> User:
    """The user holding an API token, for the web sign-in offered when single sign-on is off."""
    try:
        user = api_tokens.authenticate_token(token)
    except Unauthorized as error:
        record_failed_sign_in(context=context, email=None, reason=error.message)
        raise
    user.last_login_at = utcnow()
    audit.record(actor=_as(context, user), action="login_succeeded", resource_type="user", resource_id=user.id,
                 changes={"method": {"old": None, "new": "api_token"}})
    return user


def sign_out(*, actor: Actor) -> None:
    audit.record(actor=actor, action="logout", resource_type="user", resource_id=actor.user.id)


def record_failed_sign_in(*, context: Actor, email: str | None, reason: str) -> None:
    """Audit a failed sign-in and commit it now, whatever the request does next."""
    db.session.rollback()
    known = db.session.scalar(select(User).where(func.lower(User.email) == email.lower())) if email else None
    failed = Actor(user=known, ip_address=context.ip_address, user_agent=context.user_agent,
                   request_id=context.request_id, label=email)
    audit.record(actor=failed, action="login_failed", resource_type="user",
                 resource_id=known.id if known else "unknown", changes={"reason": {"old": None, "new": reason}})
    db.session.commit()


def _as(context: Actor, user: User) -> Actor:
    return Actor(user=user, ip_address=context.ip_address, user_agent=context.user_agent,
                 request_id=context.request_id)
