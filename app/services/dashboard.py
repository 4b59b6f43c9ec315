"""The dashboard's figures for what a viewer may see, computed in SQL.

The scope is ``access.visible_jobs`` (everything for an admin, the team's jobs for a team viewer,
their own for a job creator), narrowed to one team when an admin picks it.  Deleted jobs and
their runs are left out: the dashboard shows only what the viewer can open.

Days are UTC days.  Every figure counts executions by their fire time (``scheduled_for``), so a
retry counts on the day of the fire it retries.  A team's or a creator's window is read through
the ``(job_id, scheduled_for, attempt)`` index of the executions' unique constraint, an admin's
through the ``started_at`` index (see ``_fired_since``).  A run *failed* when it
ended ``failed``, ``timed_out`` or ``lost``; a failure rate is failed / (succeeded + failed), so
cancelled, queued and running runs do not move it.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Date, Select, cast, func, or_, select

from app.extensions import db
from app.models import Execution, Job
from app.services import access, job_overview, teams
from app.services.actors import Actor

#: days the runs-per-day chart covers, today included
CHART_DAYS = 14
#: days of the failure rate, the slowest and the most failing jobs, today included
WINDOW_DAYS = 7
#: rows of each ranked list (next fires, slowest, most failing)
TOP = 10
#: how much earlier than its fire time a run may seem to start (the clocks of different machines)
_CLOCK_SKEW = timedelta(hours=1)
#: the "running now" panel lists at most this many runs, and says how many there are in all
RUNNING_LIMIT = 50
#: what a job's fire times depend on
_SCHEDULE_COLUMNS = (Job.schedule, Job.timezone, Job.run_at, Job.start_at, Job.end_at)
#: (schedule, timezone, run_at, start_at, end_at) -> (when it was worked out, the next fire time or None)
_known_fires: dict[tuple, tuple[datetime, datetime | None]] = {}
#: past this many schedules the memory is dropped and rebuilt
_KNOWN_FIRES_MAX = 50_000
SUCCEEDED = ("success",)
FAILED = ("failed", "timed_out", "lost")


def summary(*, actor: Actor, team_id: UUID | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Every figure of the dashboard for ``actor``'s scope.

    Parameters:
      actor: the viewer; the scope follows their role.
      team_id: admins only: one team's jobs instead of all.
      now: aware; the current time (tests pass a fixed one).

    Returns:
      dict: ``runs_today`` (``total`` runs and ``by_status``), ``failure_rate`` (``today`` and
      ``week``: ``rate`` in 0..1 or None with no finished run, ``failed``, ``finished``),
      ``running`` (see :func:`running_now`), ``next_fires``, ``slowest``, ``most_failing`` and
      ``runs_per_day`` (oldest first, ``CHART_DAYS`` entries with ``date``, ``succeeded``, ``failed``).

    Raises:
      Forbidden: a team was given by someone who is not an admin.
      NotFound: no such team.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    _check_team(actor, team_id)
    today = now.date()
    counts = _runs_by_day_and_status(actor, team_id, since=_midnight(today - timedelta(days=CHART_DAYS - 1)))
    window = [today - timedelta(days=n) for n in range(WINDOW_DAYS)]
    by_status_today = {status: n for (day, status), n in counts.items() if day == today}
    per_job = _per_job(actor, team_id, since=_midnight(window[-1]))
    return {
        "now": now,
        "team_id": team_id,
        "runs_today": {"total": sum(n for status, n in by_status_today.items() if status not in ("skipped", "missed")),
                       "by_status": dict(sorted(by_status_today.items()))},
        "failure_rate": {"today": _rate(counts, [today]), "week": _rate(counts, window)},
        "running": _running(actor, team_id, now),
        "next_fires": _next_fires(actor, team_id, now),
        "slowest": _slowest(per_job),
        "most_failing": _most_failing(per_job),
        "runs_per_day": [{"date": day, "succeeded": sum(counts.get((day, s), 0) for s in SUCCEEDED),
                          "failed": sum(counts.get((day, s), 0) for s in FAILED)}
                         for day in (today - timedelta(days=n) for n in reversed(range(CHART_DAYS)))],
    }


def running_now(*, actor: Actor, team_id: UUID | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The runs in progress in the scope, longest running first (the panel refreshes on its own).

    Returns:
      dict: ``total`` and ``rows`` (at most ``RUNNING_LIMIT``: ``execution_id``, ``job_id``,
      ``job_name``, ``attempt``, ``started_at``, ``elapsed_seconds``).
    """
    _check_team(actor, team_id)
    return _running(actor, team_id, (now or datetime.now(UTC)).astimezone(UTC))


