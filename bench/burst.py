"""Burst: 5,000 jobs due at the same instant, vs spawning the same sandboxed processes directly.

What it measures
    ``--jobs`` (default 5,000) bash jobs whose script is ``true``, all with the 6-field cron
    ``S M H * * *`` of one instant D about ``--lead-seconds`` ahead (each fires once in the run).
    Jobplane's figure is the time from D until every one of them has started: max
    ``executions.started_at`` - D, where ``started_at`` is the worker's clock just before it
    spawns the sandbox.  Where the time goes: max ``created_at`` - D is the scheduler recording
    every fire (``created_at`` is taken when the fire transaction starts -- per fire, or once
    for a batch of fires -- and the messages are sent after its commit; the time of the
    scheduler's last "fired" log line, written after commit and sends, is reported too), and
    the started_at percentiles show the workers catching up.

    Direct baseline: the same number of the very processes Jobplane's LocalExecutor starts for
    such a job (script ``true``): ``prlimit <the job's default limits> -- bwrap ... bash
    script.sh``, /work a tmpfs of the sandbox into which bwrap copies the script from a memfd
    (the executor's default), pinned to the job's default 1 CPU as the executor pins it, spawned by a pool of
    as many threads as the Jobplane worker has in all (``--worker-processes`` x
    ``--worker-threads``), each thread waiting for its process before spawning the next,
    stdout/stderr piped.  Its figure is the time from the pool's start until the last spawn
    (same clock point: just before Popen).  It runs before and after the Jobplane burst; the
    ratio uses the mean of the two.  A third run spawns bare ``bwrap ... bash script.sh`` (no
    prlimit, no pinning) once, as a reference: its ratio is printed too.

How it runs
    Database ``jobplane_bench`` reset; the jobs are created through the service layer
    (``jobs.create_job``: validation, audit row, change notification), 500 per transaction,
    BEFORE any jobplane process starts; then ``jobplane worker`` (``--worker-processes`` x
    ``--worker-threads``, Jobplane's default WORKER_POLL_MS unless ``--worker-poll-ms``,
    SANDBOX=bubblewrap) and ``jobplane scheduler``
    start, the scheduler reconciles the jobs into APScheduler's store when it becomes leader,
    and the burst fires at D.  The run stops when every execution is final or at D +
    ``--timeout`` (default 600 s); processes are stopped in a finally block.  CPU seconds used
    during the burst are read from /proc for the scheduler, the worker's process tree, all
    PostgreSQL processes and redis-server.

Running it (from the repository root; services from scripts/ensure-test-services.sh)
    . ./.test-services.env && .venv/bin/python bench/burst.py
    # options: --jobs N (default 5000)  --lead-seconds S (default 150)
    #          --worker-processes N (2)  --worker-threads N (4)  --timeout S (600)  --json
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import BASH, JobplaneBench, log, wait_for_log  # noqa: E402
from sqlalchemy import text  # noqa: E402

common.set_bench_name("burst")
SCRIPT = "true\n"


# --- direct baseline --------------------------------------------------------------------------

def direct_spawns(count: int, parallel: int, *, limits: bool = True) -> dict:
    """``count`` sandboxed ``bash script.sh`` (``true``) processes, ``parallel`` at a time: the very
    processes Jobplane's executor starts for such a job (``limits``: its ``prlimit`` wrapper and its
    CPU pinning included; without: bare ``bwrap``)."""
    from app.executors import limits as run_limits
    from app.executors import sandbox
    from app.executors.base import ResourceLimits
    from app.executors.local import _outside_usr

    extra_read_only = _outside_usr(os.path.realpath(sys.executable), BASH)
    job_limits = ResourceLimits()  # a job's defaults, as the burst's jobs have
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": sandbox.SANDBOX_WORKDIR, "LANG": "C.UTF-8"}
    spawn_times: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def one(n):
        spawned = time.time()
        # as the executor does by default: /work a tmpfs of the sandbox, the script copied in from a memfd
        script_fd = os.memfd_create("script.sh")
        os.pwrite(script_fd, SCRIPT.encode(), 0)
        argv = sandbox.wrap([BASH, "script.sh"], workdir=None, files={"script.sh": script_fd},
                            extra_read_only=extra_read_only)
        if limits:
            argv = run_limits.wrap(argv, job_limits)
        try:
            with run_limits.pinned(run_limits.cpu_set(job_limits.cpus, f"direct-{n}") if limits else None):
                process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
                                           pass_fds=(script_fd,))
        finally:
            os.close(script_fd)
        process.communicate()
        with lock:
            spawn_times.append(spawned)
            if process.returncode != 0:
                failures[0] += 1

    monitor = common.CpuMonitor().start()
    start = time.time()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, range(count)))
    end = time.time()
    spawn_times.sort()
    return {"count": count, "parallel": parallel, "limits": limits, "failures": failures[0],
            "all_started_s": round(spawn_times[-1] - start, 3),
            "half_started_s": round(spawn_times[len(spawn_times) // 2] - start, 3),
            "all_finished_s": round(end - start, 3),
            "spawns_per_s": round(count / (spawn_times[-1] - start), 1),
            "cpu": monitor.stop()}


# --- CPU accounting ---------------------------------------------------------------------------

def cpu_snapshot(scheduler_pid: int, worker_pid: int) -> dict[str, float]:
    """CPU seconds (user+system, with reaped children) of each group of processes.  The sandboxes'
    own CPU is not in the worker's: PID 1 reaps them (see common.CpuMonitor)."""
    table = common.proc_table()
    worker_own, worker_sandboxes = common.process_tree(worker_pid, table)
    groups = {"scheduler": [scheduler_pid], "worker": worker_own + worker_sandboxes,
              "postgresql": [p for p, info in table.items() if info.name.startswith("postgres")],
              "redis": [p for p, info in table.items() if info.name.startswith("redis-server")]}
    totals = {name: sum(table[pid].total_cpu_s for pid in pids if pid in table) for name, pids in groups.items()}
    totals["machine (user+system)"] = common.machine_busy_seconds()
    return totals


