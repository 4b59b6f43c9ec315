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
import signal
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import (JobplaneBench, collect, create_jobs, fetch_jobs, fmt_summary, lag_of,  # noqa: E402
                    log, pause_jobs, summary, wait_for_log, wait_until_idle, window_of)

common.set_bench_name("fire_lag_vs_celery")

WARMUP_SECONDS = 2
WORKER_PROCESSES = 1
WORKER_THREADS = 8
CELERY = str(Path(sys.executable).with_name("celery"))
BASH = "/bin/bash"


# --- Jobplane ---------------------------------------------------------------------------------

def run_jobplane_round(env: JobplaneBench, round_no: int, jobs: int, per_job: int, poll_ms: int | None) -> dict:
    processes = env.processes(f"round{round_no}-jobplane-{uuid.uuid4().hex[:6]}")
    # Jobs of an earlier attempt interrupted by a service restart must not fire in this one.
    with env.engine.connect() as connection:
        leftover = [str(r[0]) for r in connection.execute(text("SELECT id FROM jobs WHERE status = 'active'"))]
    pause_jobs(env.app, leftover)
    budget = 60 + WARMUP_SECONDS + per_job + 60
    job_ids: list[str] = []
    rows: list[dict] = []
    complete = False
    try:
        deadline = time.monotonic() + budget
        poll = {"WORKER_POLL_MS": poll_ms} if poll_ms is not None else {}
        worker, worker_log = processes.start("worker", WORKER_PROCESSES=WORKER_PROCESSES,
                                             WORKER_THREADS=WORKER_THREADS, SANDBOX="bubblewrap", **poll)
        scheduler, scheduler_log = processes.start("scheduler")
        wait_for_log(scheduler, scheduler_log, "became the scheduler leader", timeout=30)
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
    window = window_of(rows, job_ids, per_job, WARMUP_SECONDS)
    by_key = {(r["job_id"], r["scheduled_for"]): r for r in rows}
    samples, problems = [], {"never_ran": 0, "not_successful": 0, "no_start_line": 0}
    for job, times in window.items():
        for fire_time in times:
            row = by_key.get((job, fire_time))
            if row is None:
                problems["never_ran"] += 1
                continue
            record = lag_of(row)
            if record is None:
                problems["not_successful" if row["status"] != "success" else "no_start_line"] += 1
                continue
            samples.append({"lag_ms": record["lag_ms"],
                            "stages": {"fire -> execution insert (scheduler)": record["fire_to_insert_ms"],
                                       "insert -> sandbox spawn (commit, Redis, poll, claim)":
                                           record["insert_to_spawn_ms"],
                                       "spawn -> script start (bwrap + bash)": record["spawn_to_start_ms"]},
                            "scheduled_for": fire_time.timestamp()})
    problems["never_ran"] += (jobs - len(window)) * per_job
    return {"samples": samples, "problems": problems, "complete": complete}


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
    celery_env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPLANE_")}
    celery_env.update({
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent), str(common.REPO_ROOT)]),
        "BENCH_CELERY_BROKER": broker, "BENCH_CELERY_QUEUE": queue, "BENCH_CELERY_RESULTS": str(results_file),
        "BENCH_CELERY_ENTRIES": str(jobs), "BENCH_CELERY_SCRIPT": str(script),
        "BENCH_CELERY_SANDBOX": "bubblewrap" if sandboxed else "none", "BENCH_CELERY_BASH": BASH,
        "BENCH_CELERY_RUN_DIR": str(work / "runs")})
    processes = common.Processes({}, work)
    budget = 60 + WARMUP_SECONDS + per_job + 60
    results: list[dict] = []
    complete = False
    try:
        deadline = time.monotonic() + budget
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
    window = _celery_window(results, jobs, per_job)
    by_key = {(r["entry"], r["scheduled_for"]): r for r in results}
    samples, problems = [], {"never_ran": 0, "not_successful": 0, "no_start_line": 0}
    for entry, times in window.items():
        for instant in times:
            r = by_key.get((entry, instant))
            if r is None:
                problems["never_ran"] += 1
            elif r["returncode"] != 0:
                problems["not_successful"] += 1
            elif r["script_start"] is None:
                problems["no_start_line"] += 1
            else:
                samples.append({"lag_ms": (r["script_start"] - instant) * 1000, "scheduled_for": instant, "stages": {
                    "fire -> beat sends": (r["sent_at"] - instant) * 1000,
                    "beat sends -> task starts (Redis, worker)": (r["task_start"] - r["sent_at"]) * 1000,
                    "task starts -> spawn": (r["spawn"] - r["task_start"]) * 1000,
                    "spawn -> script start (" + ("bwrap + " if sandboxed else "") + "bash)":
                        (r["script_start"] - r["spawn"]) * 1000}})
    problems["never_ran"] += (jobs - len(window)) * per_job
    return {"samples": samples, "problems": problems, "complete": complete}


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
    m = result["machine"]
    print("Fire lag, Jobplane vs Celery beat + worker: scheduled instant -> job script start (`date +%s.%N`)")
    print(f"  date          {result['date']}")
    print(f"  command       {result['command']}")
    print(f"  machine       nproc={m['nproc']}  cpu={m['cpu_model']}  kernel={m['kernel']}  python={m['python']}  "
          f"{m['bubblewrap']}  loadavg start/end={m['loadavg_at_start']}/{m['loadavg_at_end']}")
    print(f"  other load    {result['busy_cores_before_start']} cores busy just before the start")
    print(f"  code          commit {result['git']['commit']} (+{result['git']['app_modified_files']} modified files in app/)")
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
    print(f"  goal: jobplane p99 <= celery p99 -> {'MET' if g['met'] else 'NOT MET'}")
    print("  percentiles are nearest-rank over all measured fires of all rounds")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fires", type=int, default=300, help="fires to measure per system (>= 100; default 300)")
    parser.add_argument("--jobs", type=int, default=4, help="entries/jobs firing every second (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--celery-bwrap", action="store_true",
                        help="also run Celery with the script under bubblewrap, as a third system")
    parser.add_argument("--worker-poll-ms", type=int, default=None,
                        help="JOBPLANE_WORKER_POLL_MS of Jobplane's worker (default: Jobplane's default)")
    parser.add_argument("--quiet-wait", type=float, default=120,
                        help="wait at most this long for other programs to leave the CPU idle (default 120 s)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    args = parser.parse_args(argv)
    if args.fires < 100:
        parser.error("--fires must be at least 100")
    if not 1 <= args.jobs <= 32 or not 1 <= args.rounds <= 10:
        parser.error("--jobs must be 1..32 and --rounds 1..10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, common.on_sigterm)
    if not Path(CELERY).exists():
        log(f"{CELERY} not found: install the bench extra (pip install -e '.[bench]')")
        return 2
    loadavg_at_start = common.loadavg()
    per_job = math.ceil(args.fires / (args.jobs * args.rounds))
    systems = ["jobplane", "celery"] + (["celery-bwrap"] if args.celery_bwrap else [])
    rounds: dict[str, list[dict]] = {name: [] for name in systems}
    env = JobplaneBench()
    try:
        env.reset()
        poll_default = env.app.config["WORKER_POLL_MS"]
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

                d, discarded = common.undisturbed(step, what=f"round {round_no} {name}", database_url=env.database_url,
                                                  redis_url=env.redis_url)
                d["discarded_attempts"] = discarded
                rounds[name].append(d)
                log(f"round {round_no} {name}: {fmt_summary(summary([s['lag_ms'] for s in d['samples']]))}; "
                    f"other programs used {d['cpu']['other_cores_avg']} cores")
    finally:
        env.close()
    described = {name: describe(r) for name, r in rounds.items()}
    jp, ce = described["jobplane"]["lag"], described["celery"]["lag"]
    goal = {"jobplane_p99_ms": jp.get("p99_ms", float("nan")), "celery_p99_ms": ce.get("p99_ms", float("nan")),
            "ratio": jp["p99_ms"] / ce["p99_ms"] if jp.get("n") and ce.get("n") else float("nan"),
            "p50_ratio": jp["p50_ms"] / ce["p50_ms"] if jp.get("n") and ce.get("n") else float("nan"),
            # Less sensitive to one disturbed round than the pooled p99 (others share this machine).
            "jobplane_median_round_p99_ms": _median([r.get("p99_ms") for r in described["jobplane"]["rounds"]]),
            "celery_median_round_p99_ms": _median([r.get("p99_ms") for r in described["celery"]["rounds"]]),
            "met": bool(jp.get("n") and ce.get("n") and jp["p99_ms"] <= ce["p99_ms"])}
    result = {
        "benchmark": "fire_lag_vs_celery",
        "measures": "scheduled instant (whole second) -> job script start (script's own date +%s.%N)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": common.command_line(),
        "worker_poll_ms": args.worker_poll_ms if args.worker_poll_ms is not None else poll_default,
        "jobs": args.jobs, "rounds": args.rounds, "per_job_per_round": per_job, "fires_requested": args.fires,
        "order": "interleaved rounds; order rotates each round",
        "systems": described,
        "goal": goal,
        "busy_cores_before_start": quiet,
        "git": common.git_state(),
        "machine": common.machine_info(loadavg_at_start),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0 if all(d["lag"].get("n", 0) >= args.fires for d in described.values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
