"""Resource limits of a run (no ``preexec_fn``: it is unsafe in a threaded worker, and it would
make every spawn a full ``fork`` of the worker instead of a ``vfork``).

``prlimit`` sets the run's address space (memory), CPU time, open files and processes, and execs
the next command, so the run keeps one pid and one process group.  (``RLIMIT_NPROC`` does not
bind root, and address space is a coarse stand-in for memory: cgroups would be exact, and are
what the Kubernetes executor uses.)

CPUs: the run is pinned to its share of the machine's CPUs.  Linux keeps a CPU affinity per
thread and a new process inherits its creator thread's, so ``spawn`` pins the spawning thread for
the moment of the spawn (to a block that starts at the CPU it runs on: see ``cpu_set``) and
restores it at once: the run starts pinned, with no extra program (``taskset`` cost each run an
exec, about 1 CPU-ms, measured in bench/burst.py), and the worker's other threads are never
affected.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import zlib
from contextlib import contextmanager
from typing import Iterator

from app.executors.base import ResourceLimits


def wrap(command: list[str], limits: ResourceLimits) -> list[str]:
    """``command`` behind ``prlimit`` with the run's limits (as it is when prlimit is missing)."""
    if not _PRLIMIT:
        return command
    prefix = [_PRLIMIT, f"--as={limits.memory_mb * 1024 * 1024}", f"--nofile={limits.open_files}",
              f"--nproc={limits.processes}"]
    if limits.cpu_time_seconds:
        prefix.append(f"--cpu={limits.cpu_time_seconds}")
    return prefix + ["--"] + command


def spawn(command: list[str], limits: ResourceLimits, *, execution_id: str, **popen: object) -> subprocess.Popen:
    """``subprocess.Popen(command, **popen)``, the process pinned to the run's CPUs from its start."""
    with pinned(cpu_set(limits.cpus, execution_id)):
        return subprocess.Popen(command, **popen)


def cpu_set(count: int, execution_id: str) -> set[int] | None:
    """A contiguous block of ``count`` CPUs (None: the run may use every CPU this worker may),
    starting at the CPU the calling thread runs on, so that pinning the thread to it moves
    nothing: moving a thread to a busy CPU waits for that CPU, and ``os.sched_setaffinity`` holds
    the GIL meanwhile (a third of a burst's worker time, py-spy).  Runs spread over the machine
    as the threads that spawn them do; by the execution id where the CPU cannot be read."""
    available = sorted(os.sched_getaffinity(0))
    if count >= len(available):
        return None
    current = _current_cpu()
    start = (available.index(current) if current in available
             else zlib.crc32(execution_id.encode()) % len(available))
    return {available[(start + i) % len(available)] for i in range(count)}


def _current_cpu() -> int | None:
    """The CPU the calling thread runs on (None, or -1, when it cannot be read)."""
    return _SCHED_GETCPU() if _SCHED_GETCPU is not None else None


@contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Pin the calling thread (only it: pid 0 is the calling thread) to ``cpus`` meanwhile."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    _set_affinity(cpus)
    try:
        yield
    finally:
        _set_affinity(before)


def _set_affinity(cpus: set[int]) -> None:
    """``os.sched_setaffinity(0, cpus)``, but with the GIL released.  Pinning waits until the thread
    runs on one of ``cpus``: on a machine busy with a burst's sandboxes that took 0.7 ms a spawn,
    and ``os.sched_setaffinity`` waits holding the GIL, so the worker's other threads waited too
    (a quarter of a burst's GIL time, py-spy)."""
    if _SCHED_SETAFFINITY is None or max(cpus) >= _MASK_BITS:
        os.sched_setaffinity(0, cpus)
        return
    mask = (ctypes.c_ulong * (_MASK_BITS // _WORD_BITS))()
    for cpu in cpus:
        mask[cpu // _WORD_BITS] |= 1 << (cpu % _WORD_BITS)
    if _SCHED_SETAFFINITY(0, ctypes.sizeof(mask), mask) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


_PRLIMIT = shutil.which("prlimit")


def _load_sched_getcpu():
    # PyDLL: called with the GIL held.  A CDLL call releases the GIL and takes it back, and the
    # thread, woken on whichever CPU is free, was then often no longer on the CPU it had read: the
    # pinning that follows moved it back, waiting for that busy CPU while holding the GIL.
    try:
        function = ctypes.PyDLL(None, use_errno=True).sched_getcpu
    except (AttributeError, OSError):  # not glibc/musl: fall back to the execution id
        return None
    function.restype, function.argtypes = ctypes.c_int, []
    return function


_SCHED_GETCPU = _load_sched_getcpu()

#: glibc's cpu_set_t: 1,024 CPUs, in unsigned longs.
_MASK_BITS = 1024
_WORD_BITS = ctypes.sizeof(ctypes.c_ulong) * 8


def _load_sched_setaffinity():
    try:
        function = ctypes.CDLL(None, use_errno=True).sched_setaffinity  # CDLL: the GIL is released
    except (AttributeError, OSError):
        return None
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p]
    return function


_SCHED_SETAFFINITY = _load_sched_setaffinity()
