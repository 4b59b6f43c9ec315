"""What every UI page shares: the signed-in guard, template helpers and the navigation.

Pages are thin: they read the form or query, call a service with the viewer as actor, and render.
Authorization stays in the services; a page only hides controls the viewer may not use.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import wraps
from typing import Callable

from flask import Flask, current_app, g, redirect, request, url_for
from markupsafe import Markup, escape

from app.api.pagination import MAX_PAGE
from app.errors import InvalidInput
from app.services.actors import Actor
from app.ui.web_auth import web_actor

#: the main navigation: (endpoint, label, admins only); entries whose page is not installed are left out
NAV_ITEMS = (
    ("dashboard.dashboard", "Dashboard", False),
    ("job_pages.list_jobs", "Jobs", False),
    ("admin.users", "Users", True),
    ("admin.teams", "Teams", True),
    ("admin.audit", "Audit log", True),
)


def signed_in(view: Callable) -> Callable:
    """Run ``view`` with ``g.actor`` set to the signed-in user; anyone else is sent to sign in
    (an HTMX request is told to reload the whole page there, not to swap a login form in)."""

    @wraps(view)
    def guarded(*args, **kwargs):
        actor = web_actor()
        if actor is None:
            target = url_for("auth.login", next=request.full_path.rstrip("?"))
            if request.headers.get("HX-Request"):
                return "", 401, {"HX-Redirect": target}
            return redirect(target)
        g.actor = actor
        return view(*args, **kwargs)

    return guarded


def page_number() -> int:
    """The ``page`` a list was asked for: 1 when missing or not a number, at most the API's
    MAX_PAGE (a larger page would overflow PostgreSQL's OFFSET into a 500)."""
    return min(max(request.args.get("page", 1, type=int) or 1, 1), MAX_PAGE)


def current_actor() -> Actor:
    return g.actor


def _nav_items() -> list[tuple[str, str, bool]]:
    return [item for item in NAV_ITEMS if item[0] in current_app.view_functions]


def _current_viewer():
    try:
        actor = web_actor()
    except Exception:  # an error page about a database outage must still render
        return None
    return actor.user if actor is not None else None


def timestamp(value: datetime | None, *, empty: str = "—") -> Markup:
    """A ``<time>`` in UTC that the page's script shows in the viewer's time zone (UTC on hover)."""
    if value is None:
        return Markup(escape(empty))
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=timezone.utc)
    utc = value.astimezone(timezone.utc)
    return Markup('<time datetime="{}" data-local>{}</time>').format(
        utc.isoformat().replace("+00:00", "Z"), utc.strftime("%Y-%m-%d %H:%M:%S UTC"))


def duration(seconds: float | None) -> str:
    """``1.2 s``, ``3 min 4 s``, ``2 h 5 min``: short, for tables."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def explain(error: InvalidInput) -> str:
    """Every field an error names and what is wrong with it, in one line for a flash message."""
    return "; ".join(f"{field}: {', '.join(messages)}" for field, messages in error.errors.items())


def job_state(status: str) -> str:
    """A job's status as people say it: the spec's ``disabled`` is a paused job."""
    return "paused" if status == "disabled" else status


def install(app: Flask) -> None:
    app.jinja_env.globals.update(current_viewer=_current_viewer, nav_items=_nav_items)
    app.jinja_env.filters["timestamp"] = timestamp
    app.jinja_env.filters["duration"] = duration
    app.jinja_env.filters["job_state"] = job_state
