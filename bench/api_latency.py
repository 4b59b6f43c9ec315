"""API latency: p50/p95/p99 of four API routes, 50 concurrent clients, at the spec's 90-day volume.

What it measures
    The latency of ``GET /api/v1/jobs``, ``POST /api/v1/jobs``, ``GET /api/v1/executions/{id}``
    and ``GET /api/v1/jobs/{id}/executions`` with ``--clients`` (default 50) clients, each over
    its own keep-alive connection, one route at a time, as the bench's admin (who sees every job:
    the largest lists), in three phases per route:

      serial:    one client, one request at a time (``--serial``, 300): what one request costs
                 with no other in the server;
      paced:     the clients together send ``--rate`` requests/s, each at a steady pace; by
                 default clients x 100/60, the most that many users may send under the spec's
                 rate limit (100 requests a minute per user): the load the goals are about;
      saturated: each client sends its next request as soon as it has the answer: the
                 throughput, and how latency grows once the server is the bottleneck
                 (latency = clients / throughput).

    Two figures per phase:

      server: request received -> response sent, from gunicorn's access log (``%(D)s``): the
              spec's definition (§ API latency: "excluding network latency");
      client: request sent -> response read, in the clients (adds queueing in the client and
              the kernel; on a 2-core machine the 50 client threads share the CPU with gunicorn).

    Goals (p95 of the paced server figure): GET /jobs <= 50 ms, POST /jobs <= 100 ms,
    GET /executions/{id} <= 100 ms, GET /jobs/{id}/executions <= 100 ms.  Every answer must be
    the route's success status; any other fails the run.

How it runs
    Its own database, ``jobplane_bench_api`` (created if missing, schema dropped and migrated at
    each start), on the server of TEST_DATABASE_URL; Redis database 11 of TEST_REDIS_URL.
    Seeded with COPY: ``--jobs`` (5,000) active jobs of the admin, and ``--executions``
    (720,000: 8,000 a day for 90 days) finished executions spread over them and over 90 days,
    2% failed; the ``--sampled`` (2,000) executions the bench reads get a 4 KiB log in 4 chunks.
    Then ``jobplane web`` (gunicorn, as in production: JOBPLANE_WEB_WORKERS x WEB_THREADS,
    default 2 x 16), and per route: ``--warmup`` (200) requests, then ``--requests`` (3,000)
    measured ones per phase, spread over the clients.  JOBPLANE_API_RATE_LIMIT is raised for the bench's
    single user.  Progress goes to stderr; the report (or ``--json``) to stdout.

Running it (from the repository root; services from scripts/ensure-test-services.sh)
    . ./.test-services.env && .venv/bin/python bench/api_latency.py
    # options: --clients N (50)  --rate R (clients x 100/60)  --requests N (3000)  --warmup N (200)  --jobs N (5000)
    #          --executions N (720000)  --sampled N (2000)  --serial N (300)
    #          --web-workers N  --web-threads N (default: Jobplane's)  --json
"""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import ADMIN_HEADERS, log  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

common.set_bench_name("api-latency")
DATABASE = "jobplane_bench_api"
#: Not the tests' (15), nor the other benches' (12-14).
REDIS_DB = 11
#: p95 goals of the server figure, in ms, by route.
GOALS = {"GET /api/v1/jobs": 50, "POST /api/v1/jobs": 100, "GET /api/v1/executions/{id}": 100,
         "GET /api/v1/jobs/{id}/executions": 100}
#: gunicorn's access log line for a measured request: phase marker, method, path, status, microseconds.
ACCESS_FORMAT = "BENCH %({x-bench-phase}i)s %(m)s %(U)s %(s)s %(D)s"
ACCESS_LINE = re.compile(r"BENCH (\S+) (\S+) (\S+) (\d{3}) (\d+)")
LOG_CHUNK = "x" * 1023 + "\n"


def database_url() -> str:
    """The bench's own database on the server of TEST_DATABASE_URL, created if missing."""
    url = make_url(common.test_database_url())
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            if not connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": DATABASE}).scalar():
                log(f"creating database {DATABASE}")
                connection.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    finally:
        admin.dispose()
    return url.set(database=DATABASE).render_as_string(hide_password=False)


def _copy(cursor, table: str, columns: tuple[str, ...], rows) -> None:
    """COPY rows (tuples of text-format values, None for NULL) into table, 100,000 at a time."""
    def flush(buffer: io.StringIO) -> None:
        buffer.seek(0)
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buffer)

    buffer, count = io.StringIO(), 0
    for row in rows:
        buffer.write("\t".join("\\N" if v is None else str(v) for v in row) + "\n")
        count += 1
        if count % 100_000 == 0:
            flush(buffer)
            buffer = io.StringIO()
    flush(buffer)