def _running(actor: Actor, team_id: UUID | None, now: datetime) -> dict[str, Any]:
    base = _scoped(select(Execution.id).join(Job, Job.id == Execution.job_id)
                   .where(Execution.status == "running"), actor, team_id)
    total = db.session.scalar(select(func.count()).select_from(base.subquery()))
    rows = db.session.execute(_scoped(
        select(Execution.id, Execution.job_id, Job.name, Execution.attempt, Execution.started_at)
        .join(Job, Job.id == Execution.job_id).where(Execution.status == "running")
        .order_by(Execution.started_at.asc().nulls_last(), Execution.id).limit(RUNNING_LIMIT), actor, team_id))
    return {"total": total, "rows": [
        {"execution_id": row.id, "job_id": row.job_id, "job_name": row.name, "attempt": row.attempt,
         "started_at": _aware(row.started_at),
         "elapsed_seconds": (now - _aware(row.started_at)).total_seconds() if row.started_at else None}
        for row in rows]}


def next_fires(*, actor: Actor, team_id: UUID | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """The ``TOP`` soonest fire times among the scope's active jobs, one per job (its next one),
    so a job firing every second does not fill the list on its own."""
    _check_team(actor, team_id)
    return _next_fires(actor, team_id, (now or datetime.now(UTC)).astimezone(UTC))


def _next_fires(actor: Actor, team_id: UUID | None, now: datetime) -> list[dict[str, Any]]:
    # plain rows, not ORM objects: loading 5,000 jobs as objects took most of a second
    rows = db.session.execute(_scoped(
        select(Job.id, Job.name, *_SCHEDULE_COLUMNS)
        .where(Job.status == "active", or_(Job.schedule.is_not(None), Job.run_at > now)), actor, team_id))
    upcoming = [(fire, row) for row in rows if (fire := _next_fire(row, now)) is not None]
    upcoming.sort(key=lambda pair: (pair[0], pair[1].name))
    return [{"job_id": row.id, "job_name": row.name, "at": fire} for fire, row in upcoming[:TOP]]


def _next_fire(row, now: datetime) -> datetime | None:
    """``job_overview.next_fire_time``, remembered per schedule.

    A next fire time worked out at ``t`` is still the next one at any later ``now`` before it (no
    fire lies between), and "none" stays none; so a dashboard recomputes only the schedules that
    fired since it last looked (5,000 crons cost about a second each time otherwise), and jobs on
    the same schedule share one computation.
    """
    key = tuple(getattr(row, column.key) for column in _SCHEDULE_COLUMNS)
    known = _known_fires.get(key)
    if known is not None and known[0] <= now and (known[1] is None or now < known[1]):
        return known[1]
    if len(_known_fires) >= _KNOWN_FIRES_MAX:
        _known_fires.clear()
    fire = job_overview.next_fire_time(Job(status="active", **dict(zip((c.key for c in _SCHEDULE_COLUMNS), key))),
                                       now=now)  # a transient Job: never added to the session
    _known_fires[key] = (now, fire)
    return fire


def _check_team(actor: Actor, team_id: UUID | None) -> None:
    if team_id is not None:
        access.require_admin(actor, "pick a team on the dashboard")
        teams.get_team(actor=actor, team_id=team_id)


def _scoped(query: Select, actor: Actor, team_id: UUID | None) -> Select:
    """Narrow a query that has ``Job`` in its FROM to the viewer's scope."""
    query = access.visible_jobs(actor, query.where(Job.status != "deleted"))
    return query.where(Job.team_id == team_id) if team_id is not None else query


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _utc_day(column):
    """The UTC calendar day of a timestamp column, in this database's dialect."""
    if db.session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)  # SQLite (standalone) stores naive UTC text


