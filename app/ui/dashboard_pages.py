"""``/dashboard``: runs today, failure rates, what is running now (refreshed every 10 s), the
next fires, the slowest and the most failing jobs, and 14 days of runs as a stacked bar chart.

The figures come from ``services.dashboard`` for the viewer's scope; an admin may narrow them to
one team.  The chart is inline SVG drawn here and coloured by CSS classes (the CSP allows no
script or style attribute of ours in the page).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask import Blueprint, current_app, render_template, request, url_for

from app.errors import InvalidInput
from app.services import dashboard, teams
from app.ui.views import current_actor, signed_in

bp = Blueprint("dashboard", __name__)

#: the chart's drawing box (SVG user units); the page scales it to its width
CHART_WIDTH, CHART_HEIGHT = 1000, 150
_PLOT_LEFT, _PLOT_TOP, _PLOT_BOTTOM = 34, 10, 128


@bp.get("/dashboard", endpoint="dashboard")  # the nav and the start page link "dashboard.dashboard"
@signed_in
def show_dashboard():
    actor = current_actor()
    team_id = _team_argument()
    if request.headers.get("HX-Target") == "running-now":
        return render_template("dashboard/_running.html", running=dashboard.running_now(actor=actor, team_id=team_id),
                               team_id=team_id)
    figures = dashboard.summary(actor=actor, team_id=team_id)
    return render_template("dashboard/index.html", figures=figures, team_id=team_id,
                           running=figures["running"], chart=chart(figures["runs_per_day"]),
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


def execution_url(execution_id: UUID) -> str:
    """The execution page, by endpoint when it is installed (its path otherwise)."""
    if "execution_pages.show_execution" in current_app.view_functions:
        return url_for("execution_pages.show_execution", execution_id=execution_id)
    return f"/executions/{execution_id}"


def chart(days: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacked bars (succeeded below, failed on top) for each day, in the chart's drawing box.

    Returns:
      dict: ``width``, ``height``, ``peak`` (the tallest day's runs), ``axis`` (y of the x axis),
      ``bars`` (per day: ``x``, ``width``, ``label``, ``title``, and ``ok``/``bad`` rectangles as
      ``(y, height)``).
    """
    peak = max((day["succeeded"] + day["failed"] for day in days), default=0)
    plot_height = _PLOT_BOTTOM - _PLOT_TOP
    slot = (CHART_WIDTH - _PLOT_LEFT - 6) / max(len(days), 1)
    bars = []
    for index, day in enumerate(days):
        ok_height = plot_height * day["succeeded"] / peak if peak else 0
        bad_height = plot_height * day["failed"] / peak if peak else 0
        bars.append({
            "x": round(_PLOT_LEFT + index * slot + slot * 0.15, 1), "width": round(slot * 0.7, 1),
            "center": round(_PLOT_LEFT + index * slot + slot / 2, 1), "label": day["day"].strftime("%d %b"),
            "title": f"{day['day']:%Y-%m-%d}: {day['succeeded']} succeeded, {day['failed']} failed",
            "ok": (round(_PLOT_BOTTOM - ok_height, 1), round(ok_height, 1)),
            "bad": (round(_PLOT_BOTTOM - ok_height - bad_height, 1), round(bad_height, 1)),
        })
    return {"width": CHART_WIDTH, "height": CHART_HEIGHT, "peak": peak, "axis": _PLOT_BOTTOM, "top": _PLOT_TOP,
            "left": _PLOT_LEFT, "bars": bars}


@bp.app_template_filter("percent")
def percent(rate: float | None) -> str:
    """``12.5 %``; an em dash when there is nothing to divide."""
    return "—" if rate is None else f"{rate * 100:.1f} %"


@bp.app_context_processor
def _helpers() -> dict[str, Any]:
    return {"execution_url": execution_url}
