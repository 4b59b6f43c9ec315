"""The local executor: a run is a process group on this machine, sandboxed when possible.

Output of stdout and stderr is read as it comes and handed to the caller with its stream;
the timeout is enforced here (SIGTERM to the run, a grace period, SIGKILL of the whole group),
never by Dramatiq, whose time limit cannot interrupt a blocking call.
"""

from __future__ import annotations

import codecs
import logging
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import datetime, timezone

from app.executors import sandbox
from app.executors.base import OutputSink, RunResult, RunSpec, Tick

logger = logging.getLogger(__name__)

#: Script file names in the working directory, by job type.
SCRIPT_FILES = {"python": "script.py", "bash": "script.sh"}
#: Longest wait in the read loop, so ticks (log flushes, heartbeats) stay frequent.
_POLL_SECONDS = 0.05
#: After the main process exits, how long to wait for stragglers to close their pipes.
_DRAIN_SECONDS = 1.0


class LocalExecutor:
    """Runs scripts as local processes.

    Parameters:
      python, bash: interpreter binaries.
      sandbox: ``auto`` (bubblewrap when installed), ``bubblewrap`` (required) or ``none``.
      run_dir: parent of the per-run working directories (default: the system temp dir).
      kill_grace_seconds: between SIGTERM and SIGKILL when a run must stop.
    """

    def __init__(self, *, python: str, bash: str, sandbox: str = "auto", run_dir: str | None = None,
                 kill_grace_seconds: float = 10.0):
        self.python = python
        self.bash = bash
        self.sandbox_mode = sandbox
        self.run_dir = run_dir
        self.kill_grace_seconds = kill_grace_seconds

    @property
    def sandboxed(self) -> bool:
        if self.sandbox_mode == "none":
            return False
        if self.sandbox_mode == "bubblewrap":
            return True  # wrap() raises a clear error when it is missing
        return sandbox.bubblewrap() is not None

    def run(self, spec: RunSpec, *, output: OutputSink, tick: Tick) -> RunResult:
        """Run ``spec`` to its end, its timeout, or until ``tick`` says stop."""
        if self.run_dir:
            os.makedirs(self.run_dir, exist_ok=True)
        workdir = tempfile.mkdtemp(prefix=f"run-{spec.execution_id}-", dir=self.run_dir)
        try:
            return self._run_in(workdir, spec, output, tick)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _run_in(self, workdir: str, spec: RunSpec, output: OutputSink, tick: Tick) -> RunResult:
        script_name = SCRIPT_FILES[spec.job_type]
        with open(os.path.join(workdir, script_name), "w", encoding="utf-8") as handle:
            handle.write(spec.script)
        interpreter = [self.python, "-u"] if spec.job_type == "python" else [self.bash]
        sandboxed = self.sandboxed
        if sandboxed:
            home = sandbox.SANDBOX_WORKDIR
            command = sandbox.wrap(interpreter + [script_name], workdir=workdir,
                                   extra_read_only=_outside_usr(self.python, self.bash))
        else:
            home = workdir
            command = interpreter + [script_name]
            output("system", "[jobplane] WARNING: running without a sandbox (bubblewrap is not "
                             "installed or JOBPLANE_SANDBOX=none); the script can see this machine.\n")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
               "PYTHONUNBUFFERED": "1", **spec.env}
        started = datetime.now(timezone.utc)
        try:
            process = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       start_new_session=True, close_fds=True)
        except OSError as exc:
            return RunResult("failed", None, f"could not start the script: {exc}", None,
                             datetime.now(timezone.utc), sandboxed)
        return _Supervision(process, spec, output, tick, self.kill_grace_seconds, sandboxed, started).wait()


