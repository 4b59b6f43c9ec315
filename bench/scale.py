"""Scale: fire lag of 10 per-second jobs alone, vs among 5,000 active jobs with mixed schedules.

What it measures
    The fire lag (scheduled second -> the job script's own ``START $(date +%s.%N)``, as in
    bench/fire_lag.py) of ``--measured`` (default 10) jobs firing every second
    (``* * * * * *``, concurrency_policy allow), in two phases of the same run:

      phase "10":   those jobs are the only jobs;
      phase "5000": the same jobs plus ``--total`` - ``--measured`` (default 4,990) other active
                    bash ``true`` jobs with the schedules people write: ``--every-minute``
                    (default 500) ``* * * * *``, and the rest half hourly ``M * * * *`` and half
                    daily ``M H * * *`` at random minutes and hours (fixed seed).  Every minute
                    therefore starts with a burst of ~540 fires at second 0 (500 every-minute,
                    ~38 hourly, ~2 daily) -- the load such a mix really puts on a scheduler.

    Each phase measures the fire times of a window of ``--seconds`` (default 120) starting at
    second 30 of a minute, so that both phases' windows hold the same two minute boundaries
    (at +30 s and +90 s).  Goal: p99(5000) <= 1.5 x p99(10).  Besides the overall figures it
    reports the lag by second of the minute (0-4, 5-14, 15-59), i.e. with and without the
    minute burst, and how long the scheduler took to record each minute burst.

How it runs
    Database ``jobplane_bench`` reset; the 10 jobs are created (API) before any process
    starts.  Phase "10": worker (``--worker-processes`` x ``--worker-threads``, default 2 x 4,
    Jobplane's default WORKER_POLL_MS unless --worker-poll-ms, bubblewrap) and scheduler start,
    the window is measured, both stop.
    Then the other jobs are created through the service layer (500 per transaction), worker
    and scheduler start again (the new leader reconciles all 5,000 into APScheduler's store),
    and the next window starting at second 30 at least 10 s later is measured.  Each phase
    gives up 180 s after its window ends; processes are stopped in finally blocks.

Running it (from the repository root; services from scripts/ensure-test-services.sh)
    . ./.test-services.env && .venv/bin/python bench/scale.py
    # options: --seconds N (default 120)  --measured N (10)  --total N (5000)
    #          --every-minute N (500)  --worker-processes N (2)  --worker-threads N (4)  --json
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import (JobplaneBench, create_jobs, fetch_jobs, fmt_summary, lag_of, log, summary,  # noqa: E402
                    wait_for_log, wait_until_idle)
from sqlalchemy import text  # noqa: E402

common.set_bench_name("scale")
AFTER_WINDOW = 180


def mixed_specs(count: int, every_minute: int, seed: int = 5) -> list[dict]:
    rng = random.Random(seed)
    specs = []
    for n in range(count):
        if n < every_minute:
            schedule = "* * * * *"
        elif (n - every_minute) % 2 == 0:
            schedule = f"{rng.randrange(60)} * * * *"
        else:
            schedule = f"{rng.randrange(60)} {rng.randrange(24)} * * *"
        specs.append({"name": f"mixed-{n + 1}", "script": "true\n", "schedule": schedule})
    return specs


def next_window_start(min_ahead: float) -> float:
    """The next second 30 of a minute at least ``min_ahead`` s from now (epoch seconds)."""
    t = time.time() + min_ahead
    start = math.floor(t / 60) * 60 + 30
    return start if start >= t else start + 60


_MINUTE_BURSTS = text("""
    SELECT date_trunc('minute', e.scheduled_for) AS minute, count(*) AS fires,
           max(e.created_at) AS last_recorded, max(e.started_at) AS last_started
      FROM executions e JOIN jobs j ON j.id = e.job_id
     WHERE j.name LIKE 'mixed-%' AND e.triggered_by = 'scheduled'
       AND e.scheduled_for >= :start AND e.scheduled_for < :end
       AND extract(second FROM e.scheduled_for) = 0
     GROUP BY 1 ORDER BY 1
