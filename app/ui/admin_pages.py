"""``/admin``: users, teams and the audit log, for admins.

Every route first asks ``access.require_admin`` (a non-admin gets 403 before any input is read),
and every change goes through the users and teams services, which check again and audit it.  A
refused change shows the page again with the error beside the field it is about, and a status
saying why (422 for bad input, 409 for a change that collides with the current state).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from flask import Blueprint, flash, redirect, render_template, request, url_for

from app.errors import Conflict, InvalidInput
from app.models.user import ROLES
from app.services import access, audit_trail, teams, users
from app.api.pagination import MAX_PAGE
from app.ui.views import current_actor, page_number, signed_in
from app.ui.web_auth import web_actor

bp = Blueprint("admin", __name__, url_prefix="/admin")

USERS_PAGE_SIZE = 50
AUDIT_PAGE_SIZE = 50
#: the audit filters the page offers, as (query argument, label)
AUDIT_FILTERS = (("email", "Actor (email)"), ("action", "Action"), ("resource_type", "Resource type"),
                 ("since", "From (UTC)"), ("until", "Until (UTC)"))


@bp.before_request
def _admins_only():
    # an anonymous visitor is sent to sign in by each view's guard; anyone else must be an admin
    actor = web_actor()
    if actor is not None:
        access.require_admin(actor, "use the admin pages")



def _pages(total: int, size: int) -> int:
    return max((total + size - 1) // size, 1)


# --- users ---------------------------------------------------------------------------------------

@bp.get("/users", endpoint="users")
@signed_in
def list_users():
    return _render_users()


def _render_users(*, form: dict | None = None, errors: dict | None = None, row_errors: dict | None = None,
                  status: int = 200):
    actor = current_actor()
    # a refused change on page 2 is shown on page 2: its form says which page it came from
    page = min(max(request.form.get("page", 0, type=int), 0), MAX_PAGE) or page_number()
    rows, total = users.list_users(actor=actor, limit=USERS_PAGE_SIZE, offset=(page - 1) * USERS_PAGE_SIZE)
    team_list = teams.list_teams(actor=actor)
    return render_template("admin/users.html", rows=rows, total=total, page=page,
                           pages=_pages(total, USERS_PAGE_SIZE), teams=team_list,
                           team_names={team.id: team.name for team in team_list}, roles=ROLES,
                           form=form or {"email": "", "role": "job_creator", "team_id": ""},
                           errors=errors or {}, row_errors=row_errors or {}), status


@bp.post("/users", endpoint="create_user")
@signed_in
def create_user():
    form = {field: request.form.get(field, "").strip() for field in ("email", "role", "team_id")}
    try:
        team_id = _team_id(form["team_id"])
        user = users.create_user(actor=current_actor(), email=form["email"], role=form["role"], team_id=team_id)
    except InvalidInput as error:
        return _render_users(form=form, errors=error.errors, status=422)
    flash(f"Created {user.email} ({user.role}). They sign in with single sign-on, or with an API token from "
          f"`jobplane tokens issue --email {user.email} --name web`.", "success")
    return redirect(url_for(".users"), 303)


@bp.post("/users/<uuid:user_id>", endpoint="update_user")
@signed_in
def update_user(user_id: UUID):
    changes: dict[str, Any] = {"role": request.form.get("role", "").strip()}
    try:
        changes["team_id"] = _team_id(request.form.get("team_id", "").strip())
        user = users.update_user(actor=current_actor(), user_id=user_id, changes=changes)
    except InvalidInput as error:
        return _render_users(row_errors={user_id: error.errors}, status=422)
    except Conflict as error:
        return _render_users(row_errors={user_id: {"role": [error.message]}}, status=409)
    flash(f"Saved {user.email}.", "success")
    return redirect(url_for(".users", page=request.form.get("page", type=int) or None), 303)


@bp.post("/users/<uuid:user_id>/active", endpoint="set_user_active")
@signed_in
def set_user_active(user_id: UUID):
    value = request.form.get("is_active", "")
    try:
        if value not in ("true", "false"):
            raise InvalidInput({"is_active": "must be true (enable) or false (disable); use the button"})
        user = users.update_user(actor=current_actor(), user_id=user_id, changes={"is_active": value == "true"})
    except InvalidInput as error:
        return _render_users(row_errors={user_id: error.errors}, status=422)
    except Conflict as error:
        return _render_users(row_errors={user_id: {"is_active": [error.message]}}, status=409)
    flash(f"{'Enabled' if user.is_active else 'Disabled'} {user.email}."
          + ("" if user.is_active else " They can no longer sign in or use their API tokens."), "success")
    return redirect(url_for(".users", page=request.form.get("page", type=int) or None), 303)


def _team_id(value: str) -> UUID | None:
    if not value:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise InvalidInput({"team_id": "must be a team from the list (or no team)"}) from None


# --- teams ---------------------------------------------------------------------------------------

@bp.get("/teams", endpoint="teams")
@signed_in
def list_teams():
    return _render_teams()


def _render_teams(*, form: dict | None = None, errors: dict | None = None, row_errors: dict | None = None,
                  status: int = 200):
    return render_template("admin/teams.html", teams=teams.list_teams(actor=current_actor()),
                           form=form or {"name": ""}, errors=errors or {}, row_errors=row_errors or {}), status


@bp.post("/teams", endpoint="create_team")
@signed_in
def create_team():
    form = {"name": request.form.get("name", "")}
    try:
        team = teams.create_team(actor=current_actor(), name=form["name"])
    except InvalidInput as error:
        return _render_teams(form=form, errors=error.errors, status=422)
    flash(f"Created team {team.name}.", "success")
    return redirect(url_for(".teams"), 303)


@bp.post("/teams/<uuid:team_id>/rename", endpoint="rename_team")
@signed_in
def rename_team(team_id: UUID):
    try:
        team = teams.rename_team(actor=current_actor(), team_id=team_id, name=request.form.get("name", ""))
    except InvalidInput as error:
        return _render_teams(row_errors={team_id: error.errors}, status=422)
    flash(f"Renamed the team to {team.name}.", "success")
    return redirect(url_for(".teams"), 303)


@bp.post("/teams/<uuid:team_id>/delete", endpoint="delete_team")
@signed_in
def delete_team(team_id: UUID):
    name = teams.get_team(actor=current_actor(), team_id=team_id).name
    teams.delete_team(actor=current_actor(), team_id=team_id)
    flash(f"Deleted team {name}. Its members and jobs stay, with no team.", "success")
    return redirect(url_for(".teams"), 303)


# --- audit log -----------------------------------------------------------------------------------

@bp.get("/audit", endpoint="audit")
@signed_in
def audit_log():
    actor = current_actor()
    args = {name: request.args.get(name, "").strip() for name, _ in AUDIT_FILTERS}
    filters, errors = _audit_filters(args)
    page = page_number()
    rows, total = ([], 0) if errors else audit_trail.list_entries(
        actor=actor, filters=filters, limit=AUDIT_PAGE_SIZE, offset=(page - 1) * AUDIT_PAGE_SIZE)
    # walking the whole chain reads every row: only when asked
    verification = audit_trail.verify(actor=actor) if request.args.get("verify") == "1" else None
    return render_template("admin/audit.html", rows=rows, total=total, page=page,
                           pages=_pages(total, AUDIT_PAGE_SIZE), args=args, labels=dict(AUDIT_FILTERS),
                           query={name: value for name, value in args.items() if value}, errors=errors,
                           verification=verification), 422 if errors else 200


def _audit_filters(args: dict[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The service's filters from the page's query, and what is wrong with it, per field."""
    # the page's actor box is an email; the service's ``actor`` filter takes an email or a user id
    filters: dict[str, Any] = {("actor" if name == "email" else name): args[name]
                               for name in ("email", "action", "resource_type") if args[name]}
    errors: dict[str, list[str]] = {}
    for name in ("since", "until"):
        if not args[name]:
            continue
        try:
            moment = datetime.fromisoformat(args[name])
        except ValueError:
            errors[name] = ["must be a date (2026-11-28) or a date and time (2026-11-28T14:30), in UTC"]
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if name == "until" and len(args[name]) == 10:  # a bare date: through the end of that day
            moment += timedelta(days=1)
        filters[name] = moment
    if "since" in filters and "until" in filters and filters["since"] >= filters["until"]:
        errors["until"] = ["must be after From"]
    return filters, errors
