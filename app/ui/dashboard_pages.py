"""``/dashboard``: runs today, failure rates, what is running now (refreshed every 10 s), the
next fires, the slowest and the most failing jobs, and 14 days of runs as a stacked bar chart.

The figures come from ``services.dashboard`` for the viewer's scope; an admin may narrow them to
one team.  The chart is the job page's: the ``runs_per_day`` macro of ``_charts.html`` (inline SVG
coloured by CSS classes; the CSP allows no script or style attribute of ours in the page).
"""

from __future__ import annotations

from uuid import UUID

from flask import Blueprint, render_template, request

from app.errors import InvalidInput
from app.services import dashboard, teams
from app.ui.views import current_actor, signed_in

bp = Blueprint("dashboard", __name__)


@bp.get("/dashboard", endpoint="dashboard")  # the nav and the start page link "dashboard.dashboard"
@signed_in
def show_dashboard():
    actor = current_actor()
    team_id = _team_argument()
    if request.headers.get("HX-Target") == "running-now":
        return render_template("dashboard/_running.html", running=dashboard.running_now(actor=actor, team_id=team_id),
                               team_id=team_id)
    figures = dashboard.summary(actor=actor, team_id=team_id)
    return render_template("dashboard/index.html", figures=figures, team_id=team_id, running=figures["running"],
                           teams=teams.list_teams(actor=actor) if actor.is_admin else [])


def _team_argument() -> UUID | None:
    value = request.args.get("team", "").strip()
    if not value:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise InvalidInput({"team": "must be a team's id"},
                           message="the team in the address is not a team's id: pick a team from the list") from None


@bp.app_template_filter("percent")
def percent(rate: float | None) -> str:
    """``12.5 %``; an em dash when there is nothing to divide."""
    return "—" if rate is None else f"{rate * 100:.1f} %"

