"""Fire lag, Jobplane vs a Celery beat + Celery worker baseline, in the same run.

What it measures
    For entries firing every second, the time from a fire's scheduled instant to the moment
    the job's own bash script starts, as the script reports it: its first line is
    ``echo "START $(date +%s.%N)"`` and lag = that timestamp - the scheduled instant.

    Jobplane: jobs with the 6-field cron ``* * * * * *`` (concurrency_policy allow); the
    scheduled instant is ``executions.scheduled_for`` (a whole second).  Path: APScheduler in
    ``jobplane scheduler`` -> execution row in PostgreSQL -> Dramatiq message on Redis db 14 ->
    ``jobplane worker`` (1 process x 8 threads, Jobplane's default WORKER_POLL_MS unless
    --worker-poll-ms says otherwise) claims it -> bash under bubblewrap.

    Celery: ``celery beat`` with one entry per job, each on ``AlignedSecond`` (see
    bench/celery_baseline.py), a ``celery.schedules.schedule`` due at every whole UTC second:
    the same instants as ``* * * * * *``, and the scheduled instant is that whole second (beat
    wakes 10 ms early and sends at the boundary; the instant is passed to the task).  A
    ``celery worker --pool threads --concurrency 8`` on Redis db 13 runs the same script with
    ``subprocess.run(["/bin/bash", script])`` -- no sandbox, as a Celery user would.  With
    ``--celery-bwrap`` a third system runs it under the same bubblewrap command line as
    Jobplane's worker, to show what the sandbox alone costs.

How it runs
    Interleaved rounds (default 3): in each round every system runs in turn, alone on the
    machine, with its processes started fresh for the round and stopped after it; the order
    rotates from round to round so that no system always goes first.  In a round each system
    fires ``--jobs`` entries every second; the first 2 s of each entry's fires are a warm-up
    and are not counted, the next ceil(fires / (jobs x rounds)) fire times of each entry are.
    Jobplane's jobs of a round are created through the API once its scheduler leads and its
    worker is ready, and paused at the end of the round.  Everything is stopped in finally
    blocks (SIGTERM, then SIGKILL of each process group); every round has a deadline.

Running it (from the repository root; services from scripts/ensure-test-services.sh;
needs the bench extra: ``pip install -e '.[bench]'``)
    . ./.test-services.env && .venv/bin/python bench/fire_lag_vs_celery.py
    # options: --fires N per system (>= 100, default 300)  --jobs N (default 4)
    #          --rounds N (default 3)  --celery-bwrap  --worker-poll-ms MS  --json

Output
    Per system: lag p50/p95/p99/max (nearest rank, over all rounds), per-round p50/p99, where
    the time goes, fires that failed or never ran; then Jobplane's p99 / Celery's p99 and
    whether the goal (Jobplane's p99 at or below Celery's) is met.  Exit status 0 when every
    system measured --fires lags.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import (BASH, WARMUP_SECONDS, JobplaneBench, collect, create_jobs, fetch_jobs,  # noqa: E402
                    fmt_summary, lag_of, log, pause_jobs, summary, wait_for_log, wait_until_idle, window_of)

common.set_bench_name("fire_lag_vs_celery")

WORKER_PROCESSES = 1
WORKER_THREADS = 8
CELERY = str(Path(sys.executable).with_name("celery"))


# --- a round's samples -------------------------------------------------------------------------

def tally(window: dict, by_key: dict, jobs: int, per_job: int, sample, complete: bool) -> dict:
    """A round's samples: ``sample(row, fire time)`` of each measured fire time of each job or
    entry in ``window`` that has a row in ``by_key`` (keyed by (job or entry, fire time)) --
    a sample, or the name of the problem that kept it from one.  Fire times with no row, and
    those of jobs or entries that never fired, count as "never_ran"."""
    samples, problems = [], {"never_ran": 0, "not_successful": 0, "no_start_line": 0}
    for key, times in window.items():
        for fire_time in times:
            row = by_key.get((key, fire_time))
            outcome = "never_ran" if row is None else sample(row, fire_time)
            if isinstance(outcome, str):
                problems[outcome] += 1
            else:
                samples.append(outcome)
    problems["never_ran"] += (jobs - len(window)) * per_job
    return {"samples": samples, "problems": problems, "complete": complete}


# --- Jobplane ---------------------------------------------------------------------------------

def run_jobplane_round(env: JobplaneBench, round_no: int, jobs: int, per_job: int, poll_ms: int | None) -> dict:
    processes = env.processes(f"round{round_no}-jobplane-{uuid.uuid4().hex[:6]}")
    # Jobs of an earlier attempt interrupted by a service restart must not fire in this one.
    with env.engine.connect() as connection:
        leftover = [str(r[0]) for r in connection.execute(text("SELECT id FROM jobs WHERE status = 'active'"))]
    pause_jobs(env.app, leftover)
    job_ids: list[str] = []
    rows: list[dict] = []
    complete = False
    try:
        deadline = time.monotonic() + common.fire_budget(per_job)
        worker, worker_log = common.start_worker(processes, worker_processes=WORKER_PROCESSES,
                                                 worker_threads=WORKER_THREADS, poll_ms=poll_ms)
        common.start_leader(processes, timeout=30)
        wait_for_log(worker, worker_log, "ready for action", timeout=30)
        job_ids = create_jobs(env.app, jobs, prefix=f"vs-round{round_no}", concurrency_policy="allow")
        log(f"round {round_no} jobplane: {jobs} jobs firing every second; measuring {per_job} fire times each")
        rows, complete = collect(env.engine, job_ids, per_job, deadline, warmup=WARMUP_SECONDS,
                                 rows_of=lambda engine: fetch_jobs(engine, job_ids))
        if not complete:
            log("deadline reached before every measured fire finished\n" + processes.tails())
        pause_jobs(env.app, job_ids)
        # Let the runs fired after the window finish, so none is left for the next round.
        wait_until_idle(env.engine, job_ids, timeout=15)
    finally:
        processes.stop_all()

    def sample(row: dict, fire_time) -> dict | str:
        record = lag_of(row)
        if record is None:
            return "not_successful" if row["status"] != "success" else "no_start_line"
        if record["fire_to_insert_ms"] < 0:  # staged: recorded ahead, its process held until the fire time
            stages = {"staged: execution insert, ms BEFORE the fire": -record["fire_to_insert_ms"],
                      "staged: fire -> started_at (> 0: released late)": record["lag_ms"] - record["spawn_to_start_ms"],
                      "staged: started_at -> script start (launcher wakes, exec bash)": record["spawn_to_start_ms"]}
        else:
            stages = {"fire -> execution insert (scheduler)": record["fire_to_insert_ms"],
                      "insert -> sandbox spawn (commit, Redis, poll, claim)": record["insert_to_spawn_ms"],
                      "spawn -> script start (bwrap + bash)": record["spawn_to_start_ms"]}
        return {"lag_ms": record["lag_ms"], "stages": stages, "scheduled_for": fire_time.timestamp()}

    return tally(window_of(rows, job_ids, per_job), {(r["job_id"], r["scheduled_for"]): r for r in rows},
                 jobs, per_job, sample, complete)


# --- Celery -----------------------------------------------------------------------------------

def run_celery_round(env: JobplaneBench, round_no: int, jobs: int, per_job: int, sandboxed: bool) -> dict:
    import redis

    name = "celery-bwrap" if sandboxed else "celery"
    broker = common.redis_url_with_db(common.test_redis_url(), common.CELERY_REDIS_DB)
    queue = f"jobplane-bench-celery-{uuid.uuid4().hex[:8]}"
    work = env.work_dir / f"round{round_no}-{name}-{queue[-8:]}"
    results_file = work / "results.jsonl"
    (work / "runs").mkdir(parents=True, exist_ok=True)
    script = work / "script.sh"
    script.write_text(common.SCRIPT)
    client = redis.Redis.from_url(broker)
    keys_before = set(client.scan_iter(count=1000))
    celery_env = common.process_env({})
    celery_env.update({
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent), str(common.REPO_ROOT)]),
        "BENCH_CELERY_BROKER": broker, "BENCH_CELERY_QUEUE": queue, "BENCH_CELERY_RESULTS": str(results_file),
        "BENCH_CELERY_ENTRIES": str(jobs), "BENCH_CELERY_SCRIPT": str(script),
        "BENCH_CELERY_SANDBOX": "bubblewrap" if sandboxed else "none", "BENCH_CELERY_BASH": BASH,
        "BENCH_CELERY_RUN_DIR": str(work / "runs")})
    processes = common.Processes({}, work)
    results: list[dict] = []
    complete = False
    try:
        deadline = time.monotonic() + common.fire_budget(per_job)
        worker, worker_log = processes.start_argv(
            [CELERY, "-A", "celery_baseline", "worker", "--pool", "threads", "--concurrency", str(WORKER_THREADS),
             "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--hostname", f"{queue}@%h"],
            log_name="celery-worker", env=celery_env, cwd=str(work))
        wait_for_log(worker, worker_log, "ready.", timeout=60)
        beat, beat_log = processes.start_argv(
            [CELERY, "-A", "celery_baseline", "beat", "--loglevel", "INFO", "--schedule", str(work / "beat-schedule")],
            log_name="celery-beat", env=celery_env, cwd=str(work))
        wait_for_log(beat, beat_log, "beat: Starting", timeout=60)
        log(f"round {round_no} {name}: {jobs} beat entries firing every second; measuring {per_job} fire times each")
        last_report = 0.0
        while True:
            results = _read_results(results_file)
            window = _celery_window(results, jobs, per_job)
            seen = {(r["entry"], r["scheduled_for"]) for r in results}
            wanted = [(entry, t) for entry, times in window.items() for t in times]
            done = sum(1 for key in wanted if key in seen)
            # Complete once each entry has fired past its window (a fire time with no result
            # by then never ran), or every measured fire has reported.
            latest = {}
            for r in results:
                latest[r["entry"]] = max(latest.get(r["entry"], 0), r["scheduled_for"] or 0)
            past = len(window) == jobs and all(latest.get(e, 0) >= times[-1] + 10 for e, times in window.items())
            complete = len(window) == jobs and done == len(wanted)
            if complete or past or time.monotonic() > deadline:
                break
            if time.monotonic() - last_report > 5:
                log(f"{done}/{per_job * jobs} measured fires reported ({len(results)} runs so far)")
                last_report = time.monotonic()
            time.sleep(0.5)
        if not complete:
            log(f"{name}: not every measured fire reported\n" + processes.tails())
    finally:
        processes.stop_all()
        try:
            new_keys = [k for k in client.scan_iter(count=1000) if k not in keys_before]
            if new_keys:
                client.delete(*new_keys)
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
            log(f"could not clean Celery's Redis keys: {exc}")
        client.close()

    def sample(r: dict, instant: int) -> dict | str:
        if r["returncode"] != 0:
            return "not_successful"
        if r["script_start"] is None:
            return "no_start_line"
        return {"lag_ms": (r["script_start"] - instant) * 1000, "scheduled_for": instant, "stages": {
            "fire -> beat sends": (r["sent_at"] - instant) * 1000,
            "beat sends -> task starts (Redis, worker)": (r["task_start"] - r["sent_at"]) * 1000,
            "task starts -> spawn": (r["spawn"] - r["task_start"]) * 1000,
            "spawn -> script start (" + ("bwrap + " if sandboxed else "") + "bash)":
                (r["script_start"] - r["spawn"]) * 1000}}

    return tally(_celery_window(results, jobs, per_job), {(r["entry"], r["scheduled_for"]): r for r in results},
                 jobs, per_job, sample, complete)


def _read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _celery_window(results: list[dict], jobs: int, per_job: int) -> dict[int, list[int]]:
    first: dict[int, int] = {}
    for r in results:
        if r["scheduled_for"] is not None:
            first[r["entry"]] = min(first.get(r["entry"], r["scheduled_for"]), r["scheduled_for"])
    return {entry: [first[entry] + WARMUP_SECONDS + i for i in range(per_job)]
            for entry in range(1, jobs + 1) if entry in first}


# --- report -----------------------------------------------------------------------------------

def describe(system_rounds: list[dict]) -> dict:
    samples = [s for r in system_rounds for s in r["samples"]]
    stages: dict[str, list[float]] = {}
    for s in samples:
        for key, value in s["stages"].items():
            stages.setdefault(key, []).append(value)
    problems: dict[str, int] = {}
    for r in system_rounds:
        for key, value in r["problems"].items():
            problems[key] = problems.get(key, 0) + value
    return {"lag": summary([s["lag_ms"] for s in samples]),
            "rounds": [summary([s["lag_ms"] for s in r["samples"]]) for r in system_rounds],
            "other_cores_by_round": [r["cpu"]["other_cores_avg"] for r in system_rounds],
            "rounds_repeated_after_service_restarts": sum(r["discarded_attempts"] for r in system_rounds),
            "stages": {key: summary(values) for key, values in stages.items()},
            "problems": problems,
            "complete": all(r["complete"] for r in system_rounds),
            "worst": sorted((round(s["lag_ms"], 1) for s in samples), reverse=True)[:5]}


def _median(values: list) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def print_report(result: dict) -> None:
    common.print_report_head("Fire lag, Jobplane vs Celery beat + worker: scheduled instant -> job script start "
                             "(`date +%s.%N`)", result)
    common.print_load_and_code(result)
    print(f"  setup         {result['jobs']} entries/jobs firing every second; {result['rounds']} interleaved rounds "
          f"(order rotates); {result['per_job_per_round']} fire times per entry per round after "
          f"{WARMUP_SECONDS} s warm-up")
    print("                jobplane: 1 scheduler + 1 worker (1 process x 8 threads, "
          f"WORKER_POLL_MS={result['worker_poll_ms']}, bubblewrap), Redis db 14")
    print("                celery:   beat (AlignedSecond entries) + worker --pool threads -c 8, Redis db 13, plain "
          "subprocess" + ("; celery-bwrap: same under bubblewrap" if "celery-bwrap" in result["systems"] else ""))
    print()
    for name, d in result["systems"].items():
        print(f"  {name}")
        print(f"    lag            {fmt_summary(d['lag'])}")
        print("    per round      " + " | ".join(f"p50 {r.get('p50_ms', 0):.1f} p99 {r.get('p99_ms', 0):.1f}"
                                                 for r in d["rounds"]))
        for key, s in d["stages"].items():
            print(f"    {key:52s} {fmt_summary(s)}")
        print(f"    problems       {d['problems']}   slowest {d['worst']}")
        print(f"    cores used by other programs during its rounds: {d['other_cores_by_round']}; rounds repeated "
              f"because Redis/PostgreSQL restarted: {d['rounds_repeated_after_service_restarts']}")
        print()
    g = result["goal"]
    print(f"  p99: jobplane {g['jobplane_p99_ms']:.1f} ms, celery {g['celery_p99_ms']:.1f} ms, ratio "
          f"{g['ratio']:.2f}; p50 ratio {g['p50_ratio']:.2f}")
    print(f"  median of the per-round p99s: jobplane {g['jobplane_median_round_p99_ms']} ms, celery "
          f"{g['celery_median_round_p99_ms']} ms (less sensitive to one disturbed round)")
    common.print_goal("jobplane p99 <= celery p99", g["met"])
    print("  percentiles are nearest-rank over all measured fires of all rounds")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--fires", type=int, default=300, help="fires to measure per system (>= 100; default 300)")
    parser.add_argument("--jobs", type=int, default=4, help="entries/jobs firing every second (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--celery-bwrap", action="store_true",
                        help="also run Celery with the script under bubblewrap, as a third system")
    common.add_poll_ms_option(parser, whose="Jobplane's worker")
    common.add_stage_ahead_option(parser)
    common.add_quiet_wait_option(parser)
    common.add_json_option(parser, help="print the result as JSON on stdout")
    args = parser.parse_args(argv)
    if args.fires < 100:
        parser.error("--fires must be at least 100")
    if not 1 <= args.jobs <= 32 or not 1 <= args.rounds <= 10:
        parser.error("--jobs must be 1..32 and --rounds 1..10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(CELERY).exists():
        log(f"{CELERY} not found: install the bench extra (pip install -e '.[bench]')")
        return 2
    loadavg_at_start = common.loadavg()
    per_job = math.ceil(args.fires / (args.jobs * args.rounds))
    systems = ["jobplane", "celery"] + (["celery-bwrap"] if args.celery_bwrap else [])
    rounds: dict[str, list[dict]] = {name: [] for name in systems}
    env = JobplaneBench(**common.stage_ahead_settings(args))
    try:
        env.reset()
        poll_ms = env.worker_poll_ms(args.worker_poll_ms)
        quiet = common.wait_for_quiet(args.quiet_wait)
        for round_no in range(1, args.rounds + 1):
            shift = (round_no - 1) % len(systems)
            for name in systems[shift:] + systems[:shift]:
                def step(name=name, round_no=round_no):
                    monitor = common.CpuMonitor().start()
                    if name == "jobplane":
                        d = run_jobplane_round(env, round_no, args.jobs, per_job, args.worker_poll_ms)
                    else:
                        d = run_celery_round(env, round_no, args.jobs, per_job, sandboxed=name == "celery-bwrap")
                    d["cpu"] = monitor.stop()
                    return d

                d, discarded = env.undisturbed(step, what=f"round {round_no} {name}")
                d["discarded_attempts"] = discarded
                rounds[name].append(d)
                log(f"round {round_no} {name}: {fmt_summary(summary([s['lag_ms'] for s in d['samples']]))}; "
                    f"other programs used {d['cpu']['other_cores_avg']} cores")
    finally:
        env.close()
    described = {name: describe(r) for name, r in rounds.items()}
    jp, ce = described["jobplane"]["lag"], described["celery"]["lag"]
    goal = {"jobplane_p99_ms": jp.get("p99_ms", float("nan")), "celery_p99_ms": ce.get("p99_ms", float("nan")),
            "ratio": common.ratio(jp, ce), "p50_ratio": common.ratio(jp, ce, "p50_ms"),
            # Less sensitive to one disturbed round than the pooled p99 (others share this machine).
            "jobplane_median_round_p99_ms": _median([r.get("p99_ms") for r in described["jobplane"]["rounds"]]),
            "celery_median_round_p99_ms": _median([r.get("p99_ms") for r in described["celery"]["rounds"]]),
            "met": bool(jp.get("n") and ce.get("n") and jp["p99_ms"] <= ce["p99_ms"])}
    result = {
        **common.result_head("fire_lag_vs_celery",
                             "scheduled instant (whole second) -> job script start (script's own date +%s.%N)"),
        "worker_poll_ms": poll_ms,
        "jobs": args.jobs, "rounds": args.rounds, "per_job_per_round": per_job, "fires_requested": args.fires,
        "order": "interleaved rounds; order rotates each round",
        "systems": described,
        "goal": goal,
        "busy_cores_before_start": quiet,
        **common.result_tail(loadavg_at_start),
    }
    common.print_result(result, as_json=args.json, report=print_report)
    return 0 if all(d["lag"].get("n", 0) >= args.fires for d in described.values()) else 1


if __name__ == "__main__":
    common.run_main(main)
