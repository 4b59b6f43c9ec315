"""What the benchmarks in bench/ share: the bench database and Redis database, starting and
stopping real ``jobplane`` processes, reading /proc, creating jobs, reading executions back,
percentiles, a description of the machine, and the command-line frame of every script (options,
result header, report header, output, exit status).

Every benchmark runs on its own PostgreSQL database, ``jobplane_bench`` (created if missing,
schema dropped and migrated at start), on the server of TEST_DATABASE_URL, and on Redis
database 14 of the server of TEST_REDIS_URL, under a queue namespace of its own -- never the
tests' database 15, which every test empties (FLUSHDB).  The Celery baseline uses Redis
database 13.  Processes are started in sessions of their own and stopped by process group.

bench/process_trees.py builds on this for the benches that SIGKILL process trees instead
(concurrency.py, worker_kills.py, on Redis database 12).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, NamedTuple
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
#: The API headers of the bench's admin.
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: Not the tests' Redis database (15): their fixtures FLUSHDB it.
BENCH_REDIS_DB = 14
#: The Celery baseline's broker database.
CELERY_REDIS_DB = 13
#: Not the default lock id, so a bench never competes with another scheduler on this server.
SCHEDULER_LOCK_ID = 7_402_119
SCRIPT = 'echo "START $(date +%s.%N)"\n'
BASH = "/bin/bash"
#: The first seconds of a per-second job's fires are a warm-up, not measured.
WARMUP_SECONDS = 2
START_LINE = re.compile(r"^START (\d+\.\d+)\s*$", re.MULTILINE)
TERMINAL = ("success", "failed", "timed_out", "cancelled", "lost")
DEFAULT_TEST_DATABASE_URL = "postgresql+psycopg2://jobplane:jobplane@127.0.0.1:5432/jobplane_test"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"

_NAME = ["bench"]


def set_bench_name(name: str) -> None:
    """The prefix of this benchmark's progress lines."""
    _NAME[0] = name


def log(message: str) -> None:
    """A progress line on stderr, prefixed with the bench's name and the time."""
    print(f"[{_NAME[0]} {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def clear_jobplane_env() -> None:
    """Settings come only from what a bench passes (stray JOBPLANE_* would also stop start-up)."""
    for key in [k for k in os.environ if k.startswith("JOBPLANE_")]:
        del os.environ[key]


def test_database_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)


def test_redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)


def on_sigterm(signum, frame):
    """SIGTERM ends a bench like Ctrl-C: its finally blocks stop every process it started."""
    raise KeyboardInterrupt(f"signal {signum}")


def command_line() -> str:
    """This process's command line, quoted for a shell."""
    import shlex

    return " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])


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


def wait_for_free_database(url: str, timeout: float = 900) -> None:
    """Wait until no other client uses the bench database: other benches use it too (and
    reset it), one at a time."""
    url_obj = make_url(url)
    admin = create_engine(url_obj.set(database="postgres"), isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + timeout
    last = 0.0
    try:
        while True:
            with admin.connect() as connection:
                users = connection.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"),
                    {"db": url_obj.database}).scalar()
            if not users:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url_obj.database} is still used by {users} connections (another bench?) "
                                   f"after {timeout:.0f} s; try again later")
            if time.monotonic() - last > 30:
                log(f"{url_obj.database} is in use by {users} connections (another bench?); waiting")
                last = time.monotonic()
            time.sleep(2)
    finally:
        admin.dispose()


def reset_database(url: str) -> None:
    """Drop the public schema of ``url`` and migrate it from scratch."""
    from app.migrate import upgrade

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    upgrade(url)


