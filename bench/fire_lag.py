"""Fire lag benchmark: scheduled fire time -> the job's own process start.

What it measures
    For jobs firing every second (6-field cron ``* * * * * *``), the time from an execution's
    scheduled fire time (``executions.scheduled_for``) to the moment the job's script itself
    starts, as the script reports it: its first line is ``echo "START $(date +%s.%N)"``, and
    lag = that timestamp - scheduled_for.  This is the whole fire path with real processes:
    APScheduler in ``jobplane scheduler`` -> execution row in PostgreSQL -> Dramatiq message
    on Redis -> ``jobplane worker`` claims it -> bash under bubblewrap.

    Besides the total, the lag is split at two timestamps Jobplane records itself:
    ``created_at`` (the scheduler's clock just before it inserts the execution; the message is
    sent after that commit) and ``started_at`` (the worker's clock just before it spawns the
    sandbox, after the claim).  So: fire -> insert (scheduler), insert -> spawn (commit, Redis,
    Dramatiq polling, claim), spawn -> script start (bubblewrap + bash + ``date``).  Fires
    whose message had to be sent again by the sweeper are counted in the lag but listed apart
    from the stages.

How it runs
    One ``jobplane scheduler`` and one ``jobplane worker`` (WORKER_PROCESSES=1,
    WORKER_THREADS=8, WORKER_POLL_MS=100, SANDBOX=bubblewrap) on a database of its own,
    ``jobplane_bench`` (created if missing, schema dropped and migrated at start), and a unique
    queue namespace in Redis database 14 of the server of TEST_REDIS_URL -- not the tests'
    database 15, which every test empties (FLUSHDB), losing a running bench's messages.  After the scheduler logs "became the
    scheduler leader" and the worker is ready, it creates ``--jobs`` jobs through the API
    (in-process Flask test client).  The first 2 seconds of each job's fires are a warm-up and
    are excluded; the next ceil(--fires / --jobs) fire times of each job are measured.  Then
    both processes are stopped (SIGTERM, then SIGKILL of their process groups) -- also on
    any error or Ctrl-C.  The run is bounded: it gives up after a fixed deadline.

Running it (from the repository root; services from scripts/ensure-test-services.sh)
    make bench
    # or
    . ./.test-services.env && .venv/bin/python bench/fire_lag.py --fires 120
    # options: --fires N (>= 100, default 120)  --jobs N (default 4)  --json

Output
    A report on stdout (progress on stderr): fires measured, p50/p95/p99/max lag in ms
    (nearest-rank percentiles), executions that did not succeed or never ran, the machine
    and the command line.  ``--json`` prints the same as one JSON object instead.
    Exit status 0 when at least --fires lags were measured, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

#: The console script next to this interpreter (the virtualenv's).
JOBPLANE = str(Path(sys.executable).with_name("jobplane"))
BENCH_DATABASE = "jobplane_bench"
ADMIN_TOKEN = "jp_bench_admin_token_000000"
WARMUP_SECONDS = 2
#: Not the tests' Redis database (15): their fixtures FLUSHDB it.
BENCH_REDIS_DB = 14
WORKER_PROCESSES = 1
WORKER_THREADS = 8
WORKER_POLL_MS = 100
#: Not the default lock id, so a bench never competes with another scheduler on this server.
SCHEDULER_LOCK_ID = 7_402_119
SCRIPT = 'echo "START $(date +%s.%N)"\n'
START_LINE = re.compile(r"^START (\d+\.\d+)\s*$", re.MULTILINE)
TERMINAL = ("success", "failed", "timed_out", "cancelled", "lost")


def log(message: str) -> None:
    print(f"[fire_lag {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- database ---------------------------------------------------------------------------------

def bench_database_url(test_url: str) -> str:
    """The bench's own database on the server of TEST_DATABASE_URL, created if missing."""
    url = make_url(test_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                        {"name": BENCH_DATABASE}).scalar()
            if not exists:
                log(f"creating database {BENCH_DATABASE}")
                connection.execute(text(f'CREATE DATABASE "{BENCH_DATABASE}"'))
    finally:
        admin.dispose()
    return url.set(database=BENCH_DATABASE).render_as_string(hide_password=False)


