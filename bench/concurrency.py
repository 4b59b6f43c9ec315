"""Concurrency: 450 sandboxed runs at once, and the fire lag of an unrelated per-second job.

The issue's benchmark: "450 executions running at once (``sleep 60``) on this machine: all reach
``running``, the fire lag of an unrelated per-second job stays <= 2 x its idle p99, worker memory
is reported."

What it measures
    One ``jobplane scheduler`` and one ``jobplane worker`` tree (``--processes`` x ``--threads``)
    run the whole time.  A "tick" job fires every second (``* * * * * *``); its script prints
    ``START $(date +%s.%N)`` and its fire lag is that timestamp - ``scheduled_for``, as in
    fire_lag.py.

    1. Idle: the tick job's lag over ``--idle-fires`` fire times (after a 2 s warm-up), with the
       same processes that will carry the load.
    2. Load: ``--runs`` (450) manual runs (``POST /api/v1/jobs/{id}/run``, in-process Flask test
       client) of ``--sleeper-jobs`` on-demand jobs with ``concurrency_policy: allow`` and the
       script ``sleep --sleep`` (60).  Reported: the time from the first request until every
       run is ``running`` (the last ``started_at``), how long the requests took, the largest
       number running at the same time (from the executions' started_at/completed_at), and the
       tick job's lag during the plateau -- fire times from the moment all runs are running
       until the first of them finishes -- next to its idle figures, and the ratio of the p99s
       (the goal: <= 2).  The ramp (requests -> all running) and the wind-down (the sleepers
       ending) are reported apart.
    3. Resources, sampled every ~3 s during the load: the worker tree's resident memory (sum of
       ``VmRSS`` from /proc/<pid>/status; the Python processes of ``jobplane worker`` and the
       sandboxes -- bwrap, bash, sleep -- apart; RSS counts shared pages once per process, so
       PSS from /proc/<pid>/smaps_rollup is given too), its threads, and the PostgreSQL
       connections to the bench database (pg_stat_activity), attributed to the worker, the
       scheduler or this bench by matching client ports with the processes' sockets.
    4. Failures: runs that did not succeed, failed requests, tick fires that did not run, and
       ERROR/CRITICAL lines (with Tracebacks) in the worker and scheduler logs.

Worker configuration (defaults: 2 processes x 300 threads, WORKER_POLL_MS=100)
    A run occupies one Dramatiq worker thread for as long as its process lives, so the worker
    needs more threads than runs.  How many more is decided by Dramatiq's prefetch: each worker
    process fetches up to 2 x its threads messages (``queue_prefetch`` default), so a process
    whose threads are all busy still takes messages from Redis, and they wait in its memory
    behind 60 s sleeps while another process has idle threads (until the sweeper sends them
    again after JOBPLANE_REQUEUE_AFTER_SECONDS; the bench counts those).  The split of the runs
    between processes is uneven -- each consumer takes what has arrived since its last poll;
    227/223 to 275/175 were measured with 2 processes -- so every process needs headroom over
    its share, not only the total: 2 x 300 threads hold 450 runs with any split up to 300/150.
    3 x 160 (480 threads, 10 to spare per process on average) failed in each of 3 runs: 12 to
    61 runs and the tick job waited 30-56 s in a full process.  Two processes also match the 2
    cores and keep the worker's connection pools (at most 2 x 30: SQLAlchemy pool_size 10 +
    max_overflow 20) well under PostgreSQL's max_connections (100 here), which others share.
    WORKER_POLL_MS is also how often each idle Dramatiq worker thread wakes up: Jobplane's
    default of 10 ms made the 600 idle threads use 1.35 cores of 2 (``--poll-ms 10``), so the
    bench sets 100.

How it runs
    Database ``jobplane_bench`` (reset and migrated at start, like fire_lag.py; the bench first
    waits, up to ``--wait-db`` s, until no other client is connected to it, since other benches
    reset it too) and Redis database 12 under a unique namespace -- never the tests' database 15
    nor ``jobplane_test``.  Every phase has a deadline.  At the end the worker's Python
    processes are SIGKILLed (not its sandboxes: bubblewrap's --die-with-parent must take them
    down; the bench checks that none of the sandbox processes it saw is still alive, and kills
    any survivor), then the scheduler's tree.

Running it (from the repository root; services from scripts/ensure-test-services.sh)
    . ./.test-services.env && .venv/bin/python bench/concurrency.py
    # options: --runs N (450)  --sleep S (60)  --sleeper-jobs N (15)  --idle-fires N (60)
    #          --processes N (2)  --threads N (300)  --poll-ms MS (100)  --submit-threads N (4)
    #          --wait-db S (900)  --attempts N (3)  --json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import ADMIN_HEADERS, BENCH_DATABASE, WARMUP_SECONDS, log, process_tree, wait_for_log  # noqa: E402
from process_trees import REDIS_DB, Disturbed, TreeBench  # noqa: E402
from sqlalchemy import text  # noqa: E402

#: Dramatiq's ``worker_timeout``: an idle consumer's longest pause between polls, and also how
#: often each idle worker thread wakes up.  Jobplane's default (10 ms) makes 600 threads wake
#: 60,000 times a second; --poll-ms 10 measures that.
WORKER_POLL_MS = 100


# --- memory, sockets and connections of process trees ----------------------------------------

def _proc_kb(pid: int, file: str, field: str) -> int:
    """The number after ``field:`` in /proc/PID/FILE (KiB for sizes), 0 if missing."""
    try:
        with open(f"/proc/{pid}/{file}") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _status_kb(pid: int, field: str) -> int:
    return _proc_kb(pid, "status", field)


def _pss_kb(pid: int) -> int:
    return _proc_kb(pid, "smaps_rollup", "Pss")


def tree_memory(pid: int) -> dict:
    """Resident memory (KiB) and threads of a jobplane process tree, its sandboxes apart."""
    own, sandboxed = process_tree(pid)
    return {"processes": len(own), "threads": sum(_status_kb(p, "Threads") for p in own),
            "rss_kb": sum(_status_kb(p, "VmRSS") for p in own), "pss_kb": sum(_pss_kb(p) for p in own),
            "sandbox_processes": len(sandboxed),
            "sandbox_rss_kb": sum(_status_kb(p, "VmRSS") for p in sandboxed),
            "sandbox_pss_kb": sum(_pss_kb(p) for p in sandboxed)}


def tcp_ports_of(pids: list[int]) -> set[int]:
    """Local TCP ports of the sockets these processes hold."""
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


PG_KEYS = ("bench_db_total", "worker", "scheduler", "bench", "other", "active", "server_total")
_PG_CLIENTS = text("SELECT client_port, state FROM pg_stat_activity WHERE datname = :db")
_PG_TOTAL = text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")


def pg_connections(engine, owners: dict[str, list[int]]) -> dict:
    """Connections to the bench database, by owner (processes matched by their client port), and
    all client connections of the server."""
    with engine.connect() as connection:
        rows = connection.execute(_PG_CLIENTS, {"db": BENCH_DATABASE}).all()
        server_total = connection.execute(_PG_TOTAL).scalar()
    # After the query: a connection opened meanwhile is not in ``rows`` anyway.
    ports = {name: tcp_ports_of(pids) for name, pids in owners.items()}
    result = {"bench_db_total": len(rows), "server_total": server_total}
    for name in owners:
        result[name] = sum(1 for port, _ in rows if port in ports[name])
    result["other"] = len(rows) - sum(result[name] for name in owners)
    result["active"] = sum(1 for _, state in rows if state == "active")
    return result


# --- machine load -----------------------------------------------------------------------------

class LoadMeter:
    """CPU used over a window, in cores: by the worker's own processes, by the runs (sandboxes,
    alive or reaped by the worker), by the scheduler, by this bench process (the in-process app
    posting runs, the sampling), by PostgreSQL and Redis, and what is left: other people's load
    (tests, other benches on this shared machine)."""

    GROUPS = ("worker", "sandboxes", "scheduler", "bench", "services")

    def __init__(self, worker: int, scheduler: int):
        self.worker, self.scheduler = worker, scheduler

    def read(self) -> dict:
        """Cumulative CPU seconds of each group now (the machine's including interrupts)."""
        table = common.proc_table()
        worker_own, sandboxed = process_tree(self.worker, table)
        scheduler_own, _ = process_tree(self.scheduler, table)
        ours = set(worker_own + sandboxed + scheduler_own)
        times = os.times()
        return {"t": time.monotonic(), "machine": common.machine_busy_seconds(interrupts=True),
                "worker": sum(table[pid].cpu_s for pid in worker_own),
                "sandboxes": sum(table[pid].children_cpu_s for pid in worker_own)
                + sum(table[pid].total_cpu_s for pid in sandboxed),
                "scheduler": sum(table[pid].total_cpu_s for pid in scheduler_own),
                "bench": times.user + times.system,
                "services": sum(info.total_cpu_s for pid, info in table.items()
                                if pid not in ours and info.name.startswith(("postgres", "redis-server")))}

    @classmethod
    def between(cls, before: dict, after: dict) -> dict:
        wall = after["t"] - before["t"]
        if wall <= 0:
            return {}
        used = {name: max(after[name] - before[name], 0.0) for name in cls.GROUPS}
        machine = after["machine"] - before["machine"]
        result = {"wall_s": round(wall, 1), "machine": round(machine / wall, 2)}
        result.update({name: round(value / wall, 2) for name, value in used.items()})
        result["other"] = round(max(machine - sum(used.values()), 0.0) / wall, 2)
        return result


# --- the load ---------------------------------------------------------------------------------

def submit_runs(app, job_ids: list[str], runs: int, threads: int) -> dict:
    """``runs`` manual runs spread over ``job_ids``, posted by ``threads`` threads."""
    targets = [job_ids[i % len(job_ids)] for i in range(runs)]
    slices = [targets[i::threads] for i in range(threads)]
    failures: list[str] = []
    ids: list[str] = []
    lock = threading.Lock()

    def post(jobs: list[str]) -> None:
        client = app.test_client()
        for job_id in jobs:
            response = client.post(f"/api/v1/jobs/{job_id}/run", headers=ADMIN_HEADERS)
            with lock:
                if response.status_code == 202:
                    ids.append(response.json["id"])
                else:
                    failures.append(f"HTTP {response.status_code} {response.get_data(True)[:200]}")

    first = time.time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, slices))
    return {"first_request": first, "last_response": time.time(), "ids": ids, "failures": failures}


