"""Dashboard: how long the dashboard's figures and page take on the spec's history.

What it measures
    ``services.dashboard.summary`` (every figure of the dashboard) and the whole ``GET /dashboard``
    page (figures, team list, template), on the spec's data volume: ``--jobs`` (default 5,000)
    active jobs owned by 100 job creators in 20 teams, and ``--executions`` (default 720,000:
    90 days x 8,000 a day) executions spread evenly over 90 days, the newest 450 still running.
    Statuses are drawn at random with a fixed seed: 90 % success, 5 % failed, 2 % timed out,
    1 % lost, 1 % cancelled, 1 % skipped; durations 0-300 s.

    Four viewers, measured in interleaved rounds (``--rounds``, default 30): an admin (all
    jobs), an admin who picked one team, a team viewer (one team: 250 jobs) and a job creator
    (50 jobs).  It prints p50/p95/p99 (nearest rank) per viewer, and with ``--explain`` the
    plan (EXPLAIN ANALYZE, BUFFERS) of every SQL statement one admin summary runs.
    Spec goal (§ success metrics): dashboard load time under 2 s.

How it runs
    Its own database, ``jobplane_bench_dashboard`` on the server of TEST_DATABASE_URL (created
    if missing, schema dropped and migrated at start, so it never disturbs the other benches'
    ``jobplane_bench``); no Redis traffic but the app's start.  Jobs are created through the
    service layer (500 per transaction); executions by one INSERT ... SELECT, then VACUUM ANALYZE.

Running it (from the repository root; services from scripts/ensure-test-services.sh)
    . ./.test-services.env && .venv/bin/python bench/dashboard.py --explain
    # options: --jobs N (5000)  --executions N (720000)  --rounds N (30)  --explain
    #          --keep (leave the seeded database)  --reuse (measure a kept one again, no seeding)
"""

from __future__ import annotations

import os
import random
import sys
import time
from datetime import UTC, datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import log, summary  # noqa: E402
from sqlalchemy import create_engine, event, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

DATABASE = "jobplane_bench_dashboard"
TEAMS = 20
CREATORS_PER_TEAM = 5
RUNNING = 450

_EXECUTIONS = """
INSERT INTO executions (id, job_id, status, scheduled_for, triggered_by, attempt, started_at, completed_at,
                        duration_seconds, sent_at, send_count, log_bytes, log_truncated, created_at)
SELECT gen_random_uuid(), j.ids[1 + (g % j.n)], r.status, t.at, 'scheduled', 1,
       CASE WHEN r.status = 'skipped' THEN NULL ELSE t.at END,
       CASE WHEN r.status = 'skipped' THEN NULL ELSE t.at + make_interval(secs => r.secs) END,
       CASE WHEN r.status IN ('skipped', 'lost', 'cancelled') THEN NULL ELSE r.secs END,
       t.at, 1, 0, false, t.at
  FROM generate_series(0, :count - 1) AS g
 CROSS JOIN (SELECT array_agg(id ORDER BY id) AS ids, count(*)::int AS n FROM jobs) AS j
 CROSS JOIN LATERAL (SELECT CAST(:now AS timestamptz) - g * (interval '90 days' / :count) AS at) AS t
 CROSS JOIN LATERAL (SELECT CASE WHEN p < 0.90 THEN 'success' WHEN p < 0.95 THEN 'failed'
                                 WHEN p < 0.97 THEN 'timed_out' WHEN p < 0.98 THEN 'lost'
                                 WHEN p < 0.99 THEN 'cancelled' ELSE 'skipped' END AS status,
                            round((random() * 300)::numeric, 1)::float AS secs
                       FROM (SELECT random() + g * 0 AS p) AS draw) AS r
"""
_RUNNING = """
UPDATE executions SET status = 'running', completed_at = NULL, duration_seconds = NULL
 WHERE id IN (SELECT id FROM executions ORDER BY scheduled_for DESC LIMIT :running)
"""


def database_url() -> str:
    url = make_url(common.test_database_url())
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            if not connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                      {"name": DATABASE}).scalar():
                connection.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    finally:
        admin.dispose()
    return url.set(database=DATABASE).render_as_string(hide_password=False)


def seed(app, url: str, *, jobs_count: int, executions: int) -> dict:
    """Teams, creators, viewers and jobs through the services; executions in SQL.  Returns the
    viewers' emails and the picked team's id."""
    from app.extensions import db
    from app.models import User
    from app.services import jobs, teams, users
    from app.services.actors import SYSTEM, Actor

    rng = random.Random(7)
    with app.app_context():
        with db.unit_of_work():
            team_ids = [teams.create_team(actor=SYSTEM, name=f"team-{n:02d}").id for n in range(TEAMS)]
            creators = [users.create_user(actor=SYSTEM, email=f"creator-{t:02d}-{c}@bench.test", role="job_creator",
                                          team_id=team_ids[t]).id
                        for t in range(TEAMS) for c in range(CREATORS_PER_TEAM)]
            users.create_user(actor=SYSTEM, email="viewer@bench.test", role="team_viewer", team_id=team_ids[0])
        started = time.monotonic()
        for start in range(0, jobs_count, 500):
            with db.unit_of_work():
                for n in range(start, min(start + 500, jobs_count)):
                    owner = db.session.get(User, creators[n % len(creators)])
                    kind = rng.random()
                    schedule = ("*/5 * * * *" if kind < 0.1 else f"{rng.randrange(60)} * * * *" if kind < 0.55
                                else f"{rng.randrange(60)} {rng.randrange(24)} * * *")
                    jobs.create_job(actor=Actor(user=owner, user_agent="jobplane-bench"),
                                    data={"name": f"job-{n:05d}", "job_type": "bash", "script": "true",
                                          "schedule": schedule})
        log(f"{jobs_count} jobs created in {time.monotonic() - started:.1f} s")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            started = time.monotonic()
            connection.execute(text("SELECT setseed(0.42)"))
            connection.execute(text(_EXECUTIONS), {"count": executions, "now": datetime.now(UTC)})
            connection.execute(text(_RUNNING), {"running": RUNNING})
            connection.execute(text("VACUUM ANALYZE executions"))
            connection.execute(text("VACUUM ANALYZE jobs"))
            log(f"{executions} executions inserted and analyzed in {time.monotonic() - started:.1f} s")
    finally:
        engine.dispose()
    return {"team_id": team_ids[0]}


