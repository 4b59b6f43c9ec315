"""Run working directory: what giving each run its own /work costs, by where it lives.

What it measures
    ``--count`` (default 1,500) of the processes Jobplane's executor starts for a bash job whose
    script is ``true`` (``prlimit <the job's default limits> -- bwrap ... bash script.sh``, pinned
    as the executor pins it), spawned by ``--threads`` (default 8) threads, each waiting for its
    process before the next, with /work:

      shared    one directory of the machine's for every run (no per-run cost: the floor);
      tmpfs     a tmpfs of the sandbox, the script copied in by bubblewrap from a memfd
                (the executor's default for a sandboxed run of an inline script);
      disk      a directory per run in ``--disk-dir`` (default: the system temp dir, ext4 here),
                created, filled with the script, bound at /work and removed, as the executor
                does when JOBPLANE_RUN_DIR is set (or before the tmpfs default);
      shm       the same in /dev/shm (a tmpfs of the machine).

    Printed per variant: wall time, this process's CPU per run (the spawning side: what a
    worker pays) and its children's (the sandboxes).  Variants run ``--repeat`` (default 3)
    times, interleaved, and the medians are printed: one round moves by about 10 % here.

    No database, Redis or Jobplane process is involved.

Running it (from the repository root; needs bubblewrap and prlimit)
    .venv/bin/python bench/run_workdir.py
    # options: --count N (1500)  --threads N (8)  --repeat N (3)  --disk-dir DIR
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
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app.executors import limits as run_limits  # noqa: E402
from app.executors import sandbox  # noqa: E402
from app.executors.base import ResourceLimits  # noqa: E402
from app.executors.local import _outside_usr  # noqa: E402

BASH = shutil.which("bash")
SCRIPT = b"true\n"
LIMITS = ResourceLimits()  # a job's defaults
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": sandbox.SANDBOX_WORKDIR, "LANG": "C.UTF-8"}
EXTRA_READ_ONLY = _outside_usr(os.path.realpath(sys.executable), BASH)


def spawn_one(variant: str, n: int, *, shared: str, dirs: dict[str, str]) -> None:
    script_fd, workdir = None, None
    if variant == "shared":
        argv = sandbox.wrap([BASH, "script.sh"], workdir=shared, extra_read_only=EXTRA_READ_ONLY)
    elif variant == "tmpfs":
        script_fd = os.memfd_create("script.sh")
        os.pwrite(script_fd, SCRIPT, 0)
        argv = sandbox.wrap([BASH, "script.sh"], workdir=None, files={"script.sh": script_fd},
                            extra_read_only=EXTRA_READ_ONLY)
    else:
        workdir = tempfile.mkdtemp(prefix=f"run-{n}-", dir=dirs[variant])
        with open(os.path.join(workdir, "script.sh"), "wb") as handle:
            handle.write(SCRIPT)
        argv = sandbox.wrap([BASH, "script.sh"], workdir=workdir, extra_read_only=EXTRA_READ_ONLY)
    argv = run_limits.wrap(argv, LIMITS)
    try:
        with run_limits.pinned(run_limits.cpu_set(LIMITS.cpus, str(n))):
            process = subprocess.Popen(argv, env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
                                       pass_fds=() if script_fd is None else (script_fd,))
    finally:
        if script_fd is not None:
            os.close(script_fd)
    process.communicate()
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
    if process.returncode != 0:
        raise RuntimeError(f"{variant}: the sandbox failed ({process.returncode})")


def cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def one_round(variant: str, args, **where) -> tuple[float, float, float]:
    before, start = cpu(), time.time()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        list(pool.map(lambda n: spawn_one(variant, n, **where), range(args.count)))
    wall, after = time.time() - start, cpu()
    return wall, 1000 * (after[0] - before[0]) / args.count, 1000 * (after[1] - before[1]) / args.count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--disk-dir", default=tempfile.gettempdir())
    args = parser.parse_args(argv)
    variants = ("shared", "tmpfs", "disk", "shm")
    shared = tempfile.mkdtemp(prefix="jobplane-bench-workdir-")
    with open(os.path.join(shared, "script.sh"), "wb") as handle:
        handle.write(SCRIPT)
    dirs = {"disk": tempfile.mkdtemp(prefix="jobplane-bench-disk-", dir=args.disk_dir),
            "shm": tempfile.mkdtemp(prefix="jobplane-bench-shm-", dir="/dev/shm")}
    results: dict[str, list[tuple[float, float, float]]] = {variant: [] for variant in variants}
    try:
        for _ in range(args.repeat):
            for variant in variants:
                results[variant].append(one_round(variant, args, shared=shared, dirs=dirs))
    finally:
        for path in (shared, *dirs.values()):
            shutil.rmtree(path, ignore_errors=True)
    print(f"Run working directory: {args.count} sandboxed `true` runs, {args.threads} threads, "
          f"medians of {args.repeat} interleaved rounds (disk: {args.disk_dir})")
    floor = statistics.median(own for _, own, _ in results["shared"])
    for variant in variants:
        wall, own, children = (statistics.median(values) for values in zip(*results[variant]))
        print(f"  {variant:7s} all done {wall:6.2f} s   spawning side {own:.2f} ms/run "
              f"(+{own - floor:.2f} over shared)   sandboxes {children:.2f} ms/run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