def redis_url_with_db(test_url: str, db: int) -> str:
    """The Redis server of ``test_url``, database ``db``."""
    parts = urlsplit(test_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


# --- processes --------------------------------------------------------------------------------

def process_env(settings: dict) -> dict[str, str]:
    """This process's environment minus every JOBPLANE_* variable, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPLANE_")}
    env.update({f"JOBPLANE_{key}": str(value) for key, value in settings.items()})
    return env


class Processes:
    """The processes this run started, each in its own session (process group) and log file."""

    def __init__(self, settings: dict, log_dir: Path):
        self.settings = settings
        self.log_dir = log_dir
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, command: str, *, log_name: str | None = None, **extra) -> tuple[subprocess.Popen, Path]:
        """Start ``jobplane COMMAND`` with the run's settings plus ``extra``."""
        return self.start_argv([JOBPLANE, command], log_name=log_name or command,
                               env=process_env({**self.settings, **extra}))

    def start_argv(self, argv: list[str], *, log_name: str, env: dict[str, str],
                   cwd: str | None = None) -> tuple[subprocess.Popen, Path]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{log_name}.log"
        with open(path, "wb") as handle:
            process = subprocess.Popen(argv, env=env, cwd=cwd or str(REPO_ROOT), stdin=subprocess.DEVNULL,
                                       stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append((process, path))
        return process, path

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL one process's group and reap it."""
        _signal_group(process, signal.SIGKILL)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log(f"process {process.pid} did not die")

    def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM every process group, then SIGKILL what is still there after ``grace``."""
        for process, _ in self.started:
            if process.poll() is None:
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
        """The end of every log, for error messages."""
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}"
                         for _, path in self.started)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # start_new_session: the group id is the pid
    except (ProcessLookupError, PermissionError):
        pass


def wait_for_log(process: subprocess.Popen, path: Path, needle: str, timeout: float, count: int = 1) -> None:
    """Wait until the log of ``process`` holds ``needle`` ``count`` times (e.g. once per worker
    process); fail, with the log's tail, if the process exits first or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    times = f" {count} times" if count > 1 else ""
    while path.read_text(errors="replace").count(needle) < count:
        if process.poll() is not None:
            raise RuntimeError(f"{path.stem} exited with {process.returncode} before logging "
                               f"{needle!r}{times}:\n{path.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path.stem} did not log {needle!r}{times} within {timeout} s:\n"
                               f"{path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def start_worker(processes: Processes, *, worker_processes: int, worker_threads: int, poll_ms: int | None = None,
                 log_name: str = "worker") -> tuple[subprocess.Popen, Path]:
    """Start ``jobplane worker`` (``worker_processes`` x ``worker_threads``, runs sandboxed by
    bubblewrap); WORKER_POLL_MS is set only when ``poll_ms`` is given, else Jobplane's default
    applies.  Does not wait for it: its log says "ready for action" once per process."""
    poll = {"WORKER_POLL_MS": poll_ms} if poll_ms is not None else {}
    return processes.start("worker", log_name=log_name, WORKER_PROCESSES=worker_processes,
                           WORKER_THREADS=worker_threads, SANDBOX="bubblewrap", **poll)


def start_leader(processes: Processes, *, timeout: float, log_name: str = "scheduler") -> tuple[subprocess.Popen, Path]:
    """Start ``jobplane scheduler`` and wait (at most ``timeout`` s) until it leads."""
    scheduler, path = processes.start("scheduler", log_name=log_name)
    wait_for_log(scheduler, path, "became the scheduler leader", timeout=timeout)
    return scheduler, path


def warning_lines(path: Path) -> list[str]:
    """The WARNING, ERROR and CRITICAL lines of a jobplane log."""
    return [line for line in path.read_text(errors="replace").splitlines()
            if " WARNING " in line or " ERROR " in line or " CRITICAL " in line]


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def log_time(path: Path, needle: str) -> float | None:
    """The epoch time of the first line of a jobplane log containing ``needle`` (ms precision)."""
    times = log_times(path, needle)
    return times[0] if times else None


def log_times(path: Path, needle: str) -> list[float]:
    """The epoch times of every line of a jobplane log containing ``needle``: JSON lines (their
    ``time``, as the processes log them by default) or text lines
    (``logging``'s asctime, local time)."""
    times = []
    for line in path.read_text(errors="replace").splitlines():
        if needle not in line:
            continue
        if line.startswith("{"):
            try:
                times.append(datetime.fromisoformat(json.loads(line)["time"]).timestamp())
            except (ValueError, KeyError, TypeError):
                pass
            continue
        match = _LOG_TIME.match(line)
        if match:
            times.append(time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
                         + int(match.group(2)) / 1000)
    return times


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


def create_jobs(app, count: int, *, prefix: str = "lag", schedule: str = "* * * * * *",
                script: str = SCRIPT, **fields) -> list[str]:
    """``count`` jobs created through the API (in-process test client); their ids."""
    client = app.test_client()
    ids = []
    for n in range(1, count + 1):
        response = client.post("/api/v1/jobs", headers=ADMIN_HEADERS, json={
            "name": f"{prefix}-{n}", "job_type": "bash", "script": script, "schedule": schedule, **fields})
        if response.status_code != 201:
            raise RuntimeError(f"creating job {prefix}-{n}: HTTP {response.status_code} {response.get_data(True)}")
        ids.append(response.json["id"])
    return ids


def pause_jobs(app, job_ids: list[str]) -> None:
    """Pause jobs through the API (the scheduler drops their triggers)."""
    client = app.test_client()
    for job_id in job_ids:
        response = client.post(f"/api/v1/jobs/{job_id}/pause", headers=ADMIN_HEADERS)
        if response.status_code != 200:
            raise RuntimeError(f"pausing job {job_id}: HTTP {response.status_code} {response.get_data(True)}")


def create_jobs_in_bulk(app, specs: list[dict], *, batch: int = 500) -> list[str]:
    """Jobs created through the service layer (``jobs.create_job``: validation, audit record,
    change notification), ``batch`` per transaction -- much faster than one HTTP request each.
    Each spec holds the API's job fields.  Returns the ids."""
    from app.extensions import db
    from app.models import User
    from app.services import jobs
    from app.services.actors import Actor
    from sqlalchemy import select

    ids: list[str] = []
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.role == "admin"))
        actor = Actor(user=admin, user_agent="jobplane-bench")
        for start in range(0, len(specs), batch):
            with db.unit_of_work():
                for spec in specs[start:start + batch]:
                    ids.append(str(jobs.create_job(actor=actor, data={"job_type": "bash", **spec}).id))
    return ids