def viewers(app, team_id) -> dict:
    """name -> (actor, team_id) of the four viewers."""
    from app.extensions import db
    from app.models import User
    from app.services.actors import Actor

    def actor(email: str) -> Actor:
        return Actor(user=db.session.scalar(select(User).where(User.email == email)))

    return {"admin, all teams": (actor("admin"), None), "admin, one team": (actor("admin"), team_id),
            "team viewer": (actor("viewer@bench.test"), None),
            "job creator": (actor("creator-00-0@bench.test"), None)}


def measure(app, team_id, rounds: int) -> dict[str, list[float]]:
    """Every viewer's summary, next fires alone and the admin's whole page, interleaved in each
    round so that a change in the machine's load hits all of them alike."""
    from app.extensions import db
    from app.services import dashboard

    web = app.test_client()
    page = web.get("/login")
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    web.post("/login/token", data={"token": common.ADMIN_TOKEN, "csrf_token": csrf})
    assert web.get("/dashboard").status_code == 200
    timings: dict[str, list[float]] = {}

    def timed(name: str, step) -> None:
        started = time.perf_counter()
        step()
        timings.setdefault(name, []).append((time.perf_counter() - started) * 1000)

    with app.app_context():
        who = viewers(app, team_id)
        for name, (actor, team) in who.items():  # warm-up: caches and the plan cache
            dashboard.summary(actor=actor, team_id=team)
        for _ in range(rounds):
            for name, (actor, team) in who.items():
                timed(f"summary: {name}", lambda: dashboard.summary(actor=actor, team_id=team))
            timed("next fires alone: admin (5,000 jobs)", lambda: dashboard.next_fires(actor=who["admin, all teams"][0]))
            timed("GET /dashboard page: admin", lambda: _ok(web.get("/dashboard")))
            db.session.rollback()
    return timings


def _ok(response) -> None:
    assert response.status_code == 200, response.status_code


def explain(app) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement an admin's summary runs."""
    from app.extensions import db
    from app.services import dashboard

    captured: list[tuple[str, object]] = []
    with app.app_context():
        engine = db.session.get_bind()
        listener = lambda conn, cursor, statement, parameters, context, many: captured.append((statement, parameters))  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            dashboard.summary(actor=viewers(app, None)["admin, all teams"][0])
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        lines = []
        for statement, parameters in captured:
            if "executions" not in statement:
                continue
            plan = db.session.connection().exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            lines.append("-- " + " ".join(statement.split())[:160] + " ...")
            lines.extend("   " + row[0] for row in plan)
        db.session.rollback()
        return lines


def main() -> int:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--executions", type=int, default=720_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--explain", action="store_true", help="print the plan of every query")
    parser.add_argument("--keep", action="store_true", help="keep the seeded database for a second run")
    parser.add_argument("--reuse", action="store_true", help="measure the database a --keep run left")
    options = parser.parse_args()
    common.clear_jobplane_env()
    url = database_url()
    from app import create_app

    settings = {"DATABASE_URL": url, "REDIS_URL": common.redis_url_with_db(common.test_redis_url(), 14),
                "SECRET_KEY": "bench-secret-key", "ENV": "test", "QUEUE_NAMESPACE": "jobplane-bench-dashboard",
                "LOG_LEVEL": "WARNING"}
    if options.reuse:
        app = create_app(settings)
        with app.app_context():
            from app.extensions import db
            from app.models import Team

            team = {"team_id": db.session.scalar(select(Team.id).where(Team.name == "team-00"))}
    else:
        common.reset_database(url)
        app = create_app(settings)
        common.bootstrap_admin(app)
        team = seed(app, url, jobs_count=options.jobs, executions=options.executions)
    loadavg = common.loadavg()
    timings = measure(app, team["team_id"], options.rounds)
    print(f"# dashboard on {options.jobs} jobs and {options.executions} executions, {options.rounds} rounds "
          f"(load average at start {loadavg}, at end {common.loadavg()}, {os.cpu_count()} cores)")
    for name, values in timings.items():
        print(f"{name:40s} {common.fmt_summary(summary(values))}")
    worst = max(summary(values)["p99_ms"] for values in timings.values())
    common.print_goal("dashboard load time < 2 s (p99 of every viewer and of the page)", worst < 2000)
    if options.explain:
        print("\n".join(explain(app)))
    app.extensions["jobplane_db"].engine.dispose()
    if not options.keep:
        common.reset_database(url)  # leave no 720,000 rows behind
    return 0


if __name__ == "__main__":
    common.run_main(main)