def reset_database(url: str) -> None:
    from app.migrate import upgrade

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    upgrade(url)


def bench_redis_url(test_url: str) -> str:
    """The Redis server of TEST_REDIS_URL, database BENCH_REDIS_DB."""
    parts = urlsplit(test_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{BENCH_REDIS_DB}", parts.query, parts.fragment))


# --- processes --------------------------------------------------------------------------------

def process_env(settings: dict) -> dict[str, str]:
    """This process's environment minus every JOBPLANE_* variable, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPLANE_")}
    env.update({f"JOBPLANE_{key}": str(value) for key, value in settings.items()})
    return env


class Processes:
    """The jobplane processes this run started, each in its own session and log file."""

    def __init__(self, settings: dict, log_dir: Path):
        self.settings = settings
        self.log_dir = log_dir
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, command: str, **extra) -> tuple[subprocess.Popen, Path]:
        path = self.log_dir / f"{command}.log"
        with open(path, "wb") as handle:
            process = subprocess.Popen([JOBPLANE, command], env=process_env({**self.settings, **extra}),
                                       cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, stdout=handle,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append((process, path))
        return process, path

    def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM every process group, then SIGKILL what is still there after ``grace``."""
        for process, _ in self.started:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process, _ in self.started:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for process, _ in self.started:
            _signal_group(process, signal.SIGKILL)  # the group: Dramatiq's children, sandboxes
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"process {process.pid} did not die")

    def tails(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}"
                         for _, path in self.started)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # start_new_session: the group id is the pid
    except (ProcessLookupError, PermissionError):
        pass


def wait_for_log(process: subprocess.Popen, path: Path, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in path.read_text(errors="replace"):
        if process.poll() is not None:
            raise RuntimeError(f"{path.stem} exited with {process.returncode} before logging "
                               f"{needle!r}:\n{path.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path.stem} did not log {needle!r} within {timeout} s:\n"
                               f"{path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


# --- jobs and results -------------------------------------------------------------------------

def bootstrap_admin(app) -> None:
    """The first admin, with a known token; before any jobplane process starts (each of them
    would otherwise create an admin with a random token)."""
    from app.extensions import db
    from app.services import users

    with app.app_context():
        token = users.bootstrap_admin(token=ADMIN_TOKEN)
        db.session.commit()
    if token != ADMIN_TOKEN:
        raise RuntimeError("the freshly reset database already had an admin")


def create_jobs(app, count: int) -> list[str]:
    client = app.test_client()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ids = []
    for n in range(1, count + 1):
        response = client.post("/api/v1/jobs", headers=headers, json={
            "name": f"lag-{n}", "job_type": "bash", "script": SCRIPT, "schedule": "* * * * * *"})
        if response.status_code != 201:
            raise RuntimeError(f"creating job lag-{n}: HTTP {response.status_code} {response.get_data(True)}")
        ids.append(response.json["id"])
    return ids


_ROWS = text("""
    SELECT e.id::text AS id, e.job_id::text AS job_id, e.scheduled_for, e.status, e.created_at,
           e.started_at, e.completed_at, e.send_count, e.attempt, e.error_message,
           (SELECT string_agg(c.data, '' ORDER BY c.seq) FROM execution_log_chunks c
             WHERE c.execution_id = e.id AND c.stream = 'stdout') AS stdout
      FROM executions e
     WHERE e.triggered_by = 'scheduled'
     ORDER BY e.job_id, e.scheduled_for
""")


def fetch(engine) -> list[dict]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(_ROWS)]


def window_of(rows: list[dict], job_ids: list[str], per_job: int) -> dict[str, list[datetime]]:
    """Per job: the fire times measured (after its first fire's warm-up), once it has fired."""
    first: dict[str, datetime] = {}
    for row in rows:
        if row["job_id"] not in first or row["scheduled_for"] < first[row["job_id"]]:
            first[row["job_id"]] = row["scheduled_for"]
    return {job: [first[job] + timedelta(seconds=WARMUP_SECONDS + i) for i in range(per_job)]
            for job in job_ids if job in first}


def collect(engine, job_ids: list[str], per_job: int, deadline: float) -> tuple[list[dict], bool]:
    """Poll until every measured fire time of every job has a finished execution (or deadline)."""
    last_report = 0.0
    while True:
        rows = fetch(engine)
        window = window_of(rows, job_ids, per_job)
        by_key = {(r["job_id"], r["scheduled_for"]): r for r in rows}
        wanted = [(job, t) for job, times in window.items() for t in times]
        done = sum(1 for key in wanted if key in by_key and by_key[key]["status"] in TERMINAL)
        complete = len(window) == len(job_ids) and done == len(wanted)
        if complete or time.monotonic() > deadline:
            return rows, complete
        if time.monotonic() - last_report > 5:
            log(f"{done}/{per_job * len(job_ids)} measured fires finished "
                f"({len(rows)} executions so far)")
            last_report = time.monotonic()
        time.sleep(0.5)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(ordered), "min_ms": round(ordered[0], 2), "p50_ms": round(percentile(ordered, 50), 2),
            "p95_ms": round(percentile(ordered, 95), 2), "p99_ms": round(percentile(ordered, 99), 2),
            "max_ms": round(ordered[-1], 2), "mean_ms": round(sum(ordered) / len(ordered), 2)}


