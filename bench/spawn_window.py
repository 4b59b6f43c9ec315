"""Spawn window: how many sandboxes starting at once make a burst of them fastest.

What it measures
    ``--count`` (default 3,000) of the processes Jobplane's executor starts for a bash job whose
    script is ``true`` (``prlimit <the job's default limits> -- bwrap ... bash script.sh``, pinned
    as the executor pins it), spawned by ``--threads`` (default 4) threads in three ways:

      seq     each thread spawns one, waits for it, spawns the next (bench/burst.py's direct
              baseline; run with 8 threads there);
      all     each thread takes batches of ``--batch`` (50, a group message) and spawns the
              whole batch before waiting for any (group runs before JOBPLANE_RUN_GROUP_WINDOW);
      window  each thread takes batches of ``--batch`` but keeps at most ``--window`` (default
              2) of them alive at once (group runs with JOBPLANE_RUN_GROUP_WINDOW).

    ``all`` and ``window`` give each run its own working directory and script file, as the
    executor does; ``seq`` shares one (as burst.py's baseline).  Printed: the time until the
    last spawn, and this process's CPU and its children's per run.  Each mode runs
    ``--repeat`` (default 3) times, interleaved, and the medians are printed: one run of a few
    seconds moves by 10-15 % on this machine.

    No database, Redis or Jobplane process is involved: it measures only what sandboxes starting
    at the same time cost each other (CPUs, and the kernel's mount and namespace locks).

Running it (from the repository root; needs bubblewrap and prlimit)
    .venv/bin/python bench/spawn_window.py
    # options: --count N (3000)  --threads N (4)  --batch N (50)  --window N (2)  --repeat N (3)
    #          --modes seq,all,window  --seq-threads N (8)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app.executors import limits as run_limits  # noqa: E402
from app.executors import sandbox  # noqa: E402
from app.executors.base import ResourceLimits  # noqa: E402
from app.executors.local import _outside_usr  # noqa: E402

BASH = shutil.which("bash")
LIMITS = ResourceLimits()  # a job's defaults
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": sandbox.SANDBOX_WORKDIR, "LANG": "C.UTF-8"}


class Spawner:
    def __init__(self, *, own_workdirs: bool):
        self.own_workdirs = own_workdirs
        self.shared = tempfile.mkdtemp(prefix="jobplane-bench-spawn-")
        with open(os.path.join(self.shared, "script.sh"), "w") as handle:
            handle.write("true\n")
        self.extra = _outside_usr(os.path.realpath(sys.executable), BASH)
        self.spawn_times: list[float] = []
        self.failures = 0
        self.lock = threading.Lock()

    def spawn(self, n: int):
        workdir = self.shared
        if self.own_workdirs:
            workdir = tempfile.mkdtemp(prefix=f"run-{n}-")
            with open(os.path.join(workdir, "script.sh"), "w") as handle:
                handle.write("true\n")
        argv = run_limits.wrap(sandbox.wrap([BASH, "script.sh"], workdir=workdir, extra_read_only=self.extra),
                               LIMITS)
        spawned = time.time()
        process = run_limits.spawn(argv, LIMITS, execution_id=str(n), cwd=workdir, env=ENV,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True, close_fds=True)
        with self.lock:
            self.spawn_times.append(spawned)
        return process, workdir

    def finish(self, started) -> None:
        process, workdir = started
        process.communicate()
        if process.returncode != 0:
            with self.lock:
                self.failures += 1
        if workdir != self.shared:
            shutil.rmtree(workdir, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.shared, ignore_errors=True)


def run(mode: str, args: argparse.Namespace) -> dict:
    spawner = Spawner(own_workdirs=mode != "seq")

    def one(n: int) -> None:
        spawner.finish(spawner.spawn(n))

    def batch(first: int) -> None:
        numbers = range(first, min(first + args.batch, args.count))
        if mode == "all":
            started = [spawner.spawn(n) for n in numbers]
            for item in started:
                spawner.finish(item)
            return
        alive = []
        for n in numbers:
            if len(alive) >= args.window:
                spawner.finish(alive.pop(0))
            alive.append(spawner.spawn(n))
        for item in alive:
            spawner.finish(item)

    threads = args.seq_threads if mode == "seq" else args.threads
    before_self, before_children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    try:
        with ThreadPoolExecutor(threads) as pool:
            if mode == "seq":
                list(pool.map(one, range(args.count)))
            else:
                list(pool.map(batch, range(0, args.count, args.batch)))
    finally:
        spawner.close()
    after_self, after_children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)

    def cpu(after, before) -> float:
        return (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000 / args.count

    return {"mode": mode, "threads": threads, "all_started_s": max(spawner.spawn_times) - start,
            "self_ms_per_run": cpu(after_self, before_self),
            "children_ms_per_run": cpu(after_children, before_children), "failures": spawner.failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seq-threads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default="seq,all,window")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    for round_ in range(args.repeat):
        for mode in modes:
            result = run(mode, args)
            results[mode].append(result)
            print(f"round {round_ + 1} {mode:6} ({result['threads']} threads): all started after "
                  f"{result['all_started_s']:.2f} s; CPU per run: this process {result['self_ms_per_run']:.2f} ms, "
                  f"children {result['children_ms_per_run']:.2f} ms; failures {result['failures']}", flush=True)
    print(f"\n{args.count} sandboxed `true`s; batches of {args.batch}, window {args.window}; medians of {args.repeat}:")
    baseline = statistics.median(r["all_started_s"] for r in results[modes[0]])
    for mode in modes:
        median = statistics.median(r["all_started_s"] for r in results[mode])
        print(f"  {mode:6} all started after {median:.2f} s  (x{median / baseline:.2f} of {modes[0]}), children "
              f"{statistics.median(r['children_ms_per_run'] for r in results[mode]):.2f} ms/run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