""")


def run_phase(env: JobplaneBench, name: str, job_ids: list[str], args: argparse.Namespace,
              wait_reconcile: bool) -> dict:
    processes = env.processes(f"phase-{name}")
    window_start = None
    try:
        t = time.monotonic()
        worker, worker_log = common.start_worker(processes, worker_processes=args.worker_processes,
                                                 worker_threads=args.worker_threads, poll_ms=args.worker_poll_ms)
        scheduler, scheduler_log = common.start_leader(processes, timeout=60)
        if wait_reconcile:
            wait_for_log(scheduler, scheduler_log, "reconciled job store", timeout=300)
        wait_for_log(worker, worker_log, "ready for action", timeout=60)
        ready_s = round(time.monotonic() - t, 1)
        window_start = next_window_start(10)
        window_end = window_start + args.seconds
        log(f"phase {name}: ready after {ready_s} s; measuring fire times {common.utc(window_start).time()} .. "
            f"{common.utc(window_end).time()} of {len(job_ids)} per-second jobs")
        time.sleep(max(window_start - time.time(), 0))
        monitor = common.CpuMonitor().start()
        deadline = window_end + AFTER_WINDOW
        wanted = {(job, common.utc(window_start + i)) for job in job_ids for i in range(args.seconds)}
        last = 0.0
        while True:
            rows = fetch_jobs(env.engine, job_ids)
            by_key = {(r["job_id"], r["scheduled_for"]): r for r in rows}
            done = sum(1 for key in wanted if key in by_key and by_key[key]["status"] in common.TERMINAL)
            now = time.time()
            if (done == len(wanted) and now > window_end) or now > deadline:
                break
            if now - last > 15:
                log(f"phase {name}: {done}/{len(wanted)} measured fires finished")
                last = now
            time.sleep(1.0)
        cpu = monitor.stop()
        # Stop the per-second jobs' runs from piling into the next phase.
        wait_until_idle(env.engine, job_ids, timeout=10)
        warnings = common.warning_lines(scheduler_log)
    finally:
        processes.stop_all()
    samples, problems = [], {"never_ran": 0, "not_successful": 0, "resent": 0}
    by_bucket: dict[str, list[float]] = {"second 0-4": [], "second 5-14": [], "second 15-59": []}
    stages: dict[str, list[float]] = {}
    for key in sorted(wanted, key=lambda k: (k[1], k[0])):
        row = by_key.get(key)
        if row is None:
            problems["never_ran"] += 1
            continue
        record = lag_of(row)
        if record is None:
            problems["not_successful"] += 1
            continue
        if record["resent"]:
            problems["resent"] += 1
        samples.append(record["lag_ms"])
        second = key[1].second
        bucket = "second 0-4" if second < 5 else "second 5-14" if second < 15 else "second 15-59"
        by_bucket[bucket].append(record["lag_ms"])
        for stage in ("fire_to_insert_ms", "insert_to_spawn_ms", "spawn_to_start_ms"):
            stages.setdefault(stage, []).append(record[stage])
    with env.engine.connect() as connection:
        bursts = [{"minute": r.minute.isoformat(), "fires": r.fires,
                   "all_recorded_after_s": round(r.last_recorded.timestamp() - r.minute.timestamp(), 2),
                   "all_started_after_s": round(r.last_started.timestamp() - r.minute.timestamp(), 2)
                   if r.last_started else None}
                  for r in connection.execute(_MINUTE_BURSTS, {"start": common.utc(window_start),
                                                                "end": common.utc(window_end)})]
    return {"phase": name, "ready_s": ready_s, "window": [common.utc(window_start).isoformat(),
                                                         common.utc(window_end).isoformat()],
            "expected": len(wanted), "lag": summary(samples),
            "by_second_of_minute": {k: summary(v) for k, v in by_bucket.items()},
            "stages": {k: summary(v) for k, v in stages.items()},
            "problems": problems, "minute_bursts": bursts, "cpu": cpu,
            "scheduler_warnings": len(warnings), "scheduler_warning_sample": warnings[:3]}


def print_report(result: dict) -> None:
    common.print_report_head("Scale: fire lag of per-second jobs alone vs among 5,000 active jobs (scheduled "
                             "second -> script START)", result)
    common.print_load_and_code(result)
    print(f"  setup         {result['measured']} jobs '* * * * * *' measured; mix: {result['mix']}; worker "
          f"{result['worker_processes']}x{result['worker_threads']}, WORKER_POLL_MS={result['worker_poll_ms']}, bubblewrap; "
          f"{result['mixed_create_s']} s to create the other jobs")
    for phase in result["phases"]:
        print()
        print(f"  phase {phase['phase']}: window {phase['window'][0]} .. {phase['window'][1]} "
              f"(ready {phase['ready_s']} s after start)")
        print(f"    lag                  {fmt_summary(phase['lag'])}  of {phase['expected']}")
        for bucket, s in phase["by_second_of_minute"].items():
            print(f"    {bucket:20s} {fmt_summary(s)}")
        names = {"fire_to_insert_ms": "fire -> insert", "insert_to_spawn_ms": "insert -> spawn",
                 "spawn_to_start_ms": "spawn -> START"}
        for key, s in phase["stages"].items():
            print(f"    {names[key]:20s} {fmt_summary(s)}")
        print(f"    problems             {phase['problems']}; scheduler warnings {phase['scheduler_warnings']}")
        for b in phase["minute_bursts"]:
            print(f"    minute burst {b['minute']}: {b['fires']} fires, all recorded after {b['all_recorded_after_s']} s, "
                  f"all started after {b['all_started_after_s']} s")
        print(f"    cores used by other programs: {phase['cpu']['other_cores_avg']}; attempts discarded because "
              f"Redis/PostgreSQL restarted: {phase['discarded_attempts']}")
    g = result["goal"]
    print()
    print(f"  p99: {g['p99_10_ms']:.1f} ms (10 jobs) vs {g['p99_5000_ms']:.1f} ms (5,000 jobs): ratio {g['ratio']:.2f}")
    print(f"  p99 of fires outside seconds 0-14 of a minute (no burst): {g['p99_5000_quiet_ms']} ms, "
          f"ratio {g['ratio_quiet']}")
    common.print_goal("p99(5000) <= 1.5 x p99(10)", g["met"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--measured", type=int, default=10)
    parser.add_argument("--total", type=int, default=5000)
    parser.add_argument("--every-minute", type=int, default=500)
    common.add_worker_options(parser)
    common.add_poll_ms_option(parser)
    common.add_stage_ahead_option(parser)
    common.add_quiet_wait_option(parser)
    common.add_json_option(parser)
    args = parser.parse_args(argv)
    if args.seconds < 30 or args.measured * args.seconds < 300:
        parser.error("measure at least 300 fires (--measured x --seconds) over at least 30 s")
    if not 0 <= args.every_minute <= args.total - args.measured:
        parser.error("--every-minute must be at most --total - --measured")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loadavg_at_start = common.loadavg()
    env = JobplaneBench(**common.stage_ahead_settings(args))
    phases = []
    try:
        env.reset()
        poll_ms = env.worker_poll_ms(args.worker_poll_ms)
        job_ids = create_jobs(env.app, args.measured, prefix="scale-measured", concurrency_policy="allow")
        quiet = common.wait_for_quiet(args.quiet_wait)
        phase, discarded = env.undisturbed(lambda: run_phase(env, "10", job_ids, args, wait_reconcile=False),
                                           what="phase 10")
        phases.append({**phase, "discarded_attempts": discarded})
        log(f"phase 10: {fmt_summary(phases[-1]['lag'])}")
        others = args.total - args.measured
        log(f"creating {others} jobs with mixed schedules")
        t = time.monotonic()
        common.create_jobs_in_bulk(env.app, mixed_specs(others, args.every_minute))
        create_s = round(time.monotonic() - t, 1)
        phase, discarded = env.undisturbed(lambda: run_phase(env, str(args.total), job_ids, args, wait_reconcile=True),
                                           what=f"phase {args.total}")
        phases.append({**phase, "discarded_attempts": discarded})
        log(f"phase {args.total}: {fmt_summary(phases[-1]['lag'])}")
    finally:
        env.close()
    small, large = phases[0]["lag"], phases[1]["lag"]
    quiet_large = phases[1]["by_second_of_minute"]["second 15-59"]
    ratio = common.ratio(large, small)
    ratio_quiet = common.ratio(quiet_large, small, default=None)
    result = {
        **common.result_head("scale", "fire lag (scheduled second -> script START) of per-second jobs, alone vs "
                                      "among N active jobs"),
        "measured": args.measured, "total": args.total, "seconds": args.seconds,
        "mix": {"every minute '* * * * *'": args.every_minute,
                "hourly 'M * * * *'": (args.total - args.measured - args.every_minute + 1) // 2,
                "daily 'M H * * *'": (args.total - args.measured - args.every_minute) // 2},
        "worker_processes": args.worker_processes, "worker_threads": args.worker_threads,
        "worker_poll_ms": poll_ms,
        "mixed_create_s": create_s,
        "phases": phases,
        "goal": {"p99_10_ms": small.get("p99_ms", float("nan")), "p99_5000_ms": large.get("p99_ms", float("nan")),
                 "ratio": ratio, "met": ratio <= 1.5,
                 "p99_5000_quiet_ms": quiet_large.get("p99_ms"),
                 "ratio_quiet": round(ratio_quiet, 2) if ratio_quiet is not None else None},
        "busy_cores_before_start": quiet,
        **common.result_tail(loadavg_at_start),
    }
    common.print_result(result, as_json=args.json, report=print_report)
    return 0 if all(p["lag"].get("n", 0) >= 300 for p in phases) else 1


if __name__ == "__main__":
    common.run_main(main)