_ROWS = """
    SELECT e.id::text AS id, e.job_id::text AS job_id, e.scheduled_for, e.status, e.created_at,
           e.started_at, e.completed_at, e.send_count, e.attempt, e.error_message, e.fired_by,
           (SELECT string_agg(c.data, '' ORDER BY c.seq) FROM execution_log_chunks c
             WHERE c.execution_id = e.id AND c.stream = 'stdout') AS stdout
      FROM executions e
     WHERE e.triggered_by = 'scheduled' {and_jobs}
     ORDER BY e.job_id, e.scheduled_for
"""
_ROWS_OF_ALL = text(_ROWS.format(and_jobs=""))
_ROWS_OF_JOBS = text(_ROWS.format(and_jobs="AND e.job_id::text = ANY(:jobs)"))


def fetch(engine) -> list[dict]:
    """Every scheduled execution, with its stdout."""
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(_ROWS_OF_ALL)]


def fetch_jobs(engine, job_ids: list[str]) -> list[dict]:
    """The scheduled executions of these jobs only, with their stdout."""
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(_ROWS_OF_JOBS, {"jobs": list(job_ids)})]


def fire_budget(per_job: int, warmup: int = WARMUP_SECONDS) -> int:
    """Seconds a round of per-second jobs may take: start-up (60 s) + warm-up + the measured
    fire times + finishing and stragglers (60 s)."""
    return 60 + warmup + per_job + 60


def window_of(rows: list[dict], job_ids: list[str], per_job: int,
              warmup: int = WARMUP_SECONDS) -> dict[str, list[datetime]]:
    """Per job: the fire times measured (after its first fire's warm-up), once it has fired."""
    first: dict[str, datetime] = {}
    for row in rows:
        if row["job_id"] not in first or row["scheduled_for"] < first[row["job_id"]]:
            first[row["job_id"]] = row["scheduled_for"]
    return {job: [first[job] + timedelta(seconds=warmup + i) for i in range(per_job)]
            for job in job_ids if job in first}


