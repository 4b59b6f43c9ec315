"""``jobplane users``, ``teams`` and ``tokens``: managing who may use Jobplane."""

from __future__ import annotations

from typing import Any

import click

from app.cli.common import emit, in_app, json_option, settings, uuid_argument

ROLES = click.Choice(["admin", "job_creator", "team_viewer"])


@click.group(help="Users, their roles and teams.")
def users() -> None:
    pass


@users.command("create", help="Create a user with a role (admin, job_creator, team_viewer).")
@click.option("--email", required=True)
@click.option("--role", required=True, type=ROLES)
@click.option("--oidc-subject", default=None, help="link to a single sign-on identity (its sub claim)")
def users_create(email: str, role: str, oidc_subject: str | None) -> None:
    from app.services import users as user_service

    issuer = settings().get("OIDC_ISSUER")
    user_id = in_app(lambda actor: user_service.create_user(
        actor=actor, email=email, role=role, oidc_subject=oidc_subject,
        oidc_issuer=issuer.rstrip("/") if issuer and oidc_subject else None).id)
    click.echo(f"created user {email} ({role}): {user_id}")


@users.command("set-role", help="Change a user's role.")
@click.option("--email", required=True)
@click.option("--role", required=True, type=ROLES)
def users_set_role(email: str, role: str) -> None:
    _change_user(email, {"role": role})
    click.echo(f"{email} is now {role}")


@users.command("set-team", help="Put a user in a team (--team NAME), or in none (--no-team).")
@click.option("--email", required=True)
@click.option("--team", default=None, help="the team's name (`jobplane teams list`)")
@click.option("--no-team", is_flag=True, help="take the user out of their team")
def users_set_team(email: str, team: str | None, no_team: bool) -> None:
    from app.services import teams as team_service

    if (team is None) == (not no_team):
        raise click.UsageError("give either --team NAME or --no-team")
    _change_user(email, lambda: {"team_id": team_service.find_by_name(team).id if team else None})
    click.echo(f"{email} is now in team {team}" if team else f"{email} is now in no team")


@users.command("disable", help="Disable a user: they can no longer sign in or use their tokens; their jobs "
                               "keep running.")
@click.option("--email", required=True)
def users_disable(email: str) -> None:
    _change_user(email, {"is_active": False})
    click.echo(f"{email} is disabled")


@users.command("enable", help="Enable a disabled user again.")
@click.option("--email", required=True)
def users_enable(email: str) -> None:
    _change_user(email, {"is_active": True})
    click.echo(f"{email} is enabled")


def _change_user(email: str, changes) -> None:
    from app.services import users as user_service

    in_app(lambda actor: user_service.update_user(
        actor=actor, user_id=user_service.find_by_email(email).id,
        changes=changes() if callable(changes) else changes))


@users.command("list", help="List users with their role and team, by email.")
@click.option("--role", type=ROLES, default=None, help="only users with this role")
@click.option("--team", default=None, metavar="NAME", help="only members of this team")
@click.option("--search", default=None, metavar="TEXT", help="only users whose email or name contains this")
@json_option
def users_list(role: str | None, team: str | None, search: str | None, as_json: bool) -> None:
    from sqlalchemy import select

    from app.extensions import db
    from app.models import Team
    from app.services import teams as team_service, users as user_service

    def work(actor) -> list[dict[str, Any]]:
        team_id = team_service.find_by_name(team).id if team else None
        found, _ = user_service.list_users(actor=actor, limit=1_000_000, role=role, team_id=team_id, search=search)
        teams = dict(db.session.execute(select(Team.id, Team.name)).all())
        return [{"id": user.id, "email": user.email, "role": user.role, "team": teams.get(user.team_id),
                 "active": user.is_active, "sso": user.oidc_subject is not None, "created_at": user.created_at}
                for user in found]

    emit(in_app(work), as_json=as_json, columns=("email", "role", "team", "active", "sso", "id"))


@click.group(help="Teams: team viewers see their team's jobs.")
def teams() -> None:
    pass


