"""Resource limits of a run, applied by wrapping its command (no ``preexec_fn``: it is unsafe in
a threaded worker).

``taskset`` pins the run to its share of CPUs; ``prlimit`` sets its address space (memory), CPU
time, open files and processes.  Both exec the next command, so the run keeps one pid and one
process group.  (``RLIMIT_NPROC`` does not bind root, and address space is a coarse stand-in for
memory: cgroups would be exact, and are what the Kubernetes executor uses.)
"""

from __future__ import annotations

import os
import shutil
import zlib

from app.executors.base import ResourceLimits


def wrap(command: list[str], limits: ResourceLimits, *, execution_id: str) -> list[str]:
    prefix: list[str] = []
    cpus = _cpu_list(limits.cpus, execution_id)
    if cpus and shutil.which("taskset"):
        prefix += ["taskset", "--cpu-list", cpus]
    if shutil.which("prlimit"):
        prefix += ["prlimit", f"--as={limits.memory_mb * 1024 * 1024}", f"--nofile={limits.open_files}",
                   f"--nproc={limits.processes}"]
        if limits.cpu_time_seconds:
            prefix.append(f"--cpu={limits.cpu_time_seconds}")
        prefix.append("--")
    return prefix + command


def _cpu_list(count: int, execution_id: str) -> str | None:
    """A contiguous block of ``count`` CPUs, spread over the machine by the execution id."""
    available = sorted(os.sched_getaffinity(0))
    if count >= len(available):
        return None
    start = zlib.crc32(execution_id.encode()) % len(available)
    chosen = [available[(start + i) % len(available)] for i in range(count)]
    return ",".join(str(cpu) for cpu in chosen)
