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
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL:
            process.wait(timeout=10)

    def kill_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                self.kill(process, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for _, log in self.started)