_SLEEPERS = text("""
    SELECT id::text AS id, status, created_at, started_at, completed_at, worker_id, error_message, send_count
      FROM executions WHERE job_id::text = ANY(:jobs)
""")


def sleeper_rows(engine, job_ids: list[str]) -> list[dict]:
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(_SLEEPERS, {"jobs": job_ids})]


def max_overlap(rows: list[dict]) -> int:
    events = []
    for row in rows:
        if row["started_at"] is not None:
            events.append((row["started_at"].timestamp(), 1))
            end = row["completed_at"].timestamp() if row["completed_at"] else float("inf")
            events.append((end, -1))
    running = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


class Sampler(threading.Thread):
    """Every ``interval`` s: the worker tree's memory and threads, PostgreSQL connections, load."""

    def __init__(self, engine, worker: subprocess.Popen, scheduler: subprocess.Popen, meter: LoadMeter,
                 interval: float = 3.0):
        super().__init__(daemon=True)
        self.engine, self.worker, self.scheduler, self.meter = engine, worker, scheduler, meter
        self.interval = interval
        self.samples: list[dict] = []
        self.errors: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                sample = {"ts": time.time(), "memory": tree_memory(self.worker.pid)}
                sample["pg"] = pg_connections(self.engine, {
                    "worker": process_tree(self.worker.pid)[0], "scheduler": process_tree(self.scheduler.pid)[0],
                    "bench": [os.getpid()]})
                sample["load"] = self.meter.read()
                self.samples.append(sample)
            except Exception as exc:  # noqa: BLE001 - a missed sample is reported, not fatal
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.stopped.wait(self.interval)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=30)

    def between(self, start: float, end: float) -> list[dict]:
        return [s for s in self.samples if start <= s["ts"] <= end]


