"""API lists, metrics and idempotent creates: latency of the read routes at the specification's
scale (5,000 jobs, 8,000 executions a day for 30 days), and of POST /jobs with an Idempotency-Key.

What it measures
    The time from the request entering the Flask app to its response (the in-process test
    client: no network and no gunicorn, so a deployment adds their cost) of:

      jobs default      GET /api/v1/jobs (admin, page 1 of 10, newest first)
      jobs filtered     GET /api/v1/jobs?q=report&status=active&sort=name&page_size=100
      jobs by owner     GET /api/v1/jobs?owner=<email>&sort=-updated_at&page=20
      jobs deep page    GET /api/v1/jobs?page=450&page_size=10 (admin: OFFSET 4,490)
      jobs creator      GET /api/v1/jobs as a job creator (their 1,250 jobs)
      executions        GET /api/v1/jobs/{id}/executions?status=success,failed&started_after=<-30 d>&sort=-duration
      metrics 30 d      GET /api/v1/jobs/{id}/metrics?days=30  (the job has 8,640 runs in 90 days)
      metrics 90 d      GET /api/v1/jobs/{id}/metrics?days=90
      create keyed      POST /api/v1/jobs with a new Idempotency-Key
      create replayed   the same POST again: the stored response

    Goals (spec §10, API latency): GET /api/v1/jobs p95 < 200 ms; POST /api/v1/jobs p95 < 800 ms.
    The metrics route has no goal of its own; its figures are reported.

How it runs
    Database ``jobplane_bench`` reset (waiting for other benches to finish with it). 5,000 jobs
    through the service layer, spread over four owners in two teams by SQL; 240,000 executions
    (8,000 a day over 30 days, random jobs, 80 % success, durations 1-120 s) and, for the
    measured job, one run every 15 minutes for 90 days, inserted by SQL. Each route is asked
    ``--warmup`` times unmeasured, then ``--rounds`` times (default 200; creates: --rounds / 2).

Running it (from the repository root; services from scripts/ensure-test-services.sh)
    . ./.test-services.env && .venv/bin/python bench/api_lists.py
    # options: --rounds N (200)  --warmup N (20)  --json
"""

from __future__ import annotations

import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import ADMIN_HEADERS, fmt_summary, log, summary  # noqa: E402

from sqlalchemy import text  # noqa: E402

OWNERS = (("alice", "data"), ("amir", "data"), ("bob", "web"))
GOALS = {"jobs default": 200, "jobs filtered": 200, "jobs by owner": 200, "jobs deep page": 200,
         "jobs creator": 200, "create keyed": 800, "create replayed": 800}

_EXECUTIONS = """
INSERT INTO executions (id, job_id, status, scheduled_for, triggered_by, attempt, started_at, completed_at,
                        duration_seconds, sent_at, send_count, log_bytes, log_truncated, created_at)
SELECT gen_random_uuid(), j.id, s.status, s.at, 'scheduled', 1, s.at, s.at + make_interval(secs => s.d), s.d,
       s.at, 1, 0, false, s.at
  FROM (SELECT n, now() - make_interval(secs => random() * :seconds) AS at,
               CASE WHEN random() < 0.8 THEN 'success' ELSE 'failed' END AS status,
               1 + random() * 119 AS d, (random() * (:jobs - 1))::int AS pick
          FROM generate_series(1, :count) AS n) s
  JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM jobs) j ON j.k = s.pick
"""
_MEASURED_JOB_RUNS = """
INSERT INTO executions (id, job_id, status, scheduled_for, triggered_by, attempt, started_at, completed_at,
                        duration_seconds, sent_at, send_count, log_bytes, log_truncated, created_at)
SELECT gen_random_uuid(), :job, CASE WHEN n % 10 = 0 THEN 'failed' ELSE 'success' END, at, 'scheduled', 1, at,
       at + make_interval(secs => 5 + n % 60), 5 + n % 60, at, 1, 0, false, at
  FROM (SELECT n, date_trunc('minute', now()) - make_interval(mins => 15 * n) AS at
          FROM generate_series(1, 8640) AS n) s
"""


def seed(app, engine) -> dict:
    """Owners, 5,000 jobs and their executions; returns what the requests need."""
    from app.extensions import db
    from app.models import Team
    from app.services import api_tokens, users
    from app.services.actors import SYSTEM

    headers, ids = {}, {}
    with app.app_context():
        teams = {name: Team(name=name) for name in ("data", "web")}
        db.session.add_all(teams.values())
        db.session.flush()
        for name, team in OWNERS:
            user = users.create_user(actor=SYSTEM, email=f"{name}@example.com", role="job_creator",
                                     team_id=teams[team].id)
            _, token = api_tokens.issue_token(actor=SYSTEM, user=user, name="bench")
            headers[name], ids[name] = {"Authorization": f"Bearer {token}"}, (user.id, teams[team].id)
        db.session.commit()
    words = ("report", "backup", "export", "sync", "cleanup")
    log("creating 5,000 jobs")
    job_ids = common.create_jobs_in_bulk(app, [{"name": f"{words[n % 5]}-{n}", "script": "true"}
                                               for n in range(5000)])
    with engine.begin() as connection:
        # a quarter each to the admin and the three job creators
        for k, (name, _) in enumerate(OWNERS, start=1):
            user_id, team_id = ids[name]
            connection.execute(text("UPDATE jobs SET owner_id = :user, team_id = :team WHERE id = ANY(:ids)"),
                               {"user": user_id, "team": team_id,
                                "ids": [uuid.UUID(i) for i in job_ids[k::4]]})
        log("inserting 240,000 executions and 8,640 for the measured job")
        connection.execute(text(_EXECUTIONS), {"seconds": 30 * 86400, "jobs": 5000, "count": 240_000})
        connection.execute(text(_MEASURED_JOB_RUNS), {"job": uuid.UUID(job_ids[0])})
        connection.execute(text("ANALYZE"))
    return {"headers": headers, "job": job_ids[0]}