# --- Jobplane burst ---------------------------------------------------------------------------

def make_specs(count: int, due: datetime) -> list[dict]:
    schedule = f"{due.second} {due.minute} {due.hour} * * *"
    return [{"name": f"burst-{n}", "script": SCRIPT, "schedule": schedule} for n in range(1, count + 1)]


_BURST = text("""
    SELECT e.status, e.created_at, e.started_at, e.completed_at, e.scheduled_for, e.send_count
      FROM executions e JOIN jobs j ON j.id = e.job_id
     WHERE e.triggered_by = 'scheduled' AND j.name LIKE 'burst-%'
""")


_PROGRESS = text("""
    SELECT count(*) AS recorded, count(e.started_at) AS started,
           count(*) FILTER (WHERE e.status NOT IN ('queued', 'running')) AS final
      FROM executions e JOIN jobs j ON j.id = e.job_id
     WHERE e.triggered_by = 'scheduled' AND j.name LIKE 'burst-%'
""")


def burst_progress(engine) -> tuple[int, int, int]:
    """(recorded, started, final): counted by PostgreSQL, so that watching the burst costs little
    of the CPU it measures."""
    with engine.connect() as connection:
        return tuple(connection.execute(_PROGRESS).one())


def burst_rows(engine) -> list[dict]:
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(_BURST)]