# --- tick lags --------------------------------------------------------------------------------

def tick_window(rows: list[dict], start: float, end: float) -> dict:
    """The tick job's fires scheduled in [start, end): lag summary, and fires that did not run."""
    picked = [r for r in rows if start <= r["scheduled_for"].timestamp() < end]
    not_run = common.count_by([r for r in picked if r["status"] != "success"], "status")
    lags = [(lag, row) for row in picked if (lag := common.lag_of(row)) is not None]
    stages = {key: common.summary([lag[key] for lag, _ in lags if not lag["resent"]])
              for key in ("fire_to_insert_ms", "insert_to_spawn_ms", "spawn_to_start_ms")}
    worst = sorted(lags, key=lambda item: -item[0]["lag_ms"])[:3]
    return {"fires": len(picked), "lag": common.summary([lag["lag_ms"] for lag, _ in lags]), "stages": stages,
            "worst": [{"lag_ms": round(lag["lag_ms"], 1), "scheduled_for": row["scheduled_for"].isoformat(),
                       "fire_to_insert_ms": round(lag["fire_to_insert_ms"], 1),
                       "insert_to_spawn_ms": round(lag["insert_to_spawn_ms"], 1),
                       "spawn_to_start_ms": round(lag["spawn_to_start_ms"], 1)} for lag, row in worst],
            "resent": sum(1 for lag, _ in lags if lag["resent"]), "not_successful": not_run,
            "from": datetime.fromtimestamp(start, timezone.utc).isoformat(timespec="seconds"),
            "to": datetime.fromtimestamp(end, timezone.utc).isoformat(timespec="seconds")}