def analyse(rows: list[dict], job_ids: list[str], per_job: int) -> dict:
    window = window_of(rows, job_ids, per_job)
    by_key = {(r["job_id"], r["scheduled_for"]): r for r in rows}
    lags, to_insert, to_spawn, spawn_to_start = [], [], [], []
    not_successful: dict[str, int] = {}
    missing, unparsed, resent, worst, resent_lags = 0, 0, 0, [], []
    expected = per_job * len(job_ids)
    for job in job_ids:
        for fire_time in window.get(job, []):
            row = by_key.get((job, fire_time))
            if row is None:
                missing += 1
                continue
            if row["send_count"] > 1:
                resent += 1
            if row["status"] != "success":
                not_successful[row["status"]] = not_successful.get(row["status"], 0) + 1
                continue
            match = START_LINE.search(row["stdout"] or "")
            if not match:
                unparsed += 1
                continue
            scheduled = row["scheduled_for"].timestamp()
            start = float(match.group(1))
            lag_ms = (start - scheduled) * 1000
            lags.append(lag_ms)
            worst.append((lag_ms, fire_time.isoformat(), row["id"]))
            if row["send_count"] > 1:
                # The sweeper sent it again (its first message was lost): its lag counts, but it
                # would blur the stages, which describe the normal path.
                resent_lags.append((lag_ms, fire_time.isoformat()))
                continue
            to_insert.append((row["created_at"].timestamp() - scheduled) * 1000)
            to_spawn.append((row["started_at"].timestamp() - row["created_at"].timestamp()) * 1000)
            spawn_to_start.append((start - row["started_at"].timestamp()) * 1000)
    worst.sort(reverse=True)
    # The scheduler records the fires due in the same second one after another: fire -> insert
    # by position within the second (1 = first recorded) shows what each fire costs it.
    by_second: dict[datetime, list[float]] = {}
    for job in job_ids:
        for fire_time in window.get(job, []):
            row = by_key.get((job, fire_time))
            if row is not None:
                by_second.setdefault(fire_time, []).append((row["created_at"] - fire_time).total_seconds() * 1000)
    positions: dict[int, list[float]] = {}
    for offsets in by_second.values():
        for position, offset in enumerate(sorted(offsets), start=1):
            positions.setdefault(position, []).append(offset)
    window_start = min((times[0] for times in window.values()), default=None)
    window_end = max((times[-1] for times in window.values()), default=None)
    return {
        "expected_fires": expected,
        "measured_fires": len(lags),
        "lag": summary(lags),
        "stages": {
            "fire_to_insert": summary(to_insert),
            "insert_to_spawn": summary(to_spawn),
            "spawn_to_script_start": summary(spawn_to_start),
        },
        "fire_to_insert_by_position": {str(k): summary(v) for k, v in sorted(positions.items())},
        "not_successful": sum(not_successful.values()),
        "not_successful_by_status": not_successful,
        "never_ran": missing,
        "no_start_line": unparsed,
        "sent_more_than_once": resent,
        "resent_fires": [{"lag_ms": round(l, 2), "scheduled_for": t} for l, t in resent_lags],
        "worst": [{"lag_ms": round(l, 2), "scheduled_for": t, "execution_id": i} for l, t, i in worst[:5]],
        "window": {"from": window_start.isoformat() if window_start else None,
                   "to": window_end.isoformat() if window_end else None},
        "executions_total": len(rows),
        "executions_by_status": _count_by(rows, "status"),
    }


