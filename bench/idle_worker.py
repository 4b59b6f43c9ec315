"""Idle worker: the CPU an idle ``jobplane worker`` and Redis use while nothing runs.

What it measures
    ``jobplane worker`` (``--worker-processes`` x ``--worker-threads``, and the notifier it forks)
    is started on an empty queue; after ``--settle`` seconds, the CPU seconds of its process tree
    and of redis-server are read from /proc over ``--seconds``, and printed as a share of one
    core.  Dramatiq polls Redis: each idle consumer backs off to ``JOBPLANE_WORKER_POLL_MS`` (or
    ``JOBPLANE_BACKGROUND_POLL_MS`` for the bulk lane, its delay queue and notifications), and
    each idle worker thread wakes as often; that polling is what this shows.

Running it (from the repository root; services from scripts/ensure-test-services.sh)
    . ./.test-services.env && .venv/bin/python bench/idle_worker.py
    # options: --worker-poll-ms N (Jobplane's default)  --background-poll-ms N (default)
    #          --seconds S (10)  --settle S (3)  --quiet-wait S (120)  --json
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import JobplaneBench, log, wait_for_log  # noqa: E402

common.set_bench_name("idle_worker")


def cpu_seconds(worker_pid: int) -> tuple[float, float]:
    """CPU seconds so far of the worker's process tree and of redis-server."""
    table = common.proc_table()
    own, children = common.process_tree(worker_pid, table)
    redis = [pid for pid, info in table.items() if info.name.startswith("redis-server")]
    return (sum(table[pid].total_cpu_s for pid in own + children if pid in table),
            sum(table[pid].total_cpu_s for pid in redis))


def main(argv: list[str] | None = None) -> int:
    parser = common.argument_parser(__doc__)
    common.add_worker_options(parser)
    common.add_poll_ms_option(parser)
    parser.add_argument("--background-poll-ms", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=3.0)
    common.add_quiet_wait_option(parser)
    common.add_json_option(parser)
    args = parser.parse_args(argv)
    loadavg_at_start = common.loadavg()
    env = JobplaneBench()
    try:
        env.reset()
        quiet = common.wait_for_quiet(args.quiet_wait)
        processes = env.processes("idle")
        extra = {"BACKGROUND_POLL_MS": args.background_poll_ms} if args.background_poll_ms else {}
        worker, worker_log = processes.start("worker", log_name="worker", WORKER_PROCESSES=args.worker_processes,
                                             WORKER_THREADS=args.worker_threads, SANDBOX="bubblewrap",
                                             **({"WORKER_POLL_MS": args.worker_poll_ms} if args.worker_poll_ms else {}),
                                             **extra)
        wait_for_log(worker, worker_log, "ready for action", timeout=60)
        time.sleep(args.settle)
        log(f"measuring {args.seconds} s of an idle worker")
        before = cpu_seconds(worker.pid)
        time.sleep(args.seconds)
        after = cpu_seconds(worker.pid)
        processes.stop_all()
    finally:
        env.close()
    result = {
        **common.result_head("idle_worker", "CPU of an idle worker and of Redis, share of one core"),
        "worker_processes": args.worker_processes, "worker_threads": args.worker_threads,
        "worker_poll_ms": args.worker_poll_ms or "default", "background_poll_ms": args.background_poll_ms or "default",
        "worker_core_share": round((after[0] - before[0]) / args.seconds, 3),
        "redis_core_share": round((after[1] - before[1]) / args.seconds, 3),
        "busy_cores_before_start": quiet,
        **common.result_tail(loadavg_at_start),
    }

    def report(r: dict) -> None:
        common.print_report_head("Idle worker: CPU while nothing runs", r)
        common.print_load_and_code(r)
        print(f"  worker {r['worker_processes']} x {r['worker_threads']} threads, "
              f"WORKER_POLL_MS={r['worker_poll_ms']}, BACKGROUND_POLL_MS={r['background_poll_ms']}")
        print(f"  worker tree {r['worker_core_share'] * 100:.1f} % of a core, redis-server "
              f"{r['redis_core_share'] * 100:.1f} %")

    common.print_result(result, as_json=args.json, report=report)
    return 0


if __name__ == "__main__":
    common.run_main(main)