@teams.command("create", help="Create a team.")
@click.option("--name", required=True)
def teams_create(name: str) -> None:
    from app.services import teams as team_service

    team_id = in_app(lambda actor: team_service.create_team(actor=actor, name=name).id)
    click.echo(f"created team {name.strip()}: {team_id}")


@teams.command("list", help="List the teams and how many members each has.")
@json_option
def teams_list(as_json: bool) -> None:
    from app.services import teams as team_service

    def work(actor) -> list[dict[str, Any]]:
        members = team_service.member_counts()
        return [{"id": team.id, "name": team.name, "members": members.get(team.id, 0),
                 "created_at": team.created_at} for team in team_service.list_teams(actor=actor)]

    emit(in_app(work), as_json=as_json, columns=("name", "members", "id"))


@teams.command("rename", help="Rename a team.")
@click.option("--name", required=True, help="the team's current name")
@click.option("--to", "new_name", required=True, help="its new name")
def teams_rename(name: str, new_name: str) -> None:
    from app.services import teams as team_service

    in_app(lambda actor: team_service.rename_team(actor=actor, team_id=team_service.find_by_name(name).id,
                                                  name=new_name))
    click.echo(f"team {name} is now {new_name.strip()}")


@teams.command("delete", help="Delete a team; its members and jobs stay, in no team.")
@click.option("--name", required=True)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def teams_delete(name: str, yes: bool) -> None:
    from app.services import teams as team_service

    if not yes:
        click.confirm(f"delete team {name}? Its members and jobs stay, in no team", abort=True)
    in_app(lambda actor: team_service.delete_team(actor=actor, team_id=team_service.find_by_name(name).id))
    click.echo(f"deleted team {name}")


@click.group(help="Personal API tokens.")
def tokens() -> None:
    pass


@tokens.command("issue", help="Issue an API token for a user; it is printed once.")
@click.option("--email", required=True)
@click.option("--name", required=True, help="what the token is for")
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 365), help="lifetime")
def tokens_issue(email: str, name: str, days: int) -> None:
    from datetime import timedelta

    from app.models.base import utcnow
    from app.services import api_tokens, users as user_service

    plain = in_app(lambda actor: api_tokens.issue_token(
        actor=actor, user=user_service.find_by_email(email), name=name,
        expires_at=utcnow() + timedelta(days=days))[1])
    click.echo(plain)


tokens.add_command(click.Command("create", callback=tokens_issue.callback, params=tokens_issue.params,
                                 help="Same as `tokens issue`: issue an API token for a user; it is printed once."))


@tokens.command("list", help="List a user's tokens (never their values: only their first characters).")
@click.option("--email", required=True)
@json_option
def tokens_list(email: str, as_json: bool) -> None:
    from app.models.base import utcnow
    from app.services import api_tokens, users as user_service

    def work(actor) -> list[dict[str, Any]]:
        now = utcnow()
        rows = api_tokens.list_user_tokens(actor=actor, user=user_service.find_by_email(email))
        return [{"id": row.id, "name": row.name, "prefix": row.prefix, "created_at": row.created_at,
                 "expires_at": row.expires_at, "last_used_at": row.last_used_at, "revoked_at": row.revoked_at,
                 "state": "revoked" if row.revoked_at else
                          ("expired" if row.expires_at and row.expires_at <= now else "active")}
                for row in rows]

    emit(in_app(work), as_json=as_json, columns=("name", "prefix", "state", "expires_at", "last_used_at", "id"))


@tokens.command("revoke", help="Revoke a token by its id (`jobplane tokens list --email ...`).")
@click.argument("token_id", callback=uuid_argument("a token", "find it with `jobplane tokens list --email EMAIL`"))
def tokens_revoke(token_id) -> None:
    from app.services import api_tokens

    name = in_app(lambda actor: api_tokens.revoke_token(actor=actor, token_id=token_id).name)
    click.echo(f"revoked token {name} ({token_id})")


COMMANDS = (users, teams, tokens)