def _count_by(rows: list[dict], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[key]] = counts.get(row[key], 0) + 1
    return counts


def machine_info(loadavg_at_start: list[float]) -> dict:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    bwrap = shutil.which("bwrap")
    bwrap_version = None
    if bwrap:
        try:
            bwrap_version = subprocess.run([bwrap, "--version"], capture_output=True, text=True,
                                           timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "loadavg_at_start": loadavg_at_start,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "bubblewrap": bwrap_version,
    }


def print_report(result: dict) -> None:
    a, m = result["analysis"], result["machine"]
    lag = a["lag"]
    print("Fire lag: scheduled fire time -> job script start (its own `date +%s.%N`)")
    print(f"  date          {result['date']}")
    print(f"  command       {result['command']}")
    print(f"  machine       nproc={m['nproc']}  cpu={m['cpu_model']}  kernel={m['kernel']}  "
          f"python={m['python']}  {m['bubblewrap']}  loadavg start/end={m['loadavg_at_start']}/{m['loadavg_at_end']}")
    print(f"  setup         {result['jobs']} jobs x '* * * * * *', 1 scheduler, 1 worker "
          f"(processes={WORKER_PROCESSES}, threads={WORKER_THREADS}, WORKER_POLL_MS={WORKER_POLL_MS}, "
          f"SANDBOX=bubblewrap), PostgreSQL db {BENCH_DATABASE}, "
          f"Redis db {BENCH_REDIS_DB}")
    print(f"  warm-up       first {WARMUP_SECONDS} s of each job's fires excluded; measured fire times "
          f"{a['window']['from']} .. {a['window']['to']}")
    print()
    print(f"  fires measured      {a['measured_fires']} of {a['expected_fires']} expected")
    if lag["n"]:
        print(f"  lag p50             {lag['p50_ms']:8.1f} ms")
        print(f"  lag p95             {lag['p95_ms']:8.1f} ms")
        print(f"  lag p99             {lag['p99_ms']:8.1f} ms")
        print(f"  lag max             {lag['max_ms']:8.1f} ms")
        print(f"  lag min / mean      {lag['min_ms']:8.1f} / {lag['mean_ms']:.1f} ms")
    print(f"  not successful      {a['not_successful']} {a['not_successful_by_status'] or ''}")
    print(f"  never ran           {a['never_ran']} (fire times in the window with no execution)")
    print(f"  no START line       {a['no_start_line']}")
    resent = ", ".join(f"{r['lag_ms']:.0f} ms @ {r['scheduled_for']}" for r in a["resent_fires"])
    print(f"  sent more than once {a['sent_more_than_once']} (first message lost; sent again by the sweeper)"
          + (f": lag {resent}" if resent else ""))
    print()
    print(f"  {'where the time goes (fires sent once, ms)':40s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'max':>8s}")
    names = {"fire_to_insert": "fire -> execution insert (scheduler)",
             "insert_to_spawn": "insert -> sandbox spawn (queue+claim)",
             "spawn_to_script_start": "spawn -> script start (bwrap+bash)"}
    for key, label in names.items():
        s = a["stages"][key]
        if s["n"]:
            print(f"    {label:38s} {s['p50_ms']:8.1f} {s['p95_ms']:8.1f} {s['p99_ms']:8.1f} {s['max_ms']:8.1f}")
    by_position = a["fire_to_insert_by_position"]
    if by_position:
        print("    fire -> insert by order within the same second (p50 ms): " + ", ".join(
            f"#{k} {v['p50_ms']:.1f}" for k, v in by_position.items() if v["n"]))
    print()
    print("  slowest fires: " + ", ".join(f"{w['lag_ms']:.1f} ms @ {w['scheduled_for']}" for w in a["worst"]))
    print("  percentiles are nearest-rank over the measured fires")