def run_burst(env: JobplaneBench, args: argparse.Namespace) -> dict:
    due_ts = float(int(time.time() + args.lead_seconds))
    due = common.utc(due_ts)
    log(f"creating {args.jobs} jobs due at {due.isoformat()} (cron '{due.second} {due.minute} {due.hour} * * *')")
    t = time.monotonic()
    common.create_jobs_in_bulk(env.app, make_specs(args.jobs, due))
    create_s = time.monotonic() - t
    log(f"created in {create_s:.1f} s; starting worker and scheduler")
    processes = env.processes("jobplane")
    info: dict = {"create_jobs_s": round(create_s, 1), "due": due.isoformat()}
    try:
        t = time.monotonic()
        worker, worker_log = common.start_worker(processes, worker_processes=args.worker_processes,
                                                 worker_threads=args.worker_threads, poll_ms=args.worker_poll_ms)
        scheduler, scheduler_log = common.start_leader(processes, timeout=60)
        remaining = due_ts - time.time() - 2
        wait_for_log(scheduler, scheduler_log, "reconciled job store", timeout=max(remaining, 1))
        wait_for_log(worker, worker_log, "ready for action", timeout=60)
        info["startup_and_reconcile_s"] = round(time.monotonic() - t, 1)
        info["margin_before_due_s"] = round(due_ts - time.time(), 1)
        log(f"scheduler reconciled {args.jobs} jobs in {info['startup_and_reconcile_s']} s after start; "
            f"{info['margin_before_due_s']} s before the burst")
        if info["margin_before_due_s"] < 1:
            raise RuntimeError("the scheduler was not ready before the due instant: raise --lead-seconds")
        time.sleep(max(due_ts - time.time() - 0.5, 0))
        cpu_before = cpu_snapshot(scheduler.pid, worker.pid)
        monitor = common.CpuMonitor().start()
        wall_before = time.time()
        deadline = due_ts + args.timeout
        last = 0.0
        while True:
            recorded, started, final = burst_progress(env.engine)
            if final >= args.jobs or time.time() > deadline:
                break
            if time.time() - last > 5:
                log(f"t+{time.time() - due_ts:5.1f} s: {recorded} recorded, {started} started, {final} final")
                last = time.time()
            time.sleep(1.0)
        cpu_after = cpu_snapshot(scheduler.pid, worker.pid)
        usage = monitor.stop()
        info["other_cores_avg"] = usage["other_cores_avg"]
        info["kernel_threads_cpu_s"] = usage["kernel_threads_cpu_s"]
        info["reaped_by_init_cpu_s"] = usage["reaped_by_init_cpu_s"]
        info["cpu_window_s"] = round(time.time() - wall_before, 1)
        info["cpu_seconds"] = {k: round(cpu_after[k] - cpu_before[k], 1) for k in cpu_before}
        # When the scheduler logged its fires (after the commit and the sends): with fires
        # recorded in one transaction, created_at is the transaction's start, not its commit.
        fired = [t - due_ts for t in common.log_times(scheduler_log, "fired ") if t >= due_ts - 1]
        info["scheduler_fired_log_lines"] = len(fired)
        info["scheduler_last_fired_log_s"] = round(max(fired), 3) if fired else None
        info["scheduler_log_warnings"] = len(common.warning_lines(scheduler_log))
    finally:
        processes.stop_all()
    rows = burst_rows(env.engine)
    info.update(analyse(rows, due_ts, args.jobs))
    return info


def _quantiles(offsets: list[float], total: int) -> dict:
    """Seconds after the due instant by which 1 %, 50 %, 90 %, 99 % and all of ``total`` happened."""
    offsets = sorted(offsets)
    out = {}
    for label, fraction in (("first", 0.0), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("all", 1.0)):
        k = max(int(round(fraction * total)) - 1, 0)
        out[label] = round(offsets[k], 3) if k < len(offsets) else None
    return out


