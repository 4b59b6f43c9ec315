"""Users: creating, reading, changing roles and teams, disabling; and the first admin."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from sqlalchemy import func, select

from app.errors import Conflict, InvalidInput, NotFound
from app.extensions import db
from app.models import Team, User
from app.models.user import ROLES
from app.services import access, audit
from app.services.actors import SYSTEM, Actor
from app.services.api_tokens import issue_token
from app.services.jobs import sort_order

BOOTSTRAP_ADMIN_EMAIL = "admin"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_EDITABLE = ("role", "team_id", "is_active", "display_name")


def create_user(*, actor: Actor, email: str, role: str, team_id: UUID | None = None,
                display_name: str | None = None, oidc_issuer: str | None = None,
                oidc_subject: str | None = None) -> User:
    """Create a user (admins; Jobplane itself at bootstrap and first sign-in).

    ``oidc_subject`` links the user to a single sign-on identity ahead of their first sign-in,
    e.g. a pipeline's service principal that calls the API with OIDC access tokens.
    """
    access.require_admin(actor, "create users")
    errors: dict[str, str] = {}
    if role not in ROLES:
        errors["role"] = f"must be one of {', '.join(ROLES)}"
    if not isinstance(email, str) or not email or len(email) > 255 or \
            (email != BOOTSTRAP_ADMIN_EMAIL and not _EMAIL.match(email)):
        errors["email"] = "must be an email address (at most 255 characters)"
    elif db.session.scalar(select(User.id).where(func.lower(User.email) == email.lower())) is not None:
        errors["email"] = f"a user with email {email!r} already exists"
    if team_id is not None and db.session.get(Team, team_id) is None:
        errors["team_id"] = f"no team {team_id}; create it first (POST /api/v1/teams)"
    if oidc_subject is not None and (not isinstance(oidc_subject, str) or not 0 < len(oidc_subject) <= 255):
        errors["oidc_subject"] = "must be the identity provider's subject (sub claim), 1 to 255 characters"
    elif oidc_subject is not None and not oidc_issuer:  # sign-in matches (issuer, subject): it would never match
        errors["oidc_subject"] = "single sign-on is not configured (JOBPLANE_OIDC_ISSUER): no identity to link to"
    if errors:
        raise InvalidInput(errors)
    user = User(email=email, role=role, team_id=team_id, display_name=display_name, is_active=True,
                oidc_issuer=oidc_issuer if oidc_subject else None, oidc_subject=oidc_subject)
    db.session.add(user)
    db.session.flush()
    audit.record(actor=actor, action="user_created", resource_type="user", resource_id=user.id,
                 changes={"role": {"old": None, "new": role},
                          "team_id": {"old": None, "new": audit.jsonable(team_id)},
                          "oidc_subject": {"old": None, "new": oidc_subject}})
    return user


def get_user(*, actor: Actor, user_id: UUID) -> User:
    """A user: admins see everyone, others only themselves."""
    if actor.user is None or actor.user.id != user_id:
        access.require_admin(actor, "see other users")
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def find_by_email(email: str) -> User:
    """The user with this email (any case), for the admin CLI.

    Raises:
      NotFound: no such user.
    """
    user = db.session.scalar(select(User).where(func.lower(User.email) == email.lower()))
    if user is None:
        raise NotFound(f"no user with email {email!r}; create it with `jobplane users create`")
    return user


#: ``sort`` of user lists: a field, ``-`` first for descending; ties are broken by id.
USER_SORT_FIELDS = ("email", "created_at", "last_login_at", "role")


def list_users(*, actor: Actor, limit: int = 100, offset: int = 0, role: str | None = None,
               team_id: UUID | None = None, search: str | None = None,
               sort: str = "email") -> tuple[list[User], int]:
    """Users (admins only), filtered and sorted (default by email), and how many match.

    Parameters:
      role: only users of this role; team_id: only members of this team.
      search: a part of the email or display name, in any case.

    Raises:
      Forbidden: the actor is not an admin.
      InvalidInput: an unknown role or sort field (the allowed ones are listed).
    """
    access.require_admin(actor, "list users")
    errors: dict[str, str] = {}
    if role is not None and role not in ROLES:
        errors["role"] = f"unknown role {role!r}; use one of {', '.join(ROLES)}"
    order = sort_order(sort, {field: getattr(User, field) for field in USER_SORT_FIELDS}, User.id, errors)
    if errors:
        raise InvalidInput(errors)
    query = select(User)
    if role is not None:
        query = query.where(User.role == role)
    if team_id is not None:
        query = query.where(User.team_id == team_id)
    if search:
        pattern = search.lower()
        query = query.where(func.lower(User.email).contains(pattern, autoescape=True)
                            | func.lower(func.coalesce(User.display_name, "")).contains(pattern, autoescape=True))
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.order_by(*order).limit(limit).offset(offset)).all()
    return list(rows), total


def update_user(*, actor: Actor, user_id: UUID, changes: dict[str, Any]) -> User:
    """Change a user's role, team, active flag or display name (admins only).

    Raises:
      InvalidInput: an unknown field or a bad value.
      Conflict: the change would leave no active admin.
    """
    access.require_admin(actor, "change users")
    user = get_user(actor=actor, user_id=user_id)
    unknown = set(changes) - set(_EDITABLE)
    if unknown:
        raise InvalidInput({field: f"unknown field; change one of {', '.join(_EDITABLE)}" for field in unknown})
    if "role" in changes and changes["role"] not in ROLES:
        raise InvalidInput({"role": f"must be one of {', '.join(ROLES)}"})
    if changes.get("team_id") is not None and db.session.get(Team, changes["team_id"]) is None:
        raise InvalidInput({"team_id": f"no team {changes['team_id']}"})
    stays_admin = changes.get("role", user.role) == "admin" and changes.get("is_active", user.is_active)
    if user.role == "admin" and user.is_active and not stays_admin:
        require_another_admin(user)
    diff = {field: {"old": audit.jsonable(getattr(user, field)), "new": audit.jsonable(value)}
            for field, value in changes.items() if getattr(user, field) != value}
    for field, value in changes.items():
        setattr(user, field, value)
    if diff:
        action = "user_role_changed" if set(diff) == {"role"} else "user_updated"
        audit.record(actor=actor, action=action, resource_type="user", resource_id=user.id, changes=diff)
    return user


def require_another_admin(user: User) -> None:
    # every active admin is locked, in one order: two admins demoting each other at once are
    # serialized, and the second sees the first's change
    admins = db.session.scalars(select(User.id).where(User.role == "admin", User.is_active.is_(True))
                                .order_by(User.id).with_for_update()).all()
    if not [admin_id for admin_id in admins if admin_id != user.id]:
        raise Conflict("this is the last active admin; make another user admin first")


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