# --- main -------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fires", type=int, default=120,
                        help="successful fires to measure, after warm-up (at least 100; default 120)")
    parser.add_argument("--jobs", type=int, default=4, help="jobs firing every second (default 4)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    args = parser.parse_args(argv)
    if args.fires < 100:
        parser.error("--fires must be at least 100")
    if not 1 <= args.jobs <= 64:
        parser.error("--jobs must be between 1 and 64")
    return args


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Settings come only from what this bench passes (stray JOBPLANE_* would also stop start-up).
    for key in [k for k in os.environ if k.startswith("JOBPLANE_")]:
        del os.environ[key]
    test_db = os.environ.get("TEST_DATABASE_URL",
                             "postgresql+psycopg2://jobplane:jobplane@127.0.0.1:5432/jobplane_test")
    redis_url = bench_redis_url(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    loadavg_at_start = [round(x, 2) for x in os.getloadavg()]
    per_job = math.ceil(args.fires / args.jobs)
    # Startup (60 s) + warm-up + the measured seconds + finishing and stragglers (60 s).
    budget = 60 + WARMUP_SECONDS + per_job + 60
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])

    database_url = bench_database_url(test_db)
    log(f"resetting and migrating {BENCH_DATABASE}")
    reset_database(database_url)
    namespace = f"jobplane-bench-{uuid.uuid4().hex[:8]}"
    work_dir = Path(tempfile.mkdtemp(prefix="jobplane-bench-"))
    settings = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "SECRET_KEY": "bench-secret-key",
                "ENV": "test", "QUEUE_NAMESPACE": namespace, "RUN_DIR": str(work_dir / "runs"),
                "LOG_LEVEL": "INFO", "SCHEDULER_LOCK_ID": SCHEDULER_LOCK_ID}
    processes = Processes(settings, work_dir)
    engine = create_engine(database_url)
    app = None
    try:
        from app import create_app

        app = create_app(dict(settings))
        bootstrap_admin(app)
        deadline = time.monotonic() + budget
        worker, worker_log = processes.start("worker", WORKER_PROCESSES=WORKER_PROCESSES,
                                             WORKER_THREADS=WORKER_THREADS, WORKER_POLL_MS=WORKER_POLL_MS,
                                             SANDBOX="bubblewrap")
        scheduler, scheduler_log = processes.start("scheduler")
        wait_for_log(scheduler, scheduler_log, "became the scheduler leader", timeout=30)
        wait_for_log(worker, worker_log, "ready for action", timeout=30)
        log(f"scheduler leads, worker ready; creating {args.jobs} jobs firing every second; measuring "
            f"{per_job} fire times per job after {WARMUP_SECONDS} s of warm-up (at most {budget} s in all)")
        job_ids = create_jobs(app, args.jobs)
        rows, complete = collect(engine, job_ids, per_job, deadline)
        for process, path in processes.started:
            if process.poll() is not None:
                log(f"warning: {path.stem} exited early with {process.returncode}")
        if not complete:
            log("deadline reached before every measured fire finished; reporting what there is\n"
                + processes.tails())
    finally:
        log("stopping scheduler and worker")
        processes.stop_all()
        engine.dispose()
        if app is not None:
            app.extensions["jobplane_db"].engine.dispose()
        _forget_queue(redis_url, namespace)
        shutil.rmtree(work_dir, ignore_errors=True)

    result = {
        "benchmark": "fire_lag",
        "measures": "scheduled fire time -> job script start (script's own date +%s.%N)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "fires_requested": args.fires,
        "jobs": args.jobs,
        "warmup_seconds_excluded": WARMUP_SECONDS,
        "settings": {"WORKER_PROCESSES": WORKER_PROCESSES, "WORKER_THREADS": WORKER_THREADS,
                     "WORKER_POLL_MS": WORKER_POLL_MS, "SANDBOX": "bubblewrap"},
        "complete": complete,
        "analysis": analyse(rows, job_ids, per_job),
        "machine": machine_info(loadavg_at_start),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0 if result["analysis"]["measured_fires"] >= args.fires else 1


def _forget_queue(redis_url: str, namespace: str) -> None:
    """Best effort: drop this run's keys from Redis."""
    try:
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{namespace}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
        log(f"could not clean Redis keys of {namespace}: {exc}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
