"""Worker kills: SIGKILL ``jobplane worker`` mid-run, over and over; nothing may stay stuck.

The long version of the fault test in tests/test_execution_engine.py: "SIGKILL the ``jobplane
worker`` process mid-run: the execution leaves ``running`` within 45 s and is retried per
policy; 0 executions stuck over 20 kills."

What it measures
    One ``jobplane scheduler`` runs throughout (its leader's sweeper declares ``lost`` the
    running executions whose heartbeat is older than JOBPLANE_HEARTBEAT_STALE_SECONDS).  One
    on-demand job, ``sleep 20``, ``max_retries: 1``, ``retry_delay_seconds: 0``,
    ``concurrency_policy: allow``.  ``--kills`` times:

    1. start a worker (``--processes`` x 8 threads, SANDBOX=bubblewrap, the rest defaults) and
       wait until each of its processes is ready;
    2. run the job (``POST /api/v1/jobs/{id}/run``) and wait until the execution is ``running``,
       then a random 1-5 s more (so kills fall anywhere between two heartbeats);
    3. SIGKILL the worker's jobplane processes -- the ``dramatiq`` main process and its worker
       processes, all at once -- but not the run's sandbox: bubblewrap's --die-with-parent must
       end it (the bench checks that the bwrap/bash/sleep processes it saw are gone, and kills
       any survivor);
    4. detection: the time from the kill until the execution is seen leaving ``running`` (polled
       every 0.1 s), its new status (``lost`` expected), and the parts of it -- the heartbeat's
       age at the kill, and when the sweeper acted (``completed_at``);
    5. start a new worker, wait for the retry (attempt 2, same fire) to succeed, and SIGKILL that
       worker too.

    At the end: executions still ``queued`` or ``running`` (stuck; the goal is 0), the attempts
    of each fire (exactly ``lost`` then ``success`` is expected), deliveries that workers
    dropped because they lost the claim (Dramatiq re-delivering a killed worker's message is
    harmless), and ERROR/CRITICAL lines in the logs.

Settings
    Production defaults unless given: JOBPLANE_HEARTBEAT_SECONDS 2, JOBPLANE_SWEEP_INTERVAL_SECONDS
    5, JOBPLANE_HEARTBEAT_STALE_SECONDS 30 (``--stale-seconds``).  With those, a killed run is
    declared lost once its last heartbeat is over 30 s old, at the sweeper's next pass: expect
    detection between about 28 s (the heartbeat was nearly 2 s old at the kill) and 35 s (the
    sweep had just run).  ``--stale-seconds 3 --sweep-seconds 0.5 --heartbeat-seconds 0.5`` is the
    tests' quick setting.  Each kill takes about stale + 30 s: 20 kills with the defaults run
    for about 20 minutes.

How it runs
    Database ``jobplane_bench`` (waits for other clients to leave it, then reset and migrated),
    Redis database 12 under a unique namespace; every wait has a deadline; every process tree is
    killed at the end, also on errors and Ctrl-C.

Running it (from the repository root; services from scripts/ensure-test-services.sh)
    . ./.test-services.env && .venv/bin/python bench/worker_kills.py
    # options: --kills N (20)  --stale-seconds S (30)  --sweep-seconds S (5)  --heartbeat-seconds S (2)
    #          --processes N (2)  --seed N  --wait-db S (900)  --json
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import ADMIN_HEADERS, BENCH_DATABASE, log, wait_for_log  # noqa: E402
from process_trees import REDIS_DB, Disturbed, TreeBench  # noqa: E402
from sqlalchemy import text  # noqa: E402

WORKER_THREADS = 8
RUN_SECONDS = 20
GOAL_SECONDS = 45

_ROW = text("""SELECT status, heartbeat_at, started_at, completed_at, worker_id, error_message
                 FROM executions WHERE id = :id""")
_ATTEMPTS = text("""SELECT id::text AS id, attempt, status, first_attempt_id::text AS first_attempt_id,
                           created_at, started_at, completed_at, error_message
                      FROM executions WHERE job_id::text = :job ORDER BY created_at, attempt""")


def row_of(engine, execution_id: str) -> dict:
    with engine.connect() as connection:
        return dict(connection.execute(_ROW, {"id": execution_id}).one()._mapping)


def attempts_of(engine, job_id: str) -> list[dict]:
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(_ATTEMPTS, {"job": job_id})]


def wait_until(predicate, timeout: float, interval: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def start_worker(env: TreeBench, name: str, processes: int):
    """A worker (``processes`` x WORKER_THREADS) logging to ``name``.log, once every process is ready."""
    worker, path = common.start_worker(env.procs, worker_processes=processes, worker_threads=WORKER_THREADS,
                                       log_name=name)
    wait_for_log(worker, path, "is ready for action", timeout=90, count=processes)
    return worker


def one_kill(env: TreeBench, job_id: str, index: int, args: argparse.Namespace, rng: random.Random) -> dict:
    """One kill: a worker runs the job, is SIGKILLed mid-run; a new worker runs the retry."""
    record: dict = {"index": index}
    workers = []
    try:
        _kill_and_recover(env, job_id, index, args, rng, record, workers)
    except Exception as exc:  # noqa: BLE001 - recorded; the next kill still runs
        record["error"] = f"{type(exc).__name__}: {exc}"
        log(f"kill {index}: {record['error']}")
    finally:
        for worker in workers:
            if worker.poll() is None:
                env.kill(worker)
    return record


def _kill_and_recover(env: TreeBench, job_id: str, index: int, args: argparse.Namespace, rng: random.Random,
                      record: dict, workers: list) -> None:
    client = env.app.test_client()
    worker = start_worker(env, f"worker-{index:02d}-killed", args.processes)
    workers.append(worker)
    response = client.post(f"/api/v1/jobs/{job_id}/run", headers=ADMIN_HEADERS)
    if response.status_code != 202:
        raise RuntimeError(f"run refused: HTTP {response.status_code} {response.get_data(True)}")
    execution_id = record["execution_id"] = response.json["id"]
    wait_until(lambda: row_of(env.engine, execution_id)["status"] == "running", 30, 0.05, "the run to start")
    running_at = time.time()
    time.sleep(rng.uniform(1, 5))
    before = row_of(env.engine, execution_id)
    if before["status"] != "running":
        raise RuntimeError(f"the run ended before the kill: {before}")
    killed_at = time.time()
    record["kill_after_running_s"] = round(killed_at - running_at, 2)
    record["worker_kill"] = env.kill(worker)
    # Until the sweeper acts, the row keeps the last heartbeat the worker wrote.
    def left_running():
        row = row_of(env.engine, execution_id)
        return row if row["status"] != "running" else None

    left = wait_until(left_running, args.stale_seconds + args.sweep_seconds + 60, 0.1, "the execution to leave running")
    seen_at = time.time()
    record.update({
        "status": left["status"],
        "detected_s": round(seen_at - killed_at, 2),
        "swept_s": round(left["completed_at"].timestamp() - killed_at, 2) if left["completed_at"] else None,
        "heartbeat_age_at_kill_s": round(killed_at - left["heartbeat_at"].timestamp(), 2) if left["heartbeat_at"] else None,
        "error_message": left["error_message"],
    })
    log(f"kill {index}: {left['status']} {record['detected_s']} s after the SIGKILL (heartbeat "
        f"{record['heartbeat_age_at_kill_s']} s old at the kill; sandbox gone after "
        f"{record['worker_kill']['sandboxes_gone_after_s']} s); starting a new worker for the retry")
    recovery = start_worker(env, f"worker-{index:02d}-recovery", args.processes)
    workers.append(recovery)

    def retry_done():
        rows = [r for r in attempts_of(env.engine, job_id) if r["first_attempt_id"] == execution_id]
        return rows if rows and all(r["status"] not in ("queued", "running") for r in rows) else None

    try:
        retries = wait_until(retry_done, RUN_SECONDS + 90, 0.2, "the retry to finish")
    except TimeoutError as exc:
        retries = [r for r in attempts_of(env.engine, job_id) if r["first_attempt_id"] == execution_id]
        record["retry_error"] = str(exc)
    record["retries"] = [{"attempt": r["attempt"], "status": r["status"],
                          "started_after_lost_s": round((r["started_at"] - left["completed_at"]).total_seconds(), 2)
                          if r["started_at"] and left["completed_at"] else None} for r in retries]
    record["retry_succeeded"] = any(r["status"] == "success" for r in retries)
    record["recovery_kill"] = env.kill(recovery)


def run(args: argparse.Namespace) -> dict:
    settings = {"HEARTBEAT_STALE_SECONDS": args.stale_seconds, "SWEEP_INTERVAL_SECONDS": args.sweep_seconds,
                "HEARTBEAT_SECONDS": args.heartbeat_seconds}
    env = TreeBench("worker-kills", wait_db=args.wait_db, **settings)
    rng = random.Random(args.seed)
    result: dict = {**common.result_head("worker_kills"), "kills_requested": args.kills, "seed": args.seed,
                    "settings": {**settings, "WORKER_PROCESSES": args.processes, "WORKER_THREADS": WORKER_THREADS,
                                 "SANDBOX": "bubblewrap", "redis_db": REDIS_DB,
                                 "database": BENCH_DATABASE},
                    "job": {"script": f"sleep {RUN_SECONDS}", "max_retries": 1, "retry_delay_seconds": 0},
                    "git": common.git_state(), "kills": []}
    loadavg_at_start = common.loadavg()
    started = time.monotonic()
    try:
        scheduler, _ = common.start_leader(env.procs, timeout=60)
        job_id = common.create_jobs(env.app, 1, prefix="victim", schedule=None, script=f"sleep {RUN_SECONDS}\n",
                                    max_retries=1, retry_delay_seconds=0, concurrency_policy="allow")[0]
        for index in range(1, args.kills + 1):
            if scheduler.poll() is not None:
                raise RuntimeError(f"the scheduler exited with {scheduler.returncode}")
            record = one_kill(env, job_id, index, args, rng)
            try:
                env.check_undisturbed([job_id])
            except Disturbed as exc:
                if exc.reset:
                    result["aborted"] = str(exc)
                    log(f"stopping: {exc}")
                    break
                # A restart of PostgreSQL or Redis (another test run) measured that, not a kill.
                record["disturbed"] = str(exc)
                log(f"kill {index} discarded: {exc}")
                env.epoch = common.wait_for_services(env.database_url, env.redis_url)
            result["kills"].append(record)
        time.sleep(2)  # anything left queued or running now is stuck
        rows = attempts_of(env.engine, job_id) if "aborted" not in result else []
        result["executions_by_status"] = common.count_by(rows, "status")
        result["stuck"] = [{"id": r["id"], "attempt": r["attempt"], "status": r["status"]}
                           for r in rows if r["status"] in ("queued", "running")]
        fires: dict[str, list[str]] = {}
        for row in rows:
            fires.setdefault(row["first_attempt_id"] or row["id"], []).append(f"{row['attempt']}:{row['status']}")
        result["fire_outcomes"] = common.count_by([{"o": " ".join(v)} for v in fires.values()], "o")
    finally:
        log("stopping the scheduler and any worker left (SIGKILL of their trees)")
        result["cleanup"] = env.stop_all()
        result["log_problems"] = {name: lines[:5] for name, lines in env.log_problems().items()}
        result["dropped_deliveries"] = sum(path.read_text(errors="replace").count("delivery dropped")
                                           for _, path in env.started)
        env.close()
    result["duration_s"] = round(time.monotonic() - started, 1)
    result["machine"] = common.machine_info(loadavg_at_start)
    result["summary"] = summarise(result)
    return result


def summarise(result: dict) -> dict:
    kills = [k for k in result["kills"] if "disturbed" not in k]
    detected = [k["detected_s"] for k in kills if "detected_s" in k]
    ordered = sorted(detected)
    kill_info = [k[key] for k in kills for key in ("worker_kill", "recovery_kill") if key in k] + \
        list(result.get("cleanup", []))
    gone = [k["worker_kill"]["sandboxes_gone_after_s"] for k in kills
            if k.get("worker_kill", {}).get("sandboxes_gone_after_s") is not None]
    return {
        "kills": sum(1 for k in kills if "worker_kill" in k),
        "discarded": [f"kill {k['index']}: {k['disturbed']}" for k in result["kills"] if "disturbed" in k],
        "errors": [f"kill {k['index']}: {k['error']}" for k in kills if "error" in k],
        "lost": sum(1 for k in kills if k.get("status") == "lost"),
        "detected_p50_s": common.percentile(ordered, 50) if ordered else None,
        "detected_min_s": ordered[0] if ordered else None,
        "detected_max_s": ordered[-1] if ordered else None,
        "within_goal": sum(1 for d in detected if d <= GOAL_SECONDS),
        "heartbeat_age_at_kill_max_s": max((k.get("heartbeat_age_at_kill_s") or 0 for k in kills), default=None),
        "retries_succeeded": sum(1 for k in kills if k.get("retry_succeeded")),
        "stuck": len(result.get("stuck", [])),
        "sandbox_processes_killed_with_worker": sum(k["worker_kill"]["sandbox_processes"] for k in kills
                                                    if "worker_kill" in k),
        "sandboxes_gone_after_max_s": max(gone) if gone else None,
        "sandbox_survivors": sum(k["sandbox_survivors"] for k in kill_info),
        "jobplane_survivors": sum(k["jobplane_survivors"] for k in kill_info),
    }


def print_report(r: dict) -> None:
    s, st = r["summary"], r["settings"]
    common.print_report_head("Worker kills: SIGKILL of `jobplane worker` mid-run, detection and retry", r, width=10)
    print(f"  setup     HEARTBEAT_SECONDS={st['HEARTBEAT_SECONDS']}  HEARTBEAT_STALE_SECONDS="
          f"{st['HEARTBEAT_STALE_SECONDS']}  SWEEP_INTERVAL_SECONDS={st['SWEEP_INTERVAL_SECONDS']}; workers "
          f"{st['WORKER_PROCESSES']} x {st['WORKER_THREADS']} threads; job 'sleep {RUN_SECONDS}', max_retries 1, "
          f"retry delay 0; {r['duration_s']} s in all")
    print()
    print(f"  {'kill':>4s} {'after run':>9s} {'hb age':>7s} {'detected':>9s} {'swept':>7s} {'status':>7s} "
          f"{'sandbox gone':>12s} {'retry':>22s}")
    for k in r["kills"]:
        if "error" in k and "detected_s" not in k:
            print(f"  {k['index']:>4} error: {k['error']}")
            continue
        retry = ", ".join(f"#{x['attempt']} {x['status']} +{x['started_after_lost_s']}s" for x in k["retries"]) or "none"
        gone = k["worker_kill"]["sandboxes_gone_after_s"]
        print(f"  {k['index']:>4} {k['kill_after_running_s']:8.1f}s {k['heartbeat_age_at_kill_s']:6.1f}s "
              f"{k['detected_s']:8.1f}s {k['swept_s']:6.1f}s {k['status']:>7s} {str(gone) + ' s':>12s} {retry:>22s}"
              + (f"  {k['error']}" if "error" in k else ""))
    print()
    print(f"  kills                 {s['kills']} of {r['kills_requested']} requested")
    print(f"  left running as lost  {s['lost']}; detection p50 {s['detected_p50_s']} s, min {s['detected_min_s']} s, "
          f"max {s['detected_max_s']} s; within {GOAL_SECONDS} s: {s['within_goal']}/{s['kills']}")
    print(f"  retries succeeded     {s['retries_succeeded']}/{s['kills']}")
    print(f"  stuck (queued/running at the end)  {s['stuck']}   executions {r.get('executions_by_status')}")
    print(f"  attempts per fire     {r.get('fire_outcomes')}")
    print(f"  sandboxes             {s['sandbox_processes_killed_with_worker']} sandbox processes were running at the "
          f"kills; all gone within {s['sandboxes_gone_after_max_s']} s; survivors {s['sandbox_survivors']}; "
          f"jobplane survivors {s['jobplane_survivors']}")
    if r.get("aborted"):
        print(f"  ABORTED  {r['aborted']}")
    for line in s["discarded"]:
        print(f"  discarded (service restart during the kill): {line}")
    for error in s["errors"]:
        print(f"  ERROR   {error}")
    print(f"  dropped deliveries    {r['dropped_deliveries']} (a delivery that lost the claim: harmless)")
    for name, lines in (r.get("log_problems") or {}).items():
        print(f"  {name} log: {lines[:3]}")
    print("  percentiles are nearest-rank")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--kills", type=int, default=20, help="worker kills (default 20)")
    parser.add_argument("--stale-seconds", type=float, default=30.0,
                        help="JOBPLANE_HEARTBEAT_STALE_SECONDS (default 30, the production default)")
    parser.add_argument("--sweep-seconds", type=float, default=5.0, help="JOBPLANE_SWEEP_INTERVAL_SECONDS (5)")
    parser.add_argument("--heartbeat-seconds", type=float, default=2.0, help="JOBPLANE_HEARTBEAT_SECONDS (2)")
    parser.add_argument("--processes", type=int, default=2, help="JOBPLANE_WORKER_PROCESSES (default 2)")
    parser.add_argument("--seed", type=int, default=20261128, help="seed of the kill offsets")
    common.add_wait_db_option(parser)
    common.add_json_option(parser, help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.set_bench_name("worker_kills")
    result = run(args)
    common.print_result(result, as_json=args.json, report=print_report)
    s = result["summary"]
    ok = (s["kills"] == args.kills and s["lost"] == s["kills"] and s["within_goal"] == s["kills"]
          and s["retries_succeeded"] == s["kills"] and s["stuck"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    common.run_main(main)
