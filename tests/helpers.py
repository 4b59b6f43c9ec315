"""Running real Jobplane processes in tests, and waiting for things to happen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

#: The console script installed in this virtualenv.
JOBPLANE = str(Path(sys.executable).with_name("jobplane"))


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1,
             message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def processes_with(marker: str) -> list[int]:
    """Pids of the processes on this machine whose command line or environment contains
    ``marker`` (a run's processes have its execution id in their environment:
    ``JOBPLANE_EXECUTION_ID``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            for part in ("cmdline", "environ"):
                try:
                    with open(f"/proc/{entry}/{part}", "rb") as handle:
                        if marker.encode() in handle.read():
                            found.append(int(entry))
                            break
                except OSError:
                    pass
    return found


def process_env(settings: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The environment of a Jobplane process: this one's, minus JOBPLANE_*, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPLANE_")}
    for key, value in {**settings, **(extra or {})}.items():
        env[f"JOBPLANE_{key}"] = str(value)
    return env


class ProcessGroup:
    """Real ``jobplane`` processes started by a test, each logging to its own file."""

    def __init__(self, settings: dict[str, Any], log_dir: Path):
        self.settings = settings
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, *args: str, cwd: str | None = None, **extra: Any) -> subprocess.Popen:
        log = self.log_dir / f"{'-'.join(args)}-{len(self.started)}.log"
        handle = open(log, "wb")
        process = subprocess.Popen([JOBPLANE, *args], env=process_env(self.settings, extra), cwd=cwd,
                                   stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        process.log_path = log  # type: ignore[attr-defined]
        self.started.append((process, log))
        return process

    def scheduler(self, **extra: Any) -> subprocess.Popen:
        return self.start("scheduler", **extra)

    def worker(self, **extra: Any) -> subprocess.Popen:
        extra.setdefault("WORKER_PROCESSES", 1)
        extra.setdefault("WORKER_THREADS", 4)
        return self.start("worker", **extra)

    @staticmethod
    def log(process: subprocess.Popen) -> str:
        return Path(process.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    @staticmethod
    def kill(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal the process, its group and every descendant (Dramatiq's worker processes
        put themselves in process groups of their own)."""
        family = [process.pid, *_descendants(process.pid)]
        for target in family:
            try:
                os.killpg(target, sig) if target == process.pid else os.kill(target, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == signal.SIGKILL:
            process.wait(timeout=10)

    def kill_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                self.kill(process, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for _, log in self.started)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    parent = int(handle.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