def analyse(rows: list[dict], due_ts: float, total: int) -> dict:
    created = [r["created_at"].timestamp() - due_ts for r in rows]
    started = [r["started_at"].timestamp() - due_ts for r in rows if r["started_at"] is not None]
    completed = [r["completed_at"].timestamp() - due_ts for r in rows if r["completed_at"] is not None]
    by_status = common.count_by(rows, "status")
    recorded = _quantiles(created, total)
    start_q = _quantiles(started, total)
    result = {"executions": len(rows), "by_status": by_status,
              "sent_more_than_once": sum(1 for r in rows if r["send_count"] > 1),
              "recorded_s": recorded, "started_s": start_q, "completed_s": _quantiles(completed, total),
              "all_started_s": start_q["all"]}
    if recorded["all"] is not None and recorded["first"] is not None and recorded["all"] - recorded["first"] > 0.01:
        result["record_rate_per_s"] = round(total / (recorded["all"] - recorded["first"]), 1)
    else:
        result["record_rate_per_s"] = None  # one transaction for the whole burst: see the log line
    if start_q["all"] is not None and recorded["all"] is not None:
        result["workers_after_last_record_s"] = round(start_q["all"] - recorded["all"], 3)
    if started:
        result["start_rate_per_s"] = round(len(started) / max(max(started) - min(started), 1e-9), 1)
    # Queue wait (insert -> spawn) over the burst, to show the backlog.
    waits = [r["started_at"].timestamp() - r["created_at"].timestamp() for r in rows if r["started_at"] is not None]
    s = common.summary(waits)
    result["insert_to_spawn_s"] = {k.replace("_ms", ""): v for k, v in s.items()}
    return result


# --- report -----------------------------------------------------------------------------------