def wait_for_tick_fires(engine, tick_id: str, until: float, deadline: float) -> list[dict]:
    """Wait until every tick fire scheduled before ``until`` is final (or the deadline)."""
    while True:
        rows = common.fetch_jobs(engine, [tick_id])
        pending = [r for r in rows if r["scheduled_for"].timestamp() < until and r["status"] in ("queued", "running")]
        if (rows and not pending and rows[-1]["scheduled_for"].timestamp() >= until - 1) or time.time() > deadline:
            return rows
        time.sleep(0.5)


def peak(samples: list[dict], *keys: str) -> int | None:
    values = []
    for sample in samples:
        value = sample
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return max(values) if values else None


def run(args: argparse.Namespace) -> dict:
    env = TreeBench("concurrency", wait_db=args.wait_db)
    result: dict = {**common.result_head("concurrency"),
                    "settings": {"WORKER_PROCESSES": args.processes, "WORKER_THREADS": args.threads,
                                 "WORKER_POLL_MS": args.poll_ms, "SANDBOX": "bubblewrap",
                                 "redis_db": REDIS_DB, "database": BENCH_DATABASE},
                    "runs": args.runs, "sleep_s": args.sleep, "sleeper_jobs": args.sleeper_jobs,
                    "git": common.git_state()}
    loadavg_at_start = common.loadavg()
    sampler = None
    created: list[str] = []
    try:
        worker, worker_log = common.start_worker(env.procs, worker_processes=args.processes,
                                                 worker_threads=args.threads, poll_ms=args.poll_ms)
        scheduler, scheduler_log = env.procs.start("scheduler")
        started = time.monotonic()
        wait_for_log(scheduler, scheduler_log, "became the scheduler leader", timeout=60)
        wait_for_log(worker, worker_log, "is ready for action", timeout=120, count=args.processes)
        result["worker_ready_s"] = round(time.monotonic() - started, 1)
        meter = LoadMeter(worker.pid, scheduler.pid)
        # Sampling runs from now on, so that its own cost weighs on the idle and loaded windows alike.
        sampler = Sampler(env.engine, worker, scheduler, meter)
        sampler.start()
        sleeper_ids = common.create_jobs(env.app, args.sleeper_jobs, prefix="sleeper", schedule=None,
                                         script=f"sleep {args.sleep}\n", concurrency_policy="allow")
        tick_id = common.create_jobs(env.app, 1, prefix="tick")[0]
        created += sleeper_ids + [tick_id]
        ready_memory = tree_memory(worker.pid)
        log(f"worker ready ({args.processes} x {args.threads} threads, {ready_memory['threads']} OS threads, "
            f"RSS {ready_memory['rss_kb'] // 1024} MiB); measuring {args.idle_fires} idle fires of the tick job")

        # 1. Idle.
        first_fire = None
        deadline = time.time() + 30
        while first_fire is None and time.time() < deadline:
            rows = common.fetch_jobs(env.engine, [tick_id])
            first_fire = rows[0]["scheduled_for"].timestamp() if rows else None
            time.sleep(0.2)
        if first_fire is None:
            raise RuntimeError("the tick job never fired:\n" + scheduler_log.read_text(errors="replace")[-3000:])
        idle_start = first_fire + WARMUP_SECONDS
        idle_end = idle_start + args.idle_fires
        load_before = meter.read()
        time.sleep(max(idle_end - time.time(), 0))
        rows = wait_for_tick_fires(env.engine, tick_id, idle_end, time.time() + 30)
        result["idle_load"] = LoadMeter.between(load_before, meter.read())
        result["idle"] = tick_window(rows, idle_start, idle_end)
        idle_samples = sampler.between(idle_start, idle_end)
        result["idle_memory"] = {"rss_kb": peak(idle_samples, "memory", "rss_kb"),
                                 "pss_kb": peak(idle_samples, "memory", "pss_kb"),
                                 "threads": peak(idle_samples, "memory", "threads")}
        result["idle_pg"] = {key: peak(idle_samples, "pg", key) for key in PG_KEYS}
        log(f"idle: {common.fmt_summary(result['idle']['lag'])}")

        # 2. Load.
        log(f"posting {args.runs} runs of 'sleep {args.sleep}' over {args.sleeper_jobs} allow-jobs")
        submitted = submit_runs(env.app, sleeper_ids, args.runs, args.submit_threads)
        result["requests"] = {"seconds": round(submitted["last_response"] - submitted["first_request"], 2),
                              "accepted": len(submitted["ids"]), "failed": len(submitted["failures"]),
                              "failures": submitted["failures"][:5]}
        log(f"{len(submitted['ids'])} runs accepted in {result['requests']['seconds']} s "
            f"({len(submitted['failures'])} refused)")
        all_running_ts = None
        deadline = submitted["first_request"] + args.sleep + 120
        last_report = 0.0
        timeline = []
        while time.time() < deadline:
            rows = sleeper_rows(env.engine, sleeper_ids)
            counts = common.count_by(rows, "status")
            timeline.append({"t": round(time.time() - submitted["first_request"], 1), **counts})
            if all_running_ts is None and counts.get("running", 0) >= len(submitted["ids"]):
                all_running_ts = time.time()
                log(f"all {counts['running']} running after {all_running_ts - submitted['first_request']:.1f} s")
            if len(rows) == len(submitted["ids"]) and not counts.get("queued") and not counts.get("running"):
                break
            if time.time() - last_report > 10:
                memory = sampler.samples[-1]["memory"] if sampler.samples else {}
                pg = sampler.samples[-1]["pg"] if sampler.samples else {}
                log(f"t+{time.time() - submitted['first_request']:5.1f} s: {counts}; worker RSS "
                    f"{memory.get('rss_kb', 0) // 1024} MiB, {memory.get('sandbox_processes', 0)} sandbox processes; "
                    f"PostgreSQL connections {pg.get('bench_db_total')} ({pg.get('worker')} worker)")
                last_report = time.time()
            time.sleep(0.5)
        done_ts = time.time()
        sampler.stop()
        rows = sleeper_rows(env.engine, sleeper_ids)
        result["sleepers"] = analyse_sleepers(rows, submitted, all_running_ts, worker.pid)
        result["timeline"] = timeline[::4]
        plateau_start = result["sleepers"]["plateau_from_ts"]
        plateau_end = result["sleepers"]["plateau_to_ts"]
        tick_rows = wait_for_tick_fires(env.engine, tick_id, done_ts, time.time() + 30)
        if plateau_start is not None and plateau_end is not None:
            # A fire counts for the plateau if it was due a full second before the plateau ended.
            result["loaded"] = tick_window(tick_rows, plateau_start, plateau_end - 1)
            result["ramp"] = tick_window(tick_rows, submitted["first_request"], plateau_start)
            result["wind_down"] = tick_window(tick_rows, plateau_end - 1, done_ts)
            plateau_samples = sampler.between(plateau_start, plateau_end)
            if len(plateau_samples) >= 2:
                result["plateau_load"] = LoadMeter.between(plateau_samples[0]["load"], plateau_samples[-1]["load"])
        else:
            # Never all running at once: the lag from the first request to the first run's end.
            first_end = min((r["completed_at"].timestamp() for r in rows if r["completed_at"]), default=done_ts)
            result["under_load"] = tick_window(tick_rows, submitted["first_request"], first_end - 1)
            plateau_samples = sampler.between(submitted["first_request"], done_ts)
        load_samples = sampler.between(submitted["first_request"], done_ts)
        result["memory"] = {
            "plateau_samples": len(plateau_samples),
            "peak_rss_kb": peak(plateau_samples, "memory", "rss_kb"),
            "peak_pss_kb": peak(plateau_samples, "memory", "pss_kb"),
            "peak_threads": peak(plateau_samples, "memory", "threads"),
            "peak_sandbox_processes": peak(plateau_samples, "memory", "sandbox_processes"),
            "peak_sandbox_rss_kb": peak(plateau_samples, "memory", "sandbox_rss_kb"),
            "peak_sandbox_pss_kb": peak(plateau_samples, "memory", "sandbox_pss_kb"),
            "peak_rss_kb_whole_load": peak(load_samples, "memory", "rss_kb"),
            "jobplane_processes": peak(load_samples, "memory", "processes"),
        }
        result["pg"] = {key: peak(load_samples, "pg", key) for key in PG_KEYS}
        result["pg_plateau"] = {key: peak(plateau_samples, "pg", key) for key in PG_KEYS}
        result["sampler_errors"] = sampler.errors[:5]
        loaded = result.get("loaded", {}).get("lag", {})
        if result["idle"]["lag"].get("n") and loaded.get("n"):
            result["p99_ratio"] = round(loaded["p99_ms"] / result["idle"]["lag"]["p99_ms"], 2)
        env.check_undisturbed(created)
        result["undisturbed"] = True  # no reset of the database, no restart of PostgreSQL or Redis
    except Exception:
        if created:
            env.check_undisturbed(created)  # a reset or a restart explains the error: Disturbed
        raise
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        log("stopping worker and scheduler (SIGKILL of their trees)")
        result["cleanup"] = env.stop_all()
        result["log_problems"] = env.log_problems()
        env.close()
    result["machine"] = common.machine_info(loadavg_at_start)
    return result


