"""Starting a run at an exact instant: its sandbox is spawned ahead, the job's code at its time.

A staged run's process is started early, but what runs in it until the fire time is a launcher:
a few lines of Python (the executor's interpreter, ``-I -S``: about 9 ms to start, off the
critical path) blocked reading one line from a pipe held by the worker.  Once the worker has
claimed the run it writes ``go <fire time>``; the launcher sleeps until that instant by the
wall clock, then ``exec``s the job's interpreter on its script with ``/dev/null`` as stdin, like
an unstaged run.  So the job's own code starts at its time and never before, and the precise
wake-up is a single-threaded process's, not a busy worker's thread (which waits for its GIL).
Anything else on the pipe — the worker discarding the run, or dying (its end of the pipe closes)
— makes the launcher exit without running anything.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from datetime import datetime, timezone

from app.executors.base import OutputSink, RunResult, RunSpec, Tick, remove_workdir
from app.executors.supervision import Supervision

#: The launcher's code: ``sys.argv[1:]`` is the job's command (interpreter and script).
LAUNCHER_CODE = """import os, sys, time
line = sys.stdin.buffer.readline().split()
if len(line) != 2 or line[0] != b"go":
    os._exit(125)
at = float(line[1])
while time.time() < at:
    time.sleep(at - time.time())
null = os.open("/dev/null", os.O_RDONLY)
os.dup2(null, 0)
os.close(null)
os.execvp(sys.argv[1], sys.argv[1:])
"""


def launcher_argv(python: str, argv: list[str]) -> list[str]:
    """``argv`` behind the launcher run by ``python``: the same command, held until released."""
    return [python, "-I", "-S", "-c", LAUNCHER_CODE, *argv]


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
      workdir: the run's working directory on this machine (None: it has one only in its
        sandbox), removed when the run ends or is discarded.
      spec: the run.
      sandboxed: whether the process runs under bubblewrap.
      notices: system lines for the run's log (e.g. "no sandbox"), written at the release.
      grace: between SIGTERM and SIGKILL when the run must stop.
    """

    def __init__(self, process: subprocess.Popen, *, workdir: str | None, spec: RunSpec, sandboxed: bool,
                 notices: list[str], grace: float):
        self.process = process
        self.workdir = workdir
        self.spec = spec
        self.sandboxed = sandboxed
        self.notices = notices
        self.grace = grace
        self.started: datetime | None = None

    def release(self, when: datetime) -> datetime:
        """Tell the launcher to start the job's code at ``when`` (at once if that has passed).
        Called once the run is claimed, shortly before ``when``.

        Returns:
          when the job's code starts: ``when``, or now if this comes late.
        """
        now = datetime.now(timezone.utc)
        self.started = max(now, when)
        # The timeout counts from the job's start, not from the release.
        self.spec = dataclasses.replace(self.spec, timeout_seconds=self.spec.timeout_seconds
                                        + (self.started - now).total_seconds())
        try:
            self.process.stdin.write(b"go %.6f\n" % when.timestamp())
            self.process.stdin.close()
        except OSError:
            pass  # the launcher is gone (its sandbox failed): Supervision reports its exit status
        return self.started

    def supervise(self, *, output: OutputSink, tick: Tick) -> RunResult:
        """Supervise the released run to its end."""
        try:
            for notice in self.notices:
                output("system", notice)
            return Supervision(self.process, self.spec, output, tick, self.grace, self.sandboxed,
                               self.started).wait()
        finally:
            remove_workdir(self.workdir)

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
        remove_workdir(self.workdir)