class _Supervision:
    """Reads a run's output and enforces its deadline until every process of it is gone."""

    def __init__(self, process: subprocess.Popen, spec: RunSpec, output: OutputSink, tick: Tick,
                 grace: float, sandboxed: bool, started: datetime):
        self.process = process
        self.output = output
        self.tick = tick
        self.grace = grace
        self.sandboxed = sandboxed
        self.started = started
        self.deadline = time.monotonic() + spec.timeout_seconds
        self.timeout_seconds = spec.timeout_seconds
        self.reason: str | None = None  # "timed_out" or "cancelled" once we decided to stop it
        self.kill_at: float | None = None
        self.decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace")
                         for name in ("stdout", "stderr")}

    def wait(self) -> RunResult:
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ, "stdout")
        selector.register(self.process.stderr, selectors.EVENT_READ, "stderr")
        exited_at: float | None = None
        while selector.get_map():
            for key, _ in selector.select(_POLL_SECONDS):
                data = os.read(key.fd, 65536)
                if data:
                    self._emit(key.data, data)
                else:
                    selector.unregister(key.fileobj)
            if exited_at is None and self.process.poll() is not None:
                exited_at = time.monotonic()
                # The main process is done: whatever it left behind goes with it.
                self._signal_group(signal.SIGKILL)
            if exited_at is not None and time.monotonic() - exited_at > _DRAIN_SECONDS:
                break
            self._enforce()
        selector.close()
        self.process.stdout.close()
        self.process.stderr.close()
        returncode = self.process.wait()
        self._signal_group(signal.SIGKILL)
        for stream, decoder in self.decoders.items():
            rest = decoder.decode(b"", final=True)
            if rest:
                self.output(stream, rest)
        return self._result(returncode)

    def _emit(self, stream: str, data: bytes) -> None:
        text = self.decoders[stream].decode(data)
        if text:
            self.output(stream, text)

    def _enforce(self) -> None:
        now = time.monotonic()
        if self.reason is None:
            if now >= self.deadline:
                self._stop("timed_out")
            elif not self.tick():
                self._stop("cancelled")
        else:
            self.tick()
            if self.kill_at is not None and now >= self.kill_at:
                self._signal_group(signal.SIGKILL)
                self.kill_at = None

    def _stop(self, reason: str) -> None:
        self.reason = reason
        self.output("system", f"\n[jobplane] {'timeout reached' if reason == 'timed_out' else 'run cancelled'}: "
                              f"SIGTERM, then SIGKILL after {self.grace:g} s\n")
        self._signal_run(signal.SIGTERM)
        self.kill_at = time.monotonic() + self.grace

    def _signal_run(self, sig: int) -> None:
        """Signal the script's processes; under bubblewrap, not the sandbox's own processes, whose
        death would SIGKILL the script at once and skip its grace period."""
        if not self.sandboxed:
            self._signal_group(sig)
            return
        for pid in _group_members(self.process.pid):
            if _command_name(pid) != "bwrap":
                _kill(pid, sig)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _result(self, returncode: int) -> RunResult:
        completed = datetime.now(timezone.utc)
        exit_code = returncode if returncode >= 0 else 128 - returncode
        if self.reason == "timed_out":
            return RunResult("timed_out", exit_code,
                             f"timed out after {self.timeout_seconds:g} s", self.started, completed, self.sandboxed)
        if self.reason == "cancelled":
            return RunResult("cancelled", exit_code, "run stopped: its claim was revoked or it was cancelled",
                             self.started, completed, self.sandboxed)
        if exit_code == 0:
            return RunResult("success", 0, None, self.started, completed, self.sandboxed)
        return RunResult("failed", exit_code, f"exited with code {exit_code}", self.started, completed,
                         self.sandboxed)


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def _command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _outside_usr(*binaries: str) -> tuple[str, ...]:
    """Install prefixes of interpreters that live outside /usr, to bind them into the sandbox."""
    prefixes = []
    for binary in binaries:
        real = os.path.realpath(binary)
        if not real.startswith("/usr/"):
            prefixes.append(os.path.dirname(os.path.dirname(real)))
    return tuple(prefixes)