def analyse_sleepers(rows: list[dict], submitted: dict, all_running_ts: float | None, worker_pid: int) -> dict:
    first = submitted["first_request"]
    started = [r["started_at"].timestamp() for r in rows if r["started_at"] is not None]
    completed = [r["completed_at"].timestamp() for r in rows if r["completed_at"] is not None]
    waits = [(r["started_at"] - r["created_at"]).total_seconds() * 1000 for r in rows if r["started_at"] is not None]
    all_started = len(started) == len(submitted["ids"]) and len(rows) == len(submitted["ids"])
    last_start = max(started) if started else None
    first_end = min(completed) if completed else None
    reached = all_started and (first_end is None or first_end >= last_start)
    by_process: dict[str, int] = {}
    for row in rows:
        if row["worker_id"]:
            pid = row["worker_id"].split(":")[1]
            by_process[pid] = by_process.get(pid, 0) + 1
    errors = common.count_by([r for r in rows if r["status"] != "success"], "error_message")
    return {
        "executions": len(rows),
        "by_status": common.count_by(rows, "status"),
        "all_running_at_once": reached,
        "all_running_after_s": round(last_start - first, 2) if reached else None,
        "all_running_observed_after_s": round(all_running_ts - first, 2) if all_running_ts else None,
        "max_running_at_once": max_overlap(rows),
        "queued_to_running_ms": common.summary(waits),
        "runs_per_worker_process": dict(sorted(by_process.items())),
        # Sent again by the sweeper after JOBPLANE_REQUEUE_AFTER_SECONDS still queued.
        "sent_more_than_once": sum(1 for r in rows if r["send_count"] > 1),
        "waited_over_5s": sum(1 for w in waits if w > 5000),
        "plateau_from_ts": last_start if reached else None,
        "plateau_to_ts": first_end if reached else None,
        "plateau_s": round(first_end - last_start, 1) if reached and first_end else None,
        "errors": dict(list(errors.items())[:5]),
    }