def print_report(result: dict) -> None:
    j = result["jobplane"]
    common.print_report_head(f"Burst: {result['jobs']} jobs (bash `true`) due at the same instant, vs direct "
                             f"sandboxed spawns", result)
    common.print_load_and_code(result)
    print(f"  setup         worker {result['worker_processes']} processes x {result['worker_threads']} threads "
          f"(WORKER_POLL_MS={result['worker_poll_ms']}, bubblewrap); direct pool of {result['parallel']} threads")
    print(f"  jobs created in {j['create_jobs_s']} s (service layer); scheduler start + reconcile "
          f"{j.get('startup_and_reconcile_s')} s; due {j['due']}")
    print()
    for n, d in enumerate(result["direct"], 1):
        print(f"  direct #{n}: all started after {d['all_started_s']:.2f} s (half {d['half_started_s']:.2f} s), "
              f"all finished {d['all_finished_s']:.2f} s, {d['spawns_per_s']}/s, failures {d['failures']}, "
              f"CPU s: bench {d['cpu']['bench_cpu_s']}, sandboxes (reaped by init) "
              f"{d['cpu']['reaped_by_init_cpu_s']}, kernel threads {d['cpu']['kernel_threads_cpu_s']}, "
              f"other programs {d['cpu']['other_cores_avg']} cores")
    print(f"  direct mean all started: {result['direct_mean_s']:.2f} s")
    b = result["bare_bwrap"]
    print(f"  reference, bare bwrap (no prlimit, no pinning): all started after {b['all_started_s']:.2f} s, "
          f"{b['spawns_per_s']}/s, CPU s: bench {b['cpu']['bench_cpu_s']}")
    print()
    print(f"  jobplane: executions {j['executions']} {j['by_status']}, sent more than once {j['sent_more_than_once']}"
          f"; attempts discarded because Redis/PostgreSQL restarted: {j['discarded_attempts']}")
    for label, key in (("recorded by the scheduler (created_at)", "recorded_s"),
                       ("spawned by the workers (started_at)", "started_s"),
                       ("finished (completed_at)", "completed_s")):
        q = j[key]
        print(f"    {label:42s} first {q['first']}  50% {q['p50']}  90% {q['p90']}  99% {q['p99']}  all {q['all']} s")
    print(f"    scheduler's last 'fired' log line (after commit and send): {j.get('scheduler_last_fired_log_s')} s "
          f"after the due instant ({j.get('scheduler_fired_log_lines')} lines)")
    print(f"    scheduler records {j.get('record_rate_per_s')} fires/s; workers start {j.get('start_rate_per_s')} runs/s; "
          f"last spawn {j.get('workers_after_last_record_s')} s after the last record")
    print(f"    insert -> spawn wait (s): {j['insert_to_spawn_s']}")
    print(f"    CPU seconds during the burst ({j.get('cpu_window_s')} s): {j.get('cpu_seconds')}; kernel threads "
          f"{j.get('kernel_threads_cpu_s')}; sandboxes (reaped by init) {j.get('reaped_by_init_cpu_s')}; "
          f"other programs {j.get('other_cores_avg')} cores")
    print()
    g = result["goal"]
    print(f"  all started: jobplane {g['jobplane_s']} s vs direct {g['direct_s']:.2f} s -> ratio {g['ratio']:.2f}")
    print(f"  (against bare bwrap: ratio {result['ratio_to_bare_bwrap']:.2f})")
    common.print_goal("ratio <= 1.3", g["met"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--lead-seconds", type=int, default=150,
                        help="how far ahead of job creation the due instant is (default 150)")
    common.add_worker_options(parser)
    parser.add_argument("--timeout", type=int, default=600, help="give up this long after the due instant")
    common.add_poll_ms_option(parser)
    common.add_quiet_wait_option(parser)
    common.add_json_option(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= 20000:
        parser.error("--jobs must be 1..20000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    random.seed(1)
    loadavg_at_start = common.loadavg()
    parallel = args.worker_processes * args.worker_threads
    env = JobplaneBench()
    direct = []
    bare = None
    try:
        env.reset()
        poll_ms = env.worker_poll_ms(args.worker_poll_ms)
        quiet = common.wait_for_quiet(args.quiet_wait)
        log(f"direct baseline #1: {args.jobs} sandboxed spawns, {parallel} at a time")
        direct.append(direct_spawns(args.jobs, parallel))
        log(f"direct #1: all started after {direct[-1]['all_started_s']} s")
        first = [True]

        def step():
            if not first[0]:
                env.reset()  # a fresh database: the interrupted burst's jobs and executions go
            first[0] = False
            return run_burst(env, args)

        jobplane, discarded = env.undisturbed(step, what="jobplane burst")
        jobplane["discarded_attempts"] = discarded
        log(f"jobplane: all started after {jobplane['all_started_s']} s")
        log(f"direct baseline #2: {args.jobs} sandboxed spawns, {parallel} at a time")
        direct.append(direct_spawns(args.jobs, parallel))
        log(f"direct #2: all started after {direct[-1]['all_started_s']} s")
        log(f"direct reference: {args.jobs} bare bwrap spawns (no prlimit, no pinning), {parallel} at a time")
        bare = direct_spawns(args.jobs, parallel, limits=False)
        log(f"bare bwrap: all started after {bare['all_started_s']} s")
    finally:
        env.close()
    direct_mean = sum(d["all_started_s"] for d in direct) / len(direct)
    complete = jobplane["executions"] == args.jobs and jobplane["started_s"]["all"] is not None
    ratio = jobplane["all_started_s"] / direct_mean if complete else float("nan")
    result = {
        **common.result_head("burst", "due instant -> last of N runs spawned (executions.started_at) vs direct "
                                      "sandboxed spawns"),
        "jobs": args.jobs, "worker_processes": args.worker_processes, "worker_threads": args.worker_threads,
        "parallel": parallel, "worker_poll_ms": poll_ms,
        "direct": direct, "direct_mean_s": round(direct_mean, 3), "bare_bwrap": bare,
        "ratio_to_bare_bwrap": (jobplane["all_started_s"] / bare["all_started_s"]) if complete else float("nan"),
        "jobplane": jobplane,
        "goal": {"jobplane_s": jobplane["all_started_s"], "direct_s": direct_mean, "ratio": ratio,
                 "met": complete and ratio <= 1.3},
        "busy_cores_before_start": quiet,
        **common.result_tail(loadavg_at_start),
    }
    common.print_result(result, as_json=args.json, report=print_report)
    return 0 if complete else 1


if __name__ == "__main__":
    common.run_main(main)
