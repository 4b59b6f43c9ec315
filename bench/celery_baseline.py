"""The Celery baseline of bench/fire_lag_vs_celery.py: a Celery app whose beat fires N entries
every second and whose task runs the same bash script as Jobplane's jobs, with ``subprocess``.

Loaded by ``celery -A celery_baseline beat|worker`` (PYTHONPATH=bench/), configured only by
these environment variables, all set by the benchmark:

  BENCH_CELERY_BROKER    broker URL (Redis database 13)
  BENCH_CELERY_QUEUE     queue name, unique per run
  BENCH_CELERY_RESULTS   file each run's measurements are appended to (one JSON line each;
                         a file, not Redis, so that a Redis restart cannot lose them)
  BENCH_CELERY_ENTRIES   how many beat entries fire every second
  BENCH_CELERY_SCRIPT    the bash script to run (a file)
  BENCH_CELERY_SANDBOX   "bubblewrap": run it under the same bubblewrap command line as
                         Jobplane's worker (a fresh working directory per run); else plain
  BENCH_CELERY_BASH      bash binary (default /bin/bash)

The scheduled instant
    Celery beat has no per-second cron; ``schedule(run_every=1.0)`` counts from the entry's last
    run, so it drifts and has no wall-clock instant to measure from.  Each entry therefore uses
    ``AlignedSecond``, a ``celery.schedules.schedule`` whose ``is_due`` turns true at every whole
    UTC second -- the same instants as Jobplane's ``* * * * * *`` -- and the scheduled instant of
    a fire is that whole second.  Beat itself wakes 10 ms early (``Scheduler.adjust``) and ticks
    until the entry is due, so it sends at the second boundary.  ``BenchScheduler`` (a plain,
    non-persistent ``celery.beat.Scheduler``) adds that instant and beat's send time to the
    task's keyword arguments; lag = the script's own ``START $(date +%s.%N)`` - that instant,
    exactly as for Jobplane (``executions.scheduled_for``).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta

from celery import Celery
from celery.beat import Scheduler
from celery.schedules import schedule

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

START_LINE = re.compile(r"^START (\d+\.\d+)\s*$", re.MULTILINE)

BROKER = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/13")
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "jobplane-bench-celery")
RESULTS = os.environ.get("BENCH_CELERY_RESULTS", os.path.join(tempfile.gettempdir(), f"{QUEUE}.results"))
ENTRIES = int(os.environ.get("BENCH_CELERY_ENTRIES", "4"))
SCRIPT = os.environ.get("BENCH_CELERY_SCRIPT", "")
SANDBOX = os.environ.get("BENCH_CELERY_SANDBOX", "none")
BASH = os.environ.get("BENCH_CELERY_BASH", "/bin/bash")
RUN_DIR = os.environ.get("BENCH_CELERY_RUN_DIR") or None


class AlignedSecond(schedule):
    """Due at every whole UTC second (not "one second after the last run")."""

    def __init__(self, app=None):
        super().__init__(run_every=timedelta(seconds=1), app=app)
        self.due_second: int | None = None

    def is_due(self, last_run_at):
        now = time.time()
        boundary = math.floor(now)
        if last_run_at.timestamp() < boundary:
            self.due_second = boundary
            return schedule_state(True, boundary + 1 - now)
        return schedule_state(False, boundary + 1 - now)

    def __reduce__(self):
        return self.__class__, ()

    def __eq__(self, other):
        return isinstance(other, AlignedSecond)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash("AlignedSecond")


def schedule_state(is_due: bool, next_in: float):
    from celery.schedules import schedstate

    return schedstate(is_due, max(next_in, 0.0))


class BenchScheduler(Scheduler):
    """Beat's in-memory scheduler, passing each fire's scheduled instant to the task."""

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        # A copy: the scheduler compares its entries with the ones it started from.
        kwargs_with_instant = {**(entry.kwargs or {}), "scheduled_for": entry.schedule.due_second,
                               "sent_at": time.time()}
        patched = entry.__class__(**dict(entry, kwargs=kwargs_with_instant))
        return super().apply_async(patched, producer=producer, advance=advance, **kwargs)


app = Celery("jobplane_bench_celery", broker=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    timezone="UTC",
    enable_utc=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
    beat_scheduler="celery_baseline:BenchScheduler",
    beat_schedule={f"entry-{n}": {"task": "bench.run_script", "schedule": AlignedSecond(),
                                  "kwargs": {"entry": n}} for n in range(1, ENTRIES + 1)},
)

if SANDBOX == "bubblewrap":
    # Imported now, not in the first task; the same command line as Jobplane's LocalExecutor
    # (whose interpreters' prefixes outside /usr are bound read-only too).
    from app.executors import sandbox
    from app.executors.local import _outside_usr

    EXTRA_READ_ONLY = _outside_usr(os.path.realpath(sys.executable), BASH)

_results_lock = threading.Lock()


def _record(result: dict) -> None:
    line = (json.dumps(result) + "\n").encode()
    with _results_lock:
        fd = os.open(RESULTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


@app.task(name="bench.run_script")
def run_script(entry: int, scheduled_for: int | None = None, sent_at: float | None = None) -> None:
    task_start = time.time()
    workdir = None
    if SANDBOX == "bubblewrap":
        workdir = tempfile.mkdtemp(prefix="celery-run-", dir=RUN_DIR)
        shutil.copy(SCRIPT, os.path.join(workdir, "script.sh"))
        argv = sandbox.wrap([BASH, "script.sh"], workdir=workdir, extra_read_only=EXTRA_READ_ONLY)
        cwd = workdir
    else:
        argv, cwd = [BASH, SCRIPT], None
    try:
        spawn = time.time()
        completed = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                   env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"})
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    match = START_LINE.search(completed.stdout or "")
    _record({
        "entry": entry, "scheduled_for": scheduled_for, "sent_at": sent_at, "task_start": task_start,
        "spawn": spawn, "script_start": float(match.group(1)) if match else None,
        "returncode": completed.returncode})
