"""Metrics and probes: how long the web's /metrics, /ready and /health take at the spec's scale.

What it measures
    The web's ``/metrics`` reads its platform gauges from PostgreSQL (executions queued and running
    by job type) and Redis (queue depth) at every scrape, and ``/ready`` checks PostgreSQL, Redis and
    the schema's revision on connections of its own.  Both must stay cheap with a full history:
    ``--jobs`` active jobs (default 5,000, the spec's), ``--finished`` finished executions (default
    720,000: the spec's 8,000 a day for 90 days), ``--running`` running (450, the spec's peak) and
    ``--queued`` queued ones (500, the backlog alert's threshold).  ``/health`` is the baseline: a
    request doing nothing but the request-id and request-metrics hooks.  Requests go through the
    Flask test client in this process (the server's own time, no network); ``--rounds`` of each,
    interleaved, after 20 warm-up rounds.

How it runs
    On the database named by ``--database`` on the server of TEST_DATABASE_URL (default
    ``jobplane_bench``; its schema is dropped and migrated), and Redis database 14 of
    TEST_REDIS_URL.  Jobs are created through the service layer, executions with one INSERT ...
    SELECT each kind.

Running it (from the repository root; services from scripts/ensure-test-services.sh)
    . ./.test-services.env && .venv/bin/python bench/metrics_scrape.py
    # options: --database NAME  --jobs N  --finished N  --running N  --queued N  --rounds N  --json
"""

from __future__ import annotations

import argparse
import json
import time

from common import (ADMIN_TOKEN, bootstrap_admin, clear_jobplane_env, create_jobs_in_bulk, fmt_summary, log,
                    redis_url_with_db, reset_database, set_bench_name, summary, test_database_url,
                    test_redis_url)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

_EXECUTIONS = text("""
    INSERT INTO executions (id, job_id, status, scheduled_for, triggered_by, attempt, started_at, completed_at,
                            duration_seconds, exit_code, sent_at, send_count, log_bytes, log_truncated, created_at,
                            heartbeat_at)
    SELECT gen_random_uuid(), jobs[1 + n % array_length(jobs, 1)], :status,
           now() - make_interval(secs => n * 10 + :offset), 'scheduled', 1,
           CASE WHEN :status = 'queued' THEN NULL ELSE now() - make_interval(secs => n * 10) END,
           CASE WHEN :status = 'success' THEN now() - make_interval(secs => n * 10 - 1) END,
           CASE WHEN :status = 'success' THEN 1.0 END, CASE WHEN :status = 'success' THEN 0 END,
           now(), 1, 0, false, now() - make_interval(secs => n * 10), now()
      FROM generate_series(1, :count) AS n, (SELECT array_agg(id) AS jobs FROM jobs) AS j
""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="jobplane_bench")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--finished", type=int, default=720_000)
    parser.add_argument("--running", type=int, default=450)
    parser.add_argument("--queued", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    set_bench_name("metrics")
    clear_jobplane_env()
    url = make_url(test_database_url()).set(database=args.database).render_as_string(hide_password=False)
    reset_database(url)

    from app import create_app

    app = create_app({"ENV": "test", "DATABASE_URL": url, "REDIS_URL": redis_url_with_db(test_redis_url(), 14),
                      "SECRET_KEY": "bench", "QUEUE_NAMESPACE": "jobplane-bench-metrics",
                      "BOOTSTRAP_ADMIN_TOKEN": ADMIN_TOKEN})
    bootstrap_admin(app)
    log(f"creating {args.jobs} jobs")
    create_jobs_in_bulk(app, [{"name": f"job-{n}", "script": "true", "schedule": "0 3 * * *"}
                              for n in range(args.jobs)])
    engine = create_engine(url)
    with engine.begin() as connection:
        for status, count, offset in (("success", args.finished, 100), ("running", args.running, 3),
                                      ("queued", args.queued, 7)):
            log(f"inserting {count} {status} executions")
            connection.execute(_EXECUTIONS, {"status": status, "count": count, "offset": offset})
    with engine.begin() as connection:
        connection.execute(text("ANALYZE executions"))
    engine.dispose()

    client = app.test_client()
    timings: dict[str, list[float]] = {"/metrics": [], "/ready": [], "/health": []}
    for round_ in range(args.rounds + 20):
        for path, samples in timings.items():
            started = time.perf_counter()
            response = client.get(path)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {response.status_code} {response.get_data(True)[:300]}")
            if round_ >= 20:
                samples.append(elapsed)
    body = client.get("/metrics").get_data(as_text=True)
    running = [line for line in body.splitlines()
               if line.startswith('jobplane_executions{job_type="bash",status="running"')]
    results = {path: summary(samples) for path, samples in timings.items()}
    if args.json:
        print(json.dumps({"args": vars(args), "results": results, "sample": running}, indent=2))
    else:
        print(f"jobs {args.jobs}, executions: {args.finished} finished, {args.running} running, {args.queued} queued; "
              f"{args.rounds} rounds each, in-process")
        for path, result in results.items():
            print(f"  {path:9} {fmt_summary(result)}")
        print(f"  scraped: {running[0] if running else 'no running gauge!'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