def collect(engine, job_ids: list[str], per_job: int, deadline: float, *, warmup: int = WARMUP_SECONDS,
            rows_of=None) -> tuple[list[dict], bool]:
    """Poll until every measured fire time of every job has a finished execution (or deadline).
    ``rows_of(engine)`` reads the executions (default: every scheduled one)."""
    rows_of = rows_of or fetch
    last_report = 0.0
    while True:
        rows = rows_of(engine)
        window = window_of(rows, job_ids, per_job, warmup)
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


def lag_of(row: dict) -> dict | None:
    """A successful execution's lag (script START - scheduled_for) and its stages, in ms."""
    if row["status"] != "success":
        return None
    match = START_LINE.search(row["stdout"] or "")
    if not match:
        return None
    scheduled = row["scheduled_for"].timestamp()
    start = float(match.group(1))
    return {"lag_ms": (start - scheduled) * 1000,
            "fire_to_insert_ms": (row["created_at"].timestamp() - scheduled) * 1000,
            "insert_to_spawn_ms": (row["started_at"].timestamp() - row["created_at"].timestamp()) * 1000,
            "spawn_to_start_ms": (start - row["started_at"].timestamp()) * 1000,
            "resent": row["send_count"] > 1}


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(values: list[float]) -> dict:
    """n, min, nearest-rank p50/p95/p99, max and mean of ``values`` (ms), rounded to 0.01."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(ordered), "min_ms": round(ordered[0], 2), "p50_ms": round(percentile(ordered, 50), 2),
            "p95_ms": round(percentile(ordered, 95), 2), "p99_ms": round(percentile(ordered, 99), 2),
            "max_ms": round(ordered[-1], 2), "mean_ms": round(sum(ordered) / len(ordered), 2)}


def ratio(a: dict, b: dict, key: str = "p99_ms", default=float("nan")):
    """``a[key] / b[key]`` of two summaries, or ``default`` when either has no samples."""
    return a[key] / b[key] if a.get("n") and b.get("n") else default


def fmt_summary(s: dict, unit: str = "ms") -> str:
    """A summary on one line: p50, p95, p99, max and n."""
    if not s.get("n"):
        return "no samples"
    return (f"p50 {s['p50_ms']:.1f}  p95 {s['p95_ms']:.1f}  p99 {s['p99_ms']:.1f}  max {s['max_ms']:.1f} {unit}"
            f"  (n={s['n']})")


def count_by(rows: list[dict], key: str) -> dict[str, int]:
    """How many rows have each value of ``key``."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[key]] = counts.get(row[key], 0) + 1
    return counts


def git_state() -> dict:
    """The commit the bench ran on, and whether app/ had uncommitted changes (others edit it)."""
    def run(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], cwd=str(REPO_ROOT), capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": run("rev-parse", "--short", "HEAD") or None,
            "app_modified_files": len([l for l in run("status", "--porcelain", "--", "app").splitlines() if l])}


def machine_info(loadavg_at_start: list[float]) -> dict:
    """Cores, CPU model, load average at the start and now, kernel, Python and bubblewrap."""
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


def loadavg() -> list[float]:
    """The load averages (1, 5, 15 min), rounded to 0.01."""
    return [round(x, 2) for x in os.getloadavg()]


def forget_queue(redis_url: str, namespace: str) -> None:
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


# --- a whole Jobplane environment -------------------------------------------------------------

