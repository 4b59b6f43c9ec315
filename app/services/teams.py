"""Teams: the unit of sharing. Team viewers see the jobs of their team (admins manage teams)."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import func, select

from app.errors import InvalidInput, NotFound
from app.extensions import db
from app.models import Team, User
from app.services import access, audit
from app.services.actors import Actor


def _check_name(name: object, *, current: Team | None = None) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise InvalidInput({"name": "is required: 1 to 255 characters"})
    name = name.strip()
    clash = db.session.scalar(select(Team).where(func.lower(Team.name) == name.lower()))
    if clash is not None and clash is not current:
        raise InvalidInput({"name": f"a team named {name!r} already exists"})
    return name


def create_team(*, actor: Actor, name: str) -> Team:
    access.require_admin(actor, "create teams")
    team = Team(name=_check_name(name))
    db.session.add(team)
    db.session.flush()
    audit.record(actor=actor, action="team_created", resource_type="team", resource_id=team.id,
                 changes={"name": {"old": None, "new": team.name}})
    return team


def get_team(*, actor: Actor, team_id: UUID) -> Team:
    """A team: admins see every team, others only their own."""
    if actor.user is None or actor.user.team_id != team_id:
        access.require_admin(actor, "see other teams")
    team = db.session.get(Team, team_id)
    if team is None:
        raise NotFound(f"team {team_id} not found")
    return team


def find_by_name(name: str) -> Team:
    """The team with this name (any case), for the admin CLI.

    Raises:
      NotFound: no such team.
    """
    team = db.session.scalar(select(Team).where(func.lower(Team.name) == name.strip().lower()))
    if team is None:
        raise NotFound(f"no team named {name!r}; create it with `jobplane teams create`")
    return team


def member_counts() -> dict[UUID, int]:
    """How many users each team has (teams without members are absent)."""
    return dict(db.session.execute(select(User.team_id, func.count()).where(User.team_id.is_not(None))
                                   .group_by(User.team_id)).all())


def list_teams(*, actor: Actor) -> list[Team]:
    access.require_admin(actor, "list teams")
    return list(db.session.scalars(select(Team).order_by(Team.name, Team.id)))


def list_teams_page(*, actor: Actor, limit: int = 100, offset: int = 0,
                    search: str | None = None) -> tuple[list[Team], int]:
    """A page of the teams (admins), by name, and how many match; ``search``: a part of the name."""
    access.require_admin(actor, "list teams")
    query = select(Team)
    if search:
        query = query.where(func.lower(Team.name).contains(search.lower(), autoescape=True))
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.order_by(Team.name, Team.id).limit(limit).offset(offset)).all()
    return list(rows), total


def rename_team(*, actor: Actor, team_id: UUID, name: str) -> Team:
    access.require_admin(actor, "rename teams")
    team = get_team(actor=actor, team_id=team_id)
    new_name = _check_name(name, current=team)
    if new_name != team.name:
        audit.record(actor=actor, action="team_renamed", resource_type="team", resource_id=team.id,
                     changes={"name": {"old": team.name, "new": new_name}})
        team.name = new_name
    return team


def delete_team(*, actor: Actor, team_id: UUID) -> None:
    """Delete a team: its members and jobs stay, with no team (the database sets team_id NULL)."""
    access.require_admin(actor, "delete teams")
    team = get_team(actor=actor, team_id=team_id)
    members = db.session.scalar(select(func.count()).select_from(User).where(User.team_id == team_id))
    audit.record(actor=actor, action="team_deleted", resource_type="team", resource_id=team.id,
                 changes={"name": {"old": team.name, "new": None}, "members": {"old": members, "new": 0}})
    db.session.delete(team)
    db.session.flush()
    db.session.expire_all()
