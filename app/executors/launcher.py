"""Starting a run at an exact instant: its sandbox is spawned ahead, the job's code at its time.

A staged run's process is started early, but what runs in it until the fire time is a launcher:
``/bin/sh`` blocked reading one line from a pipe held by the worker.  At the fire time the
worker writes ``go``; the launcher then ``exec``s the job's interpreter on its script (with
``/dev/null`` as stdin, like an unstaged run), so the job's own code starts at its time and never
before.  Anything else on the pipe — the worker discarding the run, or dying (its end of the pipe
closes) — makes the launcher exit without running anything.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from datetime import datetime, timezone

from app.executors.base import OutputSink, RunResult, RunSpec, Tick
from app.executors.supervision import Supervision

#: The shell that waits; dash on Debian (~1 ms to start), exec'd away at the release.
LAUNCHER_SHELL = "/bin/sh"
#: Reads the release line; only "go" runs the job (``"$@"``: its interpreter and script).
LAUNCHER_SCRIPT = 'IFS= read -r signal && [ "$signal" = go ] && exec "$@" </dev/null; exit 125'
#: What the worker writes to release a staged run.
RELEASE = b"go\n"


def launcher_argv(argv: list[str]) -> list[str]:
    """``argv`` behind the launcher: the same command, held until released."""
    return [LAUNCHER_SHELL, "-c", LAUNCHER_SCRIPT, "jobplane-launcher", *argv]


def sleep_until(when: datetime) -> None:
    """Return at or after the wall-clock instant ``when`` (aware), never before."""
    while True:
        remaining = (when - datetime.now(timezone.utc)).total_seconds()
        if remaining <= 0:
            return
        time.sleep(remaining)


class StagedProcess:
    """A run's process, started and held by its launcher until ``release_at``.

    Parameters:
      process: the launcher's process (stdin: the release pipe; stdout, stderr: the run's).
      workdir: the run's working directory, removed when the run ends or is discarded.
      spec: the run.
      sandboxed: whether the process runs under bubblewrap.
      notices: system lines for the run's log (e.g. "no sandbox"), written at the release.
      grace: between SIGTERM and SIGKILL when the run must stop.
    """

    def __init__(self, process: subprocess.Popen, *, workdir: str, spec: RunSpec, sandboxed: bool,
                 notices: list[str], grace: float):
        self.process = process
        self.workdir = workdir
        self.spec = spec
        self.sandboxed = sandboxed
        self.notices = notices
        self.grace = grace

    def release_at(self, when: datetime, *, output: OutputSink, tick: Tick) -> RunResult:
        """Release the job's code at ``when`` (not before), then supervise it to its end."""
        try:
            for notice in self.notices:
                output("system", notice)
            sleep_until(when)
            started = datetime.now(timezone.utc)
            try:
                self.process.stdin.write(RELEASE)
                self.process.stdin.close()
            except OSError:
                pass  # the launcher is gone (its sandbox failed): Supervision reports its exit status
            return Supervision(self.process, self.spec, output, tick, self.grace, self.sandboxed, started).wait()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def discard(self) -> None:
        """Stop the launcher without running the job's code, and remove the working directory."""
        try:
            self.process.stdin.close()  # the launcher reads end-of-file and exits
        except OSError:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