def _fired_since(since: datetime) -> tuple:
    """Where executions fired since ``since``.

    No index leads with ``scheduled_for`` (the unique one leads with ``job_id``), so an admin's
    window would scan all 720,000 rows.  A run starts after its fire time, so ``started_at``'s
    index narrows the scan to the window (three times fewer blocks read, EXPLAIN in
    docs/benchmarks.md); runs that never started have no ``started_at`` and are kept.
    """
    return (Execution.scheduled_for >= since,
            or_(Execution.started_at >= since - _CLOCK_SKEW, Execution.started_at.is_(None)))


def _runs_by_day_and_status(actor: Actor, team_id: UUID | None, *, since: datetime) -> Counter:
    """``{(day, status): count}`` since ``since``: one grouped scan serves the chart, today's
    counts and both failure rates."""
    day = _utc_day(Execution.scheduled_for).label("day")
    rows = db.session.execute(_scoped(
        select(day, Execution.status, func.count()).join(Job, Job.id == Execution.job_id)
        .where(*_fired_since(since)).group_by(day, Execution.status), actor, team_id))
    return Counter({(value if isinstance(value, date) else date.fromisoformat(value), status): n
                    for value, status, n in rows})


def _rate(counts: Counter, days: list[date]) -> dict[str, Any]:
    failed = sum(counts.get((day, status), 0) for day in days for status in FAILED)
    finished = failed + sum(counts.get((day, status), 0) for day in days for status in SUCCEEDED)
    return {"rate": failed / finished if finished else None, "failed": failed, "finished": finished}


def _per_job(actor: Actor, team_id: UUID | None, *, since: datetime) -> list[dict[str, Any]]:
    """Each job's finished runs since ``since``: how many failed, and the p95 of their durations
    (continuous percentile), in one grouped scan that serves both rankings."""
    finished = (*_fired_since(since), Execution.status.in_(SUCCEEDED + FAILED))
    if db.session.get_bind().dialect.name != "postgresql":
        return _per_job_in_python(actor, team_id, finished)
    p95 = func.percentile_cont(0.95).within_group(Execution.duration_seconds)
    rows = db.session.execute(_scoped(
        select(Job.id, Job.name, p95.label("p95"), func.count(Execution.duration_seconds).label("timed"),
               func.count().filter(Execution.status.in_(FAILED)).label("failed"), func.count().label("finished"))
        .join(Job, Job.id == Execution.job_id).where(*finished).group_by(Job.id, Job.name), actor, team_id))
    return [{"job_id": row.id, "job_name": row.name, "p95": row.p95, "timed": row.timed, "failed": row.failed,
             "finished": row.finished} for row in rows]


def _per_job_in_python(actor: Actor, team_id: UUID | None, finished: tuple) -> list[dict[str, Any]]:
    # SQLite has no percentile_cont; a standalone laptop's history is small enough to rank here
    jobs: dict[UUID, dict[str, Any]] = {}
    for job_id, name, status, seconds in db.session.execute(_scoped(
            select(Job.id, Job.name, Execution.status, Execution.duration_seconds)
            .join(Job, Job.id == Execution.job_id).where(*finished), actor, team_id)):
        job = jobs.setdefault(job_id, {"job_id": job_id, "job_name": name, "durations": [], "failed": 0,
                                       "finished": 0})
        job["finished"] += 1
        job["failed"] += status in FAILED
        if seconds is not None:
            job["durations"].append(seconds)
    return [{**job, "p95": percentile(job["durations"], 0.95) if job["durations"] else None,
             "timed": len(job.pop("durations"))} for job in jobs.values()]


def percentile(values: list[float], fraction: float) -> float:
    """PostgreSQL's ``percentile_cont``: linear interpolation between the two nearest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _slowest(per_job: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``TOP`` jobs with the highest p95 run duration."""
    ranked = sorted((job for job in per_job if job["p95"] is not None), key=lambda job: (-job["p95"], job["job_name"]))
    return [{"job_id": job["job_id"], "job_name": job["job_name"], "p95_seconds": float(job["p95"]),
             "runs": job["timed"]} for job in ranked[:TOP]]


def _most_failing(per_job: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``TOP`` jobs with the most failed runs (ties: the higher failure rate first)."""
    ranked = sorted((job for job in per_job if job["failed"]),
                    key=lambda job: (-job["failed"], -job["failed"] / job["finished"], job["job_name"]))
    return [{"job_id": job["job_id"], "job_name": job["job_name"], "failures": job["failed"],
             "runs": job["finished"], "rate": job["failed"] / job["finished"]} for job in ranked[:TOP]]