class JobplaneBench:
    """The bench database (reset and migrated), settings for jobplane processes on Redis db
    ``redis_db`` (default 14) under a unique namespace, an in-process app for creating jobs, and
    cleanup of it all.  ``name`` prefixes the namespace and the work directory; ``engine_options``
    go to the bench's own SQLAlchemy engine; ``settings`` are more JOBPLANE_* settings of every
    process."""

    def __init__(self, *, name: str = "bench", redis_db: int = BENCH_REDIS_DB, engine_options: dict | None = None,
                 log_level: str = "INFO", **settings):
        clear_jobplane_env()
        self.database_url = bench_database_url(test_database_url())
        self.redis_url = redis_url_with_db(test_redis_url(), redis_db)
        self.namespace = f"jobplane-{name}-{uuid.uuid4().hex[:8]}"
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"jobplane-{name}-"))
        self.settings = {"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url,
                         "SECRET_KEY": "bench-secret-key", "ENV": "test", "QUEUE_NAMESPACE": self.namespace,
                         # no RUN_DIR: runs' working directories where Jobplane puts them by default
                         "LOG_LEVEL": log_level,
                         "SCHEDULER_LOCK_ID": SCHEDULER_LOCK_ID,
                         # benches drive the API as fast as they can: the per-user limit would throttle them
                         "API_RATE_LIMIT": "1000000 per minute", **settings}
        self.engine_options = engine_options or {}
        self.engine = None
        self.app = None
        #: (Redis run_id, PostgreSQL start time) when the database was last reset.
        self.epoch: tuple | None = None

    def reset(self, *, wait_db: float = 900) -> None:
        """Wait (at most ``wait_db`` s) until no other client uses the bench database; note the
        services' epoch; drop and migrate the database; create the admin; make the in-process app."""
        self._dispose()
        wait_for_free_database(self.database_url, wait_db)
        self.epoch = wait_for_services(self.database_url, self.redis_url)
        log(f"resetting and migrating {BENCH_DATABASE}")
        reset_database(self.database_url)
        from app import create_app

        self.engine = create_engine(self.database_url, **self.engine_options)
        self.app = create_app(dict(self.settings))
        bootstrap_admin(self.app)

    def worker_poll_ms(self, requested: int | None) -> int:
        """The WORKER_POLL_MS of a worker started with ``poll_ms=requested``: it, or Jobplane's
        default.  Needs reset() first."""
        return requested if requested is not None else self.app.config["WORKER_POLL_MS"]

    def processes(self, subdir: str = "") -> Processes:
        """A new set of processes with this bench's settings, logging to the work directory (or
        a sub-directory of it)."""
        return Processes(self.settings, self.work_dir / subdir if subdir else self.work_dir)

    def undisturbed(self, step, *, what: str, attempts: int = 3):
        """``undisturbed()`` on this bench's PostgreSQL and Redis: (step's result, attempts discarded)."""
        return undisturbed(step, what=what, database_url=self.database_url, redis_url=self.redis_url,
                           attempts=attempts)

    def close(self) -> None:
        """Close the database connections; drop the run's Redis keys and the work directory."""
        self._dispose()
        forget_queue(self.redis_url, self.namespace)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def _dispose(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
        if self.app is not None:
            self.app.extensions["jobplane_db"].engine.dispose()


def wait_until_idle(engine, job_ids: list[str] | None, timeout: float) -> int:
    """Wait (at most ``timeout`` s) until no execution (of these jobs) is queued or running.
    Returns how many still are."""
    query = "SELECT count(*) FROM executions WHERE status IN ('queued', 'running')"
    params: dict = {}
    if job_ids is not None:
        query += " AND job_id::text = ANY(:jobs)"
        params["jobs"] = list(job_ids)
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as connection:
            active = connection.execute(text(query), params).scalar()
        if not active or time.monotonic() > deadline:
            return active
        time.sleep(0.5)


def utc(ts: float) -> datetime:
    """An epoch timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, timezone.utc)



# --- /proc: the processes of this machine -----------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


class ProcInfo(NamedTuple):
    """One process, as /proc/PID/stat describes it."""

    ppid: int
    name: str
    state: str
    #: CPU seconds of the process itself (utime + stime) ...
    cpu_s: float
    #: ... and of its children that it reaped (cutime + cstime).
    children_cpu_s: float
    #: When it started, in clock ticks after boot: with the pid, it names one process.
    start_ticks: int

    @property
    def total_cpu_s(self) -> float:
        return self.cpu_s + self.children_cpu_s


def proc_info(pid: int) -> ProcInfo | None:
    """The process ``pid``, or None when there is none (any more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    name = raw[raw.find(b"(") + 1:raw.rfind(b")")].decode(errors="replace")
    fields = raw.rsplit(b")", 1)[1].split()  # after the name: state is fields[0]
    return ProcInfo(ppid=int(fields[1]), name=name, state=fields[0].decode(),
                    cpu_s=(int(fields[11]) + int(fields[12])) / CLK_TCK,
                    children_cpu_s=(int(fields[13]) + int(fields[14])) / CLK_TCK,
                    start_ticks=int(fields[19]))


def proc_table() -> dict[int, ProcInfo]:
    """Every process of the machine, by pid."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = proc_info(int(entry))
            if info is not None:
                table[int(entry)] = info
    return table


def process_tree(pid: int, table: dict[int, ProcInfo] | None = None) -> tuple[list[int], list[int]]:
    """The tree of ``pid`` (itself included): (its jobplane processes, the sandboxes' processes --
    every ``bwrap`` and what runs under it)."""
    table = table if table is not None else proc_table()
    children: dict[int, list[int]] = {}
    for child, info in table.items():
        children.setdefault(info.ppid, []).append(child)
    own, sandboxed = [], []
    stack = [(pid, False)] if pid in table else []
    while stack:
        current, inside = stack.pop()
        inside = inside or table[current].name == "bwrap"
        (sandboxed if inside else own).append(current)
        stack.extend((child, inside) for child in children.get(current, []))
    return own, sandboxed


def machine_busy_seconds(*, interrupts: bool = False) -> float:
    """CPU seconds the machine spent in user and system mode; with ``interrupts``, also in
    interrupts and stolen by the hypervisor (time that is no process's)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = values[0] + values[1] + values[2]
    if interrupts:
        busy += values[5] + values[6] + values[7]
    return busy / CLK_TCK


# --- machine load -----------------------------------------------------------------------------
# Other people's programs may run on this machine during a bench: measure how much CPU they
# used, so that a result can be judged (and, before starting, wait a while for a quiet machine).

def _split_cpu() -> dict[str, float]:
    table = proc_table()
    me = os.getpid()
    own, sandboxed = process_tree(me, table)
    ours = set(own + sandboxed) - {me}
    times = os.times()
    bench = times.user + times.system + times.children_user + times.children_system
    bench += sum(table[p].total_cpu_s for p in ours)
    services = sum(info.total_cpu_s for pid, info in table.items()
                   if pid not in ours and (info.name.startswith("postgres") or info.name.startswith("redis-server")))
    # Kernel threads: among them the ones that tear down the namespaces of every bubblewrap run.
    kernel = sum(info.total_cpu_s for pid, info in table.items() if pid == 2 or info.ppid == 2)
    return {"machine": machine_busy_seconds(), "bench": bench, "services": services, "kernel": kernel,
            "init_reaped": _reaped_by_init()}


def _reaped_by_init() -> float:
    """CPU of the processes reaped by PID 1.  bubblewrap's sandboxed process (PID 1 of its own
    namespace) outlives the bwrap that started it by a moment and is reaped by the machine's
    init, so the sandboxes' CPU lands here, not in the bench's or the worker's accounts."""
    init = proc_info(1)
    return init.children_cpu_s if init is not None else 0.0


class CpuMonitor:
    """CPU used between start() and stop(): by this bench (with everything it started), by
    PostgreSQL and Redis (which other people's tests may use too), by kernel threads (busy
    tearing down bubblewrap's namespaces after each sandboxed run), by processes reaped by
    PID 1 (mostly the sandboxes themselves, see ``_reaped_by_init``), and by everything else --
    other people's programs (processes that started and ended in between included)."""

    def start(self) -> "CpuMonitor":
        self.wall = time.monotonic()
        self.before = _split_cpu()
        return self

    def stop(self) -> dict:
        after = _split_cpu()
        wall = time.monotonic() - self.wall
        delta = {k: after[k] - self.before[k] for k in after}
        other = max(delta["machine"] - delta["bench"] - delta["services"] - delta["kernel"]
                    - delta["init_reaped"], 0.0)
        return {"wall_s": round(wall, 1), "bench_cpu_s": round(delta["bench"], 1),
                "services_cpu_s": round(delta["services"], 1), "kernel_threads_cpu_s": round(delta["kernel"], 1),
                "reaped_by_init_cpu_s": round(delta["init_reaped"], 1),
                "other_cpu_s": round(other, 1),
                "other_cores_avg": round(other / wall, 2) if wall > 0 else None}


def busy_cores(seconds: float = 3.0) -> float:
    """How many cores were busy, on average, over the next ``seconds``."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / seconds


def wait_for_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (at most ``max_wait`` s) until under ``threshold`` cores are busy; returns the last
    reading."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = busy_cores()
        if busy < threshold or time.monotonic() >= deadline:
            if busy >= threshold:
                log(f"the machine is still busy ({busy:.2f} cores used by others); going ahead")
            return round(busy, 2)
        log(f"waiting for a quieter machine: {busy:.2f} cores busy")


# --- other people's tests restart the shared services -----------------------------------------
# tests/scheduler/test_faults.py restarts the local Redis and PostgreSQL.  A bench step during
# which either restarted measured the restart, not Jobplane: it is detected and repeated.

def services_epoch(database_url: str, redis_url: str) -> tuple:
    """(Redis run_id, PostgreSQL start time); None for a service that cannot be reached."""
    run_id = started = None
    try:
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        run_id = client.info("server").get("run_id")
        client.close()
    except Exception:  # noqa: BLE001
        pass
    try:
        engine = create_engine(database_url)
        try:
            with engine.connect() as connection:
                started = connection.execute(text("SELECT pg_postmaster_start_time()")).scalar()
        finally:
            engine.dispose()
    except Exception:  # noqa: BLE001
        pass
    return run_id, started


def wait_for_services(database_url: str, redis_url: str, timeout: float = 120) -> tuple:
    deadline = time.monotonic() + timeout
    while True:
        epoch = services_epoch(database_url, redis_url)
        if None not in epoch or time.monotonic() > deadline:
            return epoch
        time.sleep(1)


def undisturbed(step, *, what: str, database_url: str, redis_url: str, attempts: int = 3):
    """Run ``step()``; repeat it (at most ``attempts`` times in all) when Redis or PostgreSQL
    restarted while it ran.  Returns (its result, how many attempts were discarded)."""
    discarded = 0
    for attempt in range(1, attempts + 1):
        before = wait_for_services(database_url, redis_url)
        try:
            result = step()
        except Exception:
            after = services_epoch(database_url, redis_url)
            if after == before and None not in after or attempt == attempts:
                raise
            log(f"{what}: Redis or PostgreSQL restarted meanwhile (another test run?); repeating it")
            discarded += 1
            continue
        after = services_epoch(database_url, redis_url)
        if after == before and None not in after:
            return result, discarded
        log(f"{what}: Redis or PostgreSQL restarted meanwhile (another test run?); repeating it")
        discarded += 1
    raise RuntimeError(f"{what}: disturbed by service restarts {attempts} times in a row")


# --- the command-line frame of a bench script --------------------------------------------------
# Every script: options parsed by argument_parser() and the add_*_option helpers; a result dict
# that starts with result_head() and ends with result_tail(); a report that starts with
# print_report_head(); print_result() for the report or --json; run_main() as the entry point.

def argument_parser(doc: str) -> argparse.ArgumentParser:
    """A script's parser: the first paragraph of its docstring is the description."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """--worker-processes (default 2) and --worker-threads (default 4) of ``jobplane worker``."""
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=4)


def add_poll_ms_option(parser: argparse.ArgumentParser, whose: str = "the worker") -> None:
    """--worker-poll-ms: JOBPLANE_WORKER_POLL_MS of the worker (default None: Jobplane's default)."""
    parser.add_argument("--worker-poll-ms", type=int, default=None,
                        help=f"JOBPLANE_WORKER_POLL_MS of {whose} (default: Jobplane's default)")


def add_stage_ahead_option(parser: argparse.ArgumentParser) -> None:
    """--stage-ahead-seconds: JOBPLANE_STAGE_AHEAD_SECONDS of the scheduler (0: staging off)."""
    parser.add_argument("--stage-ahead-seconds", type=float, default=None,
                        help="JOBPLANE_STAGE_AHEAD_SECONDS of the scheduler (0: staging off; default: Jobplane's)")


def stage_ahead_settings(args: argparse.Namespace) -> dict:
    """The settings --stage-ahead-seconds asks for (none: Jobplane's default)."""
    return {} if args.stage_ahead_seconds is None else {"STAGE_AHEAD_SECONDS": args.stage_ahead_seconds}


def add_quiet_wait_option(parser: argparse.ArgumentParser) -> None:
    """--quiet-wait: how long wait_for_quiet() may wait (default 120 s)."""
    parser.add_argument("--quiet-wait", type=float, default=120,
                        help="wait at most this long for other programs to leave the CPU idle (default 120 s)")


def add_wait_db_option(parser: argparse.ArgumentParser) -> None:
    """--wait-db: how long to wait for the bench database to be free of other clients (900 s)."""
    parser.add_argument("--wait-db", type=float, default=900,
                        help=f"longest wait for {BENCH_DATABASE} to be free of other clients (default 900 s)")


def add_json_option(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """--json: print the result as JSON instead of the report."""
    parser.add_argument("--json", action="store_true", help=help)


def result_head(benchmark: str, measures: str | None = None) -> dict:
    """The first keys of a result: the benchmark, what it measures, when it ended (UTC, to the
    second) and its command line."""
    head = {"benchmark": benchmark}
    if measures is not None:
        head["measures"] = measures
    head.update({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command_line()})
    return head


def result_tail(loadavg_at_start: list[float]) -> dict:
    """The last keys of a result: the code it ran on and the machine."""
    return {"git": git_state(), "machine": machine_info(loadavg_at_start)}


def print_report_head(title: str, result: dict, *, width: int = 14, bubblewrap: bool = True) -> None:
    """A report's first lines: its title, then date, command line and machine, the labels padded
    to ``width``; the bubblewrap version only with ``bubblewrap``."""
    m = result["machine"]
    sandbox = f"{m['bubblewrap']}  " if bubblewrap else ""
    print(title)
    print(f"  {'date':{width}s}{result['date']}")
    print(f"  {'command':{width}s}{result['command']}")
    print(f"  {'machine':{width}s}nproc={m['nproc']}  cpu={m['cpu_model']}  kernel={m['kernel']}  "
          f"python={m['python']}  {sandbox}loadavg start/end={m['loadavg_at_start']}/{m['loadavg_at_end']}")


def print_load_and_code(result: dict) -> None:
    """The report lines on other programs' load before the start and on the code measured."""
    print(f"  other load    {result['busy_cores_before_start']} cores busy just before the start")
    print_code(result)


def print_code(result: dict) -> None:
    """The report line on the code measured: commit, and files modified in app/."""
    print(f"  code          commit {result['git']['commit']} (+{result['git']['app_modified_files']} "
          f"modified files in app/)")


def print_goal(rule: str, met: bool) -> None:
    """A report's verdict line: ``goal: RULE -> MET`` (or NOT MET)."""
    print(f"  goal: {rule} -> {'MET' if met else 'NOT MET'}")


def print_result(result: dict, *, as_json: bool, report: Callable[[dict], None]) -> None:
    """The result on stdout: as JSON (``--json``), else as the script's report."""
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        report(result)


def run_main(main: Callable[[], int]) -> None:
    """Run a script's ``main()``: its return value is the exit status; SIGTERM, like Ctrl-C,
    ends it through its finally blocks, with status 130."""
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
