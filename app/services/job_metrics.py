"""A job's run metrics (``GET /api/v1/jobs/{id}/metrics`` and the job page's charts): runs by
status, success rate, durations and a per-day series, computed in the database.

The window is whole UTC days: ``days=1`` is today so far, ``days=30`` today and the 29 days
before. An execution belongs to the day of its fire time (``scheduled_for``), so ledger records
(skipped, missed) that never started count too. Every attempt is a run of its own: a fire that
failed once and succeeded on retry counts one failure and one success.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from uuid import UUID

from sqlalchemy import Date, cast, func, select

from app.errors import InvalidInput
from app.extensions import db
from app.models import Execution
from app.models.base import utcnow
from app.models.execution import EXECUTION_STATUSES
from app.services import jobs
from app.services.actors import Actor

#: The longest window, in days (the chart's widest range; executions are kept longer).
MAX_DAYS = 90
#: Outcomes that count as a failure in the success rate and the series.
FAILED_STATUSES = ("failed", "timed_out", "lost")
#: Outcomes the success rate is taken over: a cancelled, skipped or missed run neither
#: succeeded nor failed, and a queued or running one has no outcome yet.
OUTCOME_STATUSES = ("success", *FAILED_STATUSES)


def job_metrics(*, actor: Actor, job_id: UUID, days: int = 30) -> dict[str, Any]:
    """The job's metrics over the last ``days`` UTC days, as plain JSON-able data.

    Returns:
      ``{"job_id", "days", "since", "until", "runs": {"total", "by_status": {status: n}},
      "success_rate"`` (0 to 1, None without outcomes), ``"duration_seconds": {"p50", "p95",
      "max"}`` (None without finished runs), ``"last_run"`` (the latest started execution, or
      None) and ``"series": [{"date", "succeeded", "failed", "other", "p50_seconds"}]``, one
      entry per day, oldest first, days without runs included.

    Raises:
      NotFound: no job the actor may see.
      InvalidInput: ``days`` is not 1 to MAX_DAYS.
    """
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise InvalidInput({"days": f"must be a whole number of days from 1 to {MAX_DAYS}"})
    jobs.get_job(actor=actor, job_id=job_id)
    now = utcnow()
    first_day = now.date() - timedelta(days=days - 1)
    since = datetime.combine(first_day, time.min, tzinfo=timezone.utc)
    in_window = (Execution.job_id == job_id, Execution.scheduled_for >= since, Execution.scheduled_for <= now)
    if db.session.get_bind().dialect.name == "postgresql":
        counts, day_p50, overall = _aggregate_in_postgresql(in_window)
    else:
        counts, day_p50, overall = _aggregate_in_python(in_window)
    by_status = {status: 0 for status in EXECUTION_STATUSES}
    series = {first_day + timedelta(days=n): {"succeeded": 0, "failed": 0, "other": 0} for n in range(days)}
    for day, status, count in counts:
        by_status[status] += count
        bucket = "succeeded" if status == "success" else "failed" if status in FAILED_STATUSES else "other"
        series[day][bucket] += count
    outcomes = sum(by_status[status] for status in OUTCOME_STATUSES)
    return {
        "job_id": str(job_id),
        "days": days,
        "since": since.isoformat(),
        "until": now.isoformat(),
        "runs": {"total": sum(by_status.values()), "by_status": by_status},
        "success_rate": by_status["success"] / outcomes if outcomes else None,
        "duration_seconds": overall,
        "last_run": _last_run(job_id),
        "series": [{"date": day.isoformat(), **values, "p50_seconds": day_p50.get(day)}
                   for day, values in series.items()],
    }


def _utc_day(column):
    """The UTC calendar day of a timestamptz column, whatever the session's time zone."""
    return cast(func.timezone("UTC", column), Date)


def _aggregate_in_postgresql(in_window) -> tuple[list, dict, dict]:
    """Counts per (day, status), the median duration per day and the overall percentiles."""
    day = _utc_day(Execution.scheduled_for).label("day")
    counts = db.session.execute(select(day, Execution.status, func.count())
                                .where(*in_window).group_by(day, Execution.status)).all()
    finished = (*in_window, Execution.duration_seconds.is_not(None))
    median = func.percentile_cont(0.5).within_group(Execution.duration_seconds)
    day_p50 = dict(db.session.execute(select(day, median).where(*finished).group_by(day)).all())
    p50, p95, longest = db.session.execute(
        select(median, func.percentile_cont(0.95).within_group(Execution.duration_seconds),
               func.max(Execution.duration_seconds)).where(*finished)).one()
    return counts, day_p50, {"p50": p50, "p95": p95, "max": longest}


def _aggregate_in_python(in_window) -> tuple[list, dict, dict]:
    """The same figures for SQLite (standalone), which has no percentile function."""
    rows = db.session.execute(select(Execution.scheduled_for, Execution.status, Execution.duration_seconds)
                              .where(*in_window)).all()
    counts: dict[tuple[date, str], int] = {}
    durations: dict[date, list[float]] = {}
    for scheduled_for, status, duration in rows:
        day = scheduled_for.astimezone(timezone.utc).date()
        counts[day, status] = counts.get((day, status), 0) + 1
        if duration is not None:
            durations.setdefault(day, []).append(duration)
    everything = sorted(d for values in durations.values() for d in values)
    overall = {"p50": percentile(everything, 0.5), "p95": percentile(everything, 0.95),
               "max": everything[-1] if everything else None}
    return ([(day, status, n) for (day, status), n in counts.items()],
            {day: percentile(sorted(values), 0.5) for day, values in durations.items()}, overall)


def percentile(ordered: list[float], fraction: float) -> float | None:
    """PostgreSQL's ``percentile_cont``: linear interpolation between the closest ranks of the
    sorted values (so the Python fallback gives the same figures)."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    below, above = math.floor(position), math.ceil(position)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def _last_run(job_id: UUID) -> dict[str, Any] | None:
    """The latest execution that started (whenever it was), in brief."""
    run = db.session.scalar(select(Execution).where(Execution.job_id == job_id, Execution.started_at.is_not(None))
                            .order_by(Execution.started_at.desc(), Execution.id.desc()).limit(1))
    if run is None:
        return None
    return {"id": str(run.id), "status": run.status, "scheduled_for": run.scheduled_for.isoformat(),
            "started_at": run.started_at.isoformat(),
            "completed_at": run.completed_at.isoformat() if run.completed_at else None,
            "duration_seconds": run.duration_seconds}