def measure(client, method: str, url: str, headers: dict, *, rounds: int, warmup: int, body=None,
            expect: int = 200, fresh_key: bool = False, key: str | None = None) -> dict:
    """Milliseconds of ``rounds`` requests after ``warmup`` unmeasured ones."""
    samples = []
    for n in range(warmup + rounds):
        extra = {"Idempotency-Key": f"bench-{uuid.uuid4()}"} if fresh_key else (
            {"Idempotency-Key": key} if key else {})
        json_body = {**body, "name": f"{body['name']}-{n}"} if fresh_key else body
        started = time.perf_counter()
        response = client.open(url, method=method, headers={**headers, **extra}, json=json_body)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != expect:
            raise RuntimeError(f"{method} {url}: HTTP {response.status_code} {response.get_data(True)[:300]}")
        if n >= warmup:
            samples.append(elapsed)
    return summary(samples)


def main() -> int:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    common.add_json_option(parser)
    args = parser.parse_args()
    common.set_bench_name("api_lists")
    common.clear_jobplane_env()
    load_at_start = common.loadavg()
    url = common.bench_database_url(common.test_database_url())
    common.wait_for_free_database(url)
    common.reset_database(url)
    from sqlalchemy import create_engine

    from app import create_app

    app = create_app({"ENV": "test", "DATABASE_URL": url, "SECRET_KEY": "bench",
                      "REDIS_URL": common.redis_url_with_db(common.test_redis_url(), common.BENCH_REDIS_DB),
                      "QUEUE_NAMESPACE": f"bench-lists-{uuid.uuid4().hex[:6]}", "API_RATE_LIMIT": "1000000 per minute"})
    engine = create_engine(url)
    try:
        common.bootstrap_admin(app)
        world = seed(app, engine)
        client, job = app.test_client(), world["job"]
        since = "2000-01-01T00:00:00Z"
        create = {"name": "bench-create", "job_type": "bash", "script": "true", "schedule": "0 3 * * *"}
        plan = [
            ("jobs default", "GET", "/api/v1/jobs", ADMIN_HEADERS, {}),
            ("jobs filtered", "GET", "/api/v1/jobs?q=report&status=active&sort=name&page_size=100", ADMIN_HEADERS, {}),
            ("jobs by owner", "GET", "/api/v1/jobs?owner=alice@example.com&sort=-updated_at&page=20", ADMIN_HEADERS,
             {}),
            ("jobs deep page", "GET", "/api/v1/jobs?page=450&page_size=10", ADMIN_HEADERS, {}),
            ("jobs creator", "GET", "/api/v1/jobs", world["headers"]["bob"], {}),
            ("executions", "GET", f"/api/v1/jobs/{job}/executions?status=success,failed&started_after={since}"
                                  "&sort=-duration", ADMIN_HEADERS, {}),
            ("metrics 30 d", "GET", f"/api/v1/jobs/{job}/metrics?days=30", ADMIN_HEADERS, {}),
            ("metrics 90 d", "GET", f"/api/v1/jobs/{job}/metrics?days=90", ADMIN_HEADERS, {}),
            ("create keyed", "POST", "/api/v1/jobs", ADMIN_HEADERS,
             {"body": create, "expect": 201, "fresh_key": True, "rounds": max(args.rounds // 2, 1)}),
        ]
        results = {}
        for name, method, path, headers, how in plan:
            log(f"measuring {name}")
            options = {"rounds": args.rounds, "warmup": args.warmup, **how}
            results[name] = measure(client, method, path, headers, **options)
        replayed = {**create, "name": "bench-replayed"}
        client.post("/api/v1/jobs", json=replayed, headers={**ADMIN_HEADERS, "Idempotency-Key": "bench-replay"})
        log("measuring create replayed")
        results["create replayed"] = measure(client, "POST", "/api/v1/jobs", ADMIN_HEADERS, body=replayed,
                                             expect=201, key="bench-replay", rounds=max(args.rounds // 2, 1),
                                             warmup=args.warmup)
    finally:
        engine.dispose()
        app.extensions["jobplane_db"].engine.dispose()
    goals = {name: results[name]["p95_ms"] < limit for name, limit in GOALS.items()}
    result = {**common.result_head("api_lists", "request latency in the app, ms"), "routes": results,
              "goals_met": goals, **common.result_tail(load_at_start)}
    common.print_result(result, as_json=args.json, report=report)
    return 0 if all(goals.values()) else 1


def report(result: dict) -> None:
    common.print_report_head("API lists, metrics and idempotent creates (5,000 jobs, 248,640 executions)", result,
                             bubblewrap=False)
    for name, figures in result["routes"].items():
        goal = f"  goal p95 < {GOALS[name]} ms" if name in GOALS else ""
        print(f"  {name:16s}{fmt_summary(figures)}{goal}")
    common.print_goal("GET /api/v1/jobs p95 < 200 ms and POST /api/v1/jobs p95 < 800 ms",
                      all(result["goals_met"].values()))


if __name__ == "__main__":
    common.run_main(main)