def seed(engine, *, jobs: int, executions: int, sampled: int) -> dict:
    """Jobs, executions and the sampled executions' logs, by COPY. Returns ids and timings."""
    rng = random.Random(7)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    started = time.monotonic()
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT id FROM users WHERE role = 'admin'")
        owner = cursor.fetchone()[0]
        job_ids = [str(uuid.uuid4()) for _ in range(jobs)]
        job_columns = ("id", "name", "owner_id", "job_type", "script", "schedule", "timezone", "timeout_minutes",
                       "max_retries", "retry_delay_minutes", "concurrent_allowed", "status", "notification_emails",
                       "env", "created_at", "updated_at", "version", "misfire_policy", "max_lateness_seconds",
                       "concurrency_policy", "retry_delay_max_seconds", "retry_on", "network_enabled", "cpu_limit",
                       "memory_limit_mb", "max_open_files", "max_processes", "notify_on")
        _copy(cursor, "jobs", job_columns, (
            (job_id, f"job-{n}", owner, "bash", "echo hello", f"{n % 60} {n % 24} * * *", "UTC", 60, 0, 5, "f",
             "active", "[]", "{}", (now - timedelta(days=90, seconds=-n)).isoformat(), now.isoformat(), 1, "run_latest",
             3600, "forbid", 3600, '["failed", "timed_out", "lost"]', "t", 1, 2048, 1024, 256,
             '["job_failed", "job_timeout", "job_lost", "job_recovered"]')
            for n, job_id in enumerate(job_ids)))
        log(f"seeded {jobs} jobs in {time.monotonic() - started:.1f} s")
        per_job, extra = divmod(executions, jobs)
        span = timedelta(days=90)
        execution_ids: list[str] = []

        def execution_rows():
            for n, job_id in enumerate(job_ids):
                count = per_job + (1 if n < extra else 0)
                step = span / max(count, 1)
                for k in range(count):
                    scheduled = now - span + step * k + timedelta(seconds=n % 3600)
                    execution_id = str(uuid.uuid4())
                    if len(execution_ids) < sampled and rng.random() < sampled * 2 / executions:
                        execution_ids.append(execution_id)
                    failed = rng.random() < 0.02
                    duration = round(rng.uniform(0.5, 120), 3)
                    began = scheduled + timedelta(seconds=1)
                    yield (execution_id, job_id, "failed" if failed else "success", scheduled.isoformat(), "scheduled",
                           1, began.isoformat(), (began + timedelta(seconds=duration)).isoformat(), duration,
                           1 if failed else 0, scheduled.isoformat(), 1, 4096, "f", scheduled.isoformat(),
                           "scheduler", rng.randint(2000, 90000), round(duration / 3, 3), "t")

        execution_columns = ("id", "job_id", "status", "scheduled_for", "triggered_by", "attempt", "started_at",
                             "completed_at", "duration_seconds", "exit_code", "sent_at", "send_count", "log_bytes",
                             "log_truncated", "created_at", "fired_by", "peak_memory_kb", "cpu_seconds", "sandboxed")
        _copy(cursor, "executions", execution_columns, execution_rows())
        log(f"seeded {executions} executions after {time.monotonic() - started:.1f} s")
        _copy(cursor, "execution_log_chunks", ("execution_id", "seq", '"offset"', "stream", "data", "created_at"), (
            (execution_id, seq, seq * len(LOG_CHUNK), "stdout", LOG_CHUNK.replace("\n", "\\n"), now.isoformat())
            for execution_id in execution_ids for seq in range(1, 5)))
        raw.commit()
        cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    return {"job_ids": job_ids, "execution_ids": execution_ids, "seed_s": round(time.monotonic() - started, 1)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_health(port: int, process, path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jobplane web exited with {process.returncode}:\n{path.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"jobplane web did not answer /health within {timeout} s:\n{path.read_text()[-3000:]}")


def hammer(port: int, *, phase: str, requests: list[tuple[str, str, bytes | None, int]], clients: int,
           rate: float | None = None) -> list[float]:
    """Send ``requests`` (method, path, body, expected status) from ``clients`` threads, each over
    its own keep-alive connection: back to back, or with ``rate`` (requests/s, all clients
    together) each client sending at its own steady pace. Returns the client-side latencies (ms)."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    shares = [requests[i::clients] for i in range(clients)]
    headers = {**ADMIN_HEADERS, "Content-Type": "application/json", "X-Bench-Phase": phase}

    interval = clients / rate if rate else 0.0
    start = time.perf_counter() + 0.5

    def client(index: int, share):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for k, (method, path, body, expected) in enumerate(share):
            if interval:  # clients spread evenly over one interval, then each at its own pace
                time.sleep(max(0.0, start + interval * (k + index / clients) - time.perf_counter()))
            began = time.perf_counter()
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            mine.append((time.perf_counter() - began) * 1000)
            if response.status != expected:
                with lock:
                    failures.append(f"{method} {path}: {response.status} {payload[:300]!r}")
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(index, share)) for index, share in enumerate(shares) if share]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[:3]}")
    return latencies


def server_times(log_path, phase: str) -> list[float]:
    """The measured requests' durations (ms) in gunicorn's access log."""
    return [int(match.group(5)) / 1000 for match in ACCESS_LINE.finditer(log_path.read_text(errors="replace"))
            if match.group(1) == phase]


def route_requests(route: str, count: int, world: dict, rng: random.Random) -> list[tuple[str, str, bytes | None, int]]:
    if route == "GET /api/v1/jobs":
        return [("GET", "/api/v1/jobs", None, 200)] * count
    if route == "POST /api/v1/jobs":
        return [("POST", "/api/v1/jobs", json.dumps({
            "name": f"bench-{uuid.uuid4().hex[:12]}", "job_type": "bash", "script": "echo hello",
            "schedule": "*/5 * * * *"}).encode(), 201) for _ in range(count)]
    if route == "GET /api/v1/executions/{id}":
        return [("GET", f"/api/v1/executions/{rng.choice(world['execution_ids'])}", None, 200) for _ in range(count)]
    return [("GET", f"/api/v1/jobs/{rng.choice(world['job_ids'])}/executions", None, 200) for _ in range(count)]


def measure(args) -> dict:
    common.clear_jobplane_env()
    url = database_url()
    redis_url = common.redis_url_with_db(common.test_redis_url(), REDIS_DB)
    common.wait_for_free_database(url, 900)
    log(f"resetting and migrating {DATABASE}")
    common.reset_database(url)
    namespace = f"jobplane-api-latency-{uuid.uuid4().hex[:8]}"
    settings = {"DATABASE_URL": url, "REDIS_URL": redis_url, "SECRET_KEY": "bench-secret-key", "ENV": "test",
                "QUEUE_NAMESPACE": namespace, "LOG_LEVEL": "WARNING", "PORT": free_port(),
                # one user sends every request: the per-user limit (spec: 100 a minute) would throttle it
                "API_RATE_LIMIT": "100000000 per minute",
                **({"WEB_WORKERS": args.web_workers} if args.web_workers else {}),
                **({"WEB_THREADS": args.web_threads} if args.web_threads else {})}
    from app import create_app

    app = create_app(dict(settings))
    common.bootstrap_admin(app)
    app.extensions["jobplane_db"].engine.dispose()
    web_workers, web_threads = app.config["WEB_WORKERS"], app.config["WEB_THREADS"]
    worker_class = app.config["WEB_WORKER_CLASS"]
    engine = create_engine(url)
    world = seed(engine, jobs=args.jobs, executions=args.executions, sampled=args.sampled)
    with engine.connect() as connection:
        counts = {table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                  for table in ("jobs", "executions", "execution_log_chunks")}
    engine.dispose()
    work_dir = Path(tempfile.mkdtemp(prefix="jobplane-api-latency-"))
    processes = common.Processes(settings, work_dir)
    os.environ["GUNICORN_CMD_ARGS"] = f"--access-logformat '{ACCESS_FORMAT}'"
    rng = random.Random(11)
    routes = {}
    try:
        web, web_log = processes.start("web")
        wait_for_health(settings["PORT"], web, web_log)
        quiet = common.wait_for_quiet(args.quiet_wait)
        for route in GOALS:
            log(f"{route}: {args.warmup} warm-up requests, then {args.requests} from {args.clients} clients")
            hammer(settings["PORT"], phase="warmup", requests=route_requests(route, args.warmup, world, rng),
                   clients=args.clients)
            routes[route] = {}
            for mode, clients, count, rate in (("serial", 1, args.serial, None),
                                               ("paced", args.clients, args.requests, args.rate),
                                               ("saturated", args.clients, args.requests, None)):
                phase = f"{mode}-" + re.sub(r"\W+", "-", route).strip("-")
                began = time.monotonic()
                client = hammer(settings["PORT"], phase=phase, clients=clients, rate=rate,
                                requests=route_requests(route, count, world, rng))
                elapsed = time.monotonic() - began
                time.sleep(0.5)  # gunicorn writes the access log after the response
                routes[route][mode] = {"server": common.summary(server_times(web_log, phase)),
                                       "client": common.summary(client),
                                       "requests_per_s": round(len(client) / elapsed, 1)}
                log(f"{route} {mode}: {routes[route][mode]['requests_per_s']} requests/s, server "
                    f"{common.fmt_summary(routes[route][mode]['server'])}")
    finally:
        processes.stop_all()
        os.environ.pop("GUNICORN_CMD_ARGS", None)
        common.forget_queue(redis_url, namespace)
        shutil.rmtree(work_dir, ignore_errors=True)
    return {"routes": routes, "rows": counts, "seed_s": world["seed_s"], "busy_cores_before_start": quiet,
            "web_workers": web_workers, "web_threads": web_threads, "web_worker_class": worker_class}


def print_report(result: dict) -> None:
    common.print_report_head(f"API latency: {result['clients']} concurrent clients, {result['rows']['jobs']} jobs, "
                             f"{result['rows']['executions']} executions", result, bubblewrap=False)
    per_worker = (f"{result['web_threads']} threads" if result.get("web_worker_class") == "gthread"
                  else "greenlets")
    print(f"  gunicorn      {result['web_workers']} {result.get('web_worker_class', 'gthread')} workers x "
          f"{per_worker} (jobplane web)")
    print(f"  seeded        in {result['seed_s']} s (COPY)")
    common.print_load_and_code(result)
    print(f"  paced         {result['rate']} requests/s offered by {result['clients']} clients together; "
          f"saturated: back to back; serial: one client")
    for route, modes in result["routes"].items():
        print(f"  {route}")
        for mode, figures in modes.items():
            print(f"    {mode:9s} server {common.fmt_summary(figures['server'])}")
            print(f"    {'':9s} client {common.fmt_summary(figures['client'])}  ({figures['requests_per_s']} requests/s)")
    for route, goal in result["goals"].items():
        common.print_goal(f"{route} paced, server p95 {goal['p95_ms']} ms <= {goal['goal_ms']} ms", goal["met"])


def main(argv: list[str] | None = None) -> int:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=3000,
                        help="measured requests per route and phase (default 3000)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up requests per route (default 200)")
    parser.add_argument("--serial", type=int, default=300,
                        help="requests per route from one client, one at a time (default 300)")
    parser.add_argument("--rate", type=float, default=None,
                        help="requests/s of the paced phase, all clients together (default: what the spec's "
                             "rate limit, 100 a minute per user, lets that many users send: clients x 100/60)")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--executions", type=int, default=720_000)
    parser.add_argument("--sampled", type=int, default=2000, help="executions read, each with a 4 KiB log")
    parser.add_argument("--web-workers", type=int, default=None, help="JOBPLANE_WEB_WORKERS (default: Jobplane's)")
    parser.add_argument("--web-threads", type=int, default=None, help="JOBPLANE_WEB_THREADS (default: Jobplane's)")
    common.add_quiet_wait_option(parser)
    common.add_json_option(parser)
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < args.clients or args.jobs < 1 or args.executions < args.jobs:
        parser.error("need clients >= 1, requests >= clients, jobs >= 1 and executions >= jobs")
    args.rate = args.rate or round(args.clients * 100 / 60, 1)
    loadavg_at_start = common.loadavg()
    measured = measure(args)
    goals = {route: {"goal_ms": goal, "p95_ms": measured["routes"][route]["paced"]["server"]["p95_ms"],
                     "met": measured["routes"][route]["paced"]["server"]["p95_ms"] <= goal}
             for route, goal in GOALS.items()}
    result = {**common.result_head("api_latency", "request received -> response sent (gunicorn %(D)s) and "
                                                  "client round trip, per route, 50 clients"),
              "clients": args.clients, "rate": args.rate, "requests_per_route": args.requests, **measured, "goals": goals,
              **common.result_tail(loadavg_at_start)}
    common.print_result(result, as_json=args.json, report=print_report)
    return 0 if all(goal["met"] for goal in goals.values()) else 1


if __name__ == "__main__":
    common.run_main(main)