# --- report -----------------------------------------------------------------------------------

def _lag_line(label: str, window: dict | None) -> str:
    if not window:
        return f"  {label:10s} -"
    lag = window["lag"]
    if not lag.get("n"):
        return f"  {label:10s} no samples ({window['fires']} fires, {window['not_successful']})"
    extra = f"  not run/failed: {window['not_successful']}" if window["not_successful"] else ""
    return (f"  {label:10s} n={lag['n']:3d}  p50 {lag['p50_ms']:7.1f}  p95 {lag['p95_ms']:7.1f}  "
            f"p99 {lag['p99_ms']:7.1f}  max {lag['max_ms']:7.1f} ms{extra}")


def print_report(r: dict) -> None:
    s = r.get("sleepers", {})
    mb = lambda kb: f"{kb / 1024:.0f} MiB" if kb is not None else "-"  # noqa: E731
    common.print_report_head(f"Concurrency: {r['runs']} runs of 'sleep {r['sleep_s']}' at once, and a per-second "
                             f"job's fire lag", r, width=10)
    print(f"  setup     1 scheduler; worker {r['settings']['WORKER_PROCESSES']} processes x "
          f"{r['settings']['WORKER_THREADS']} threads, WORKER_POLL_MS={r['settings']['WORKER_POLL_MS']}, SANDBOX=bubblewrap "
          f"(ready {r.get('worker_ready_s')} s after start); {r['sleeper_jobs']} allow-jobs; "
          f"PostgreSQL db {BENCH_DATABASE}, Redis db {REDIS_DB}")
    print()
    req = r.get("requests", {})
    print(f"  requests              {req.get('accepted')} accepted, {req.get('failed')} refused, in {req.get('seconds')} s")
    print(f"  all running at once   {s.get('all_running_at_once')}  "
          f"(last one running {s.get('all_running_after_s')} s after the first request)")
    print(f"  max running at once   {s.get('max_running_at_once')}")
    print(f"  queued -> running     {common.fmt_summary(s.get('queued_to_running_ms', {}))}")
    print(f"  runs per process      {s.get('runs_per_worker_process')}")
    print(f"  waited > 5 s          {s.get('waited_over_5s')}; sent again by the sweeper (still queued after "
          f"REQUEUE_AFTER_SECONDS): {s.get('sent_more_than_once')}")
    print(f"  plateau               {s.get('plateau_s')} s (all running -> first finished)")
    print(f"  outcomes              {s.get('by_status')}  {s.get('errors') or ''}")
    print()
    print("  tick job fire lag (scheduled -> script START)")
    print(_lag_line("idle", r.get("idle")))
    print(_lag_line("ramp", r.get("ramp")))
    print(_lag_line("plateau", r.get("loaded")))
    print(_lag_line("wind-down", r.get("wind_down")))
    if r.get("under_load"):
        print(_lag_line("under load", r["under_load"]) + "  (no plateau: first request -> first run ended)")
    print(f"  p99 plateau / idle    {r.get('p99_ratio')}  (goal <= 2)")
    print("  where the tick job's time goes, p50 / p99 ms: fire -> insert | insert -> spawn | spawn -> START")
    for label, key in (("idle", "idle"), ("ramp", "ramp"), ("plateau", "loaded"), ("wind-down", "wind_down"),
                       ("under load", "under_load")):
        stages = (r.get(key) or {}).get("stages")
        if stages and all(v.get("n") for v in stages.values()):
            print(f"  {label:10s} " + " | ".join(f"{v['p50_ms']:6.1f} / {v['p99_ms']:6.1f}" for v in stages.values())
                  + "   slowest: " + ", ".join(f"{w['lag_ms']:.0f} ({w['fire_to_insert_ms']:.0f}+"
                                               f"{w['insert_to_spawn_ms']:.0f}+{w['spawn_to_start_ms']:.0f})"
                                               for w in r[key]["worst"]))
    print()
    mem = r.get("memory", {})
    span = "on the plateau" if s.get("all_running_at_once") else "under load (no plateau)"
    print(f"  worker memory, peak {span} ({mem.get('plateau_samples')} samples): "
          f"RSS {mb(mem.get('peak_rss_kb'))} (PSS {mb(mem.get('peak_pss_kb'))}) in {mem.get('jobplane_processes')} "
          f"processes, {mem.get('peak_threads')} threads; idle RSS {mb(r.get('idle_memory', {}).get('rss_kb'))}")
    print(f"  sandboxes, peak: {mem.get('peak_sandbox_processes')} processes, RSS {mb(mem.get('peak_sandbox_rss_kb'))} "
          f"(PSS {mb(mem.get('peak_sandbox_pss_kb'))})")
    for label, pg in (("idle", r.get("idle_pg") or {}), ("plateau", r.get("pg_plateau") or {}),
                      ("whole load", r.get("pg") or {})):
        print(f"  PostgreSQL connections to {BENCH_DATABASE}, peak, {label:10s}: {pg.get('bench_db_total')} (worker "
              f"{pg.get('worker')}, scheduler {pg.get('scheduler')}, bench {pg.get('bench')}, unattributed "
              f"{pg.get('other')}); server-wide {pg.get('server_total')}")
    for label, key in (("idle", "idle_load"), ("plateau", "plateau_load")):
        load = r.get(key) or {}
        if load:
            print(f"  CPU, {label:7s} (cores of 2): machine {load['machine']:.2f} = worker {load['worker']:.2f} + runs "
                  f"{load['sandboxes']:.2f} + scheduler {load['scheduler']:.2f} + bench process {load['bench']:.2f} + "
                  f"PostgreSQL/Redis {load['services']:.2f} + others {load['other']:.2f}  (over {load['wall_s']} s)")
    print(f"  cleanup   {r.get('cleanup')}")
    print(f"  undisturbed (no reset of {BENCH_DATABASE} by another run, no PostgreSQL/Redis restart): "
          f"{r.get('undisturbed')}; attempts discarded before this one: {r.get('discarded_attempts', [])}")
    problems = r.get("log_problems") or {}
    for name, lines in problems.items():
        print(f"  {name} log: {len(lines)} ERROR/CRITICAL/Traceback lines, e.g. {lines[:3]}")
    if r.get("sampler_errors"):
        print(f"  sampler errors: {r['sampler_errors']}")
    print("  percentiles are nearest-rank: with fewer than 100 samples, p99 is the largest")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--runs", type=int, default=450, help="runs at once (default 450)")
    parser.add_argument("--sleep", type=int, default=60, help="each run's 'sleep' seconds (default 60)")
    parser.add_argument("--sleeper-jobs", type=int, default=15, help="allow-jobs the runs are spread over (15)")
    parser.add_argument("--idle-fires", type=int, default=60, help="idle fires of the tick job measured (60)")
    parser.add_argument("--processes", type=int, default=2, help="JOBPLANE_WORKER_PROCESSES (default 2)")
    parser.add_argument("--threads", type=int, default=300, help="JOBPLANE_WORKER_THREADS (default 300)")
    parser.add_argument("--poll-ms", type=int, default=WORKER_POLL_MS,
                        help=f"JOBPLANE_WORKER_POLL_MS (default {WORKER_POLL_MS}; Jobplane's own default is 10)")
    parser.add_argument("--submit-threads", type=int, default=4, help="threads posting the runs (default 4)")
    common.add_wait_db_option(parser)
    parser.add_argument("--attempts", type=int, default=3,
                        help="runs disturbed by another bench's reset or a service restart are repeated, "
                             "at most this many times in all (default 3)")
    common.add_json_option(parser, help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.processes * args.threads <= args.runs:
        parser.error("--processes x --threads must exceed --runs (each run holds a worker thread)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.set_bench_name("concurrency")
    discarded: list[str] = []
    while True:
        try:
            result = run(args)
            break
        except Disturbed as exc:
            discarded.append(str(exc))
            log(f"discarding this attempt: {exc}")
            if len(discarded) >= args.attempts:
                raise
    result["discarded_attempts"] = discarded
    common.print_result(result, as_json=args.json, report=print_report)
    s = result.get("sleepers", {})
    ok = s.get("all_running_at_once") and s.get("by_status") == {"success": args.runs}
    return 0 if ok else 1


if __name__ == "__main__":
    common.run_main(main)
