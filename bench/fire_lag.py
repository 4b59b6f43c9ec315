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
    ``jobplane_bench`` (created if missing; once no other bench is connected to it, schema
    dropped and migrated at start), and a unique queue namespace in Redis database 14 of the
    server of TEST_REDIS_URL -- not the tests' database 15, which every test empties (FLUSHDB),
    losing a running bench's messages.  After the scheduler logs "became the scheduler leader"
    and the worker is ready, it creates ``--jobs`` jobs through the API
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
import math
import os
import sys
import time
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import (BENCH_DATABASE, BENCH_REDIS_DB, START_LINE, WARMUP_SECONDS, JobplaneBench,  # noqa: E402
                    collect, count_by, create_jobs, log, set_bench_name, summary, wait_for_log, window_of)

set_bench_name("fire_lag")
WORKER_PROCESSES = 1
WORKER_THREADS = 8
WORKER_POLL_MS = 100


# --- results ----------------------------------------------------------------------------------

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
        "executions_by_status": count_by(rows, "status"),
    }


def print_report(result: dict) -> None:
    a = result["analysis"]
    lag = a["lag"]
    common.print_report_head("Fire lag: scheduled fire time -> job script start (its own `date +%s.%N`)", result)
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
    parser = common.argument_parser(__doc__)
    parser.add_argument("--fires", type=int, default=120,
                        help="successful fires to measure, after warm-up (at least 100; default 120)")
    parser.add_argument("--jobs", type=int, default=4, help="jobs firing every second (default 4)")
    common.add_json_option(parser, help="print the result as JSON on stdout")
    args = parser.parse_args(argv)
    if args.fires < 100:
        parser.error("--fires must be at least 100")
    if not 1 <= args.jobs <= 64:
        parser.error("--jobs must be between 1 and 64")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loadavg_at_start = common.loadavg()
    per_job = math.ceil(args.fires / args.jobs)
    budget = common.fire_budget(per_job)
    env = JobplaneBench()
    processes = env.processes()
    try:
        env.reset()
        deadline = time.monotonic() + budget
        worker, worker_log = common.start_worker(processes, worker_processes=WORKER_PROCESSES,
                                                 worker_threads=WORKER_THREADS, poll_ms=WORKER_POLL_MS)
        common.start_leader(processes, timeout=30)
        wait_for_log(worker, worker_log, "ready for action", timeout=30)
        log(f"scheduler leads, worker ready; creating {args.jobs} jobs firing every second; measuring "
            f"{per_job} fire times per job after {WARMUP_SECONDS} s of warm-up (at most {budget} s in all)")
        job_ids = create_jobs(env.app, args.jobs)
        rows, complete = collect(env.engine, job_ids, per_job, deadline)
        for process, path in processes.started:
            if process.poll() is not None:
                log(f"warning: {path.stem} exited early with {process.returncode}")
        if not complete:
            log("deadline reached before every measured fire finished; reporting what there is\n"
                + processes.tails())
    finally:
        log("stopping scheduler and worker")
        processes.stop_all()
        env.close()

    result = {
        **common.result_head("fire_lag", "scheduled fire time -> job script start (script's own date +%s.%N)"),
        "fires_requested": args.fires,
        "jobs": args.jobs,
        "warmup_seconds_excluded": WARMUP_SECONDS,
        "settings": {"WORKER_PROCESSES": WORKER_PROCESSES, "WORKER_THREADS": WORKER_THREADS,
                     "WORKER_POLL_MS": WORKER_POLL_MS, "SANDBOX": "bubblewrap"},
        "complete": complete,
        "analysis": analyse(rows, job_ids, per_job),
        "machine": common.machine_info(loadavg_at_start),
    }
    common.print_result(result, as_json=args.json, report=print_report)
    return 0 if result["analysis"]["measured_fires"] >= args.fires else 1


if __name__ == "__main__":
    common.run_main(main)
