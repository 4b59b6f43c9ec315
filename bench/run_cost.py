"""Run cost: the worker's own CPU per run of a trivial job, and where it goes.

What it measures
    ``--runs`` (default 300) executions of one bash job whose script is ``true``, each run in
    process exactly as the worker runs it (``runs.run_execution`` inside an app context, then
    the per-message commit; sandboxed by bubblewrap), one after the other on one thread.  For
    each run: this thread's CPU time (``time.thread_time``: Jobplane's Python, the SQL and Redis
    client work, the spawn; not the sandbox's own CPU, not PostgreSQL's), and per run the SQL
    statements sent and the pool checkouts (each one a pre-ping round trip and a transaction).
    Then ``--profile-runs`` (default 60) more under cProfile (with the thread's CPU clock) give
    each part's share of a run, turned into ms with the median above.  The parts overlap a
    little: a pool checkout happens inside the first statement of the claim and of the finish.
    Dramatiq's own per-message cost (fetch, ack, middleware) is not in it: bench/burst.py counts
    the whole worker.

    ``--group N``: the same runs as group messages of N executions (``group_runs``: one claim
    statement, one supervision loop, batched outcomes); the CPU of each group is divided by N.
    No profile then (``--profile-runs`` is ignored).

How it runs
    Database ``jobplane_bench`` reset (waits until no other client uses it), one job created
    through the API, ``--warmup`` (20) runs not counted.

Running it (from the repository root; services from scripts/ensure-test-services.sh)
    . ./.test-services.env && .venv/bin/python bench/run_cost.py
    # options: --runs N (300)  --profile-runs N (60)  --warmup N (20)  --group N  --json
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import ADMIN_HEADERS, JobplaneBench, log  # noqa: E402
from sqlalchemy import event  # noqa: E402

common.set_bench_name("run_cost")

#: (label, file name ending, function name) of each part of a run the profile reports.
PARTS = [("claim (claims.claim_execution)", "claims.py", "claim_execution"),
         ("secret names (secrets.names_for_run)", "secrets.py", "names_for_run"),
         ("secrets read (secrets.values_for_run)", "secrets.py", "values_for_run"),
         ("executor: workdir, sandbox command, spawn, supervision", "local.py", "run"),
         ("  of which the spawn (Popen)", "subprocess.py", "__init__"),
         ("  of which supervision (Supervision.wait)", "supervision.py", "wait"),
         ("log flush (LogWriter.flush)", "runs.py", "flush"),
         ("finish (claims.finish_execution)", "claims.py", "finish_execution"),
         ("  of which notifications (record_outcome)", "notifications.py", "record_outcome"),
         ("live publish, running + final status", "live.py", "publish"),
         ("commits (Session.commit)", "session.py", "commit"),
         ("pool checkouts with pre-ping", "base.py", "_checkout"),
         ("metrics and log context (run_started)", "__init__.py", "run_started")]


def queue_runs(env: JobplaneBench, job_id: str, count: int) -> list:
    from app.extensions import db
    from app.models import Execution
    from app.models.base import utcnow

    with env.app.app_context(), db.unit_of_work():
        rows = [Execution(job_id=job_id, scheduled_for=utcnow(), created_at=utcnow(), sent_at=utcnow(),
                          status="queued", triggered_by="manual") for _ in range(count)]
        db.session.add_all(rows)
        db.session.flush()
        return [row.id for row in rows]


def run_one(app, execution_id, profile: cProfile.Profile | None = None) -> float:
    """One run as the worker does it (app context, run, the per-message commit); its thread CPU s."""
    from app.executors import executor_for
    from app.extensions import db
    from app.services import runs

    context = app.app_context()
    context.push()
    try:
        started = time.thread_time()
        if profile:
            profile.enable()
        status = runs.run_execution(execution_id=execution_id,
                                     executor_for=lambda name: executor_for(app.config, name))
        db.session.commit()
        if profile:
            profile.disable()
        spent = time.thread_time() - started
    finally:
        context.pop()
    if status != "success":
        raise RuntimeError(f"execution {execution_id} ended {status}")
    return spent


def run_group(app, execution_ids) -> float:
    """One group message's runs as the worker does them; this thread's CPU s per run."""
    from app.executors import executor_for
    from app.extensions import db
    from app.services import group_runs

    context = app.app_context()
    context.push()
    try:
        started = time.thread_time()
        outcomes = group_runs.run_execution_group(execution_ids=[str(i) for i in execution_ids],
                                                  executor_for=lambda name: executor_for(app.config, name))
        db.session.commit()
        spent = time.thread_time() - started
    finally:
        context.pop()
    failed = {key: value for key, value in outcomes.items() if value != "success"}
    if failed or len(outcomes) != len(execution_ids):
        raise RuntimeError(f"group ended with {failed or outcomes}")
    return spent / len(execution_ids)


def breakdown(profile: cProfile.Profile, median_ms: float) -> list[dict]:
    stats = pstats.Stats(profile).stats
    whole = sum(v[3] for k, v in stats.items() if k[0].endswith("runs.py") and k[2] == "run_execution")
    parts = []
    for label, file_end, function in PARTS:
        spent = sum(v[3] for k, v in stats.items() if k[0].endswith(file_end) and k[2] == function)
        parts.append({"part": label, "share_pct": round(100 * spent / whole, 1),
                      "ms": round(median_ms * spent / whole, 2)})
    return parts


def measure(args) -> dict:
    env = JobplaneBench(name="runcost", SANDBOX="bubblewrap")
    try:
        env.reset()
        response = env.app.test_client().post("/api/v1/jobs", headers=ADMIN_HEADERS, json={
            "name": "run-cost", "job_type": "bash", "script": "true", "schedule": None})
        if response.status_code != 201:
            raise RuntimeError(f"creating the job: HTTP {response.status_code} {response.get_data(True)}")
        job_id = response.json["id"]
        ids = queue_runs(env, job_id, args.warmup + args.runs + (0 if args.group else args.profile_runs))
        counts = {"statements": 0, "checkouts": 0}
        engine = env.app.extensions["jobplane_db"].engine
        for event_name, key in (("before_cursor_execute", "statements"), ("checkout", "checkouts")):
            event.listen(engine, event_name, lambda *_, key=key: counts.__setitem__(key, counts[key] + 1))
        log(f"{args.warmup} warm-up runs, {args.runs} measured, {args.profile_runs} profiled")
        for execution_id in ids[:args.warmup]:
            run_one(env.app, execution_id)
        counts.update(statements=0, checkouts=0)
        measured = ids[args.warmup:args.warmup + args.runs]
        if args.group:
            groups = [measured[start:start + args.group] for start in range(0, len(measured), args.group)]
            cpu_ms = [1000 * run_group(env.app, group) for group in groups]
            per_run = {key: round(value / args.runs, 2) for key, value in counts.items()}
            return {"cpu_per_run": common.summary(cpu_ms), "per_run": per_run, "parts": []}
        cpu_ms = [1000 * run_one(env.app, execution_id) for execution_id in measured]
        per_run = {key: round(value / args.runs, 2) for key, value in counts.items()}
        profile = cProfile.Profile(time.thread_time)
        for execution_id in ids[args.warmup + args.runs:]:
            run_one(env.app, execution_id, profile)
        cpu = common.summary(cpu_ms)
        return {"cpu_per_run": cpu, "per_run": per_run, "parts": breakdown(profile, cpu["p50_ms"])}
    finally:
        env.close()


def print_report(result: dict) -> None:
    common.print_report_head("Run cost: the worker's own CPU per run of `true`", result)
    cpu, per_run = result["cpu_per_run"], result["per_run"]
    if result.get("group"):
        print(f"  in groups of {result['group']} (each figure: one group's CPU / its runs)")
    print(f"  worker thread CPU per run: p50 {cpu['p50_ms']} ms  p95 {cpu['p95_ms']}  p99 {cpu['p99_ms']}  "
          f"mean {cpu['mean_ms']} (n={cpu['n']})")
    print(f"  per run: {per_run['statements']} SQL statements, {per_run['checkouts']} pool checkouts (transactions)")
    if result["parts"]:
        print("  where it goes (cProfile shares x the p50):")
    for part in result["parts"]:
        print(f"    {part['part']:56s} {part['share_pct']:5.1f} %  {part['ms']:5.2f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--profile-runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--group", type=int, default=0,
                        help="run the measured runs as group messages of this many executions")
    common.add_json_option(parser)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.profile_runs < 1 or args.warmup < 0 or args.group < 0:
        parser.error("--runs and --profile-runs must be at least 1, --warmup and --group at least 0")
    loadavg_at_start = common.loadavg()
    measured = measure(args)
    result = {**common.result_head("run_cost", "worker thread CPU per in-process run of a `true` bash job"),
              "runs": args.runs, "profile_runs": args.profile_runs, "warmup": args.warmup, "group": args.group,
              **measured,
              **common.result_tail(loadavg_at_start)}
    common.print_result(result, as_json=args.json, report=print_report)
    return 0


if __name__ == "__main__":
    common.run_main(main)
