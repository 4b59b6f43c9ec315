"""Supervising a started run: reading its output, enforcing its deadline, stopping it, and
making sure no process of it outlives it."""

from __future__ import annotations

import codecs
import os
import selectors
import signal
import subprocess
import time
from datetime import datetime, timezone

from app.executors.base import OutputSink, RunResult, RunSpec, Tick

#: Longest wait in the read loop while the run is printing (log flushes stay frequent), and
#: while it is quiet: 450 silent runs polling every 50 ms cost a worker most of a core
#: (bench/concurrency.py); output wakes the loop at once either way.
_POLL_SECONDS = 0.05
_QUIET_POLL_SECONDS = 0.25
#: After the main process exits, how long to wait for stragglers to close their pipes.
_DRAIN_SECONDS = 1.0
#: Where the kernel has pidfds (Linux 5.3+), a run's exit wakes its loop at once.
_PIDFD_OPEN = getattr(os, "pidfd_open", None)


class Supervision:
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
        self.peak_memory_kb: int | None = None
        self.cpu_seconds: float | None = None
        self.spawned = time.monotonic()  # made right after the spawn
        self.exited_at: float | None = None  # monotonic time the first process was reaped
        self.open_pipes = 0
        self.pidfd: int | None = None

    def wait(self) -> RunResult:
        """Supervise the run alone on this thread, to its end."""
        selector = selectors.DefaultSelector()
        self.register(selector)
        printing = True
        while selector.get_map():
            ready = selector.select(_POLL_SECONDS if printing else _QUIET_POLL_SECONDS)
            printing = bool(ready)
            for key, _ in ready:
                self.read(selector, key)
            if self.step():
                break
        result = self.close(selector)
        selector.close()
        return result

    # --- the pieces of one pass, for ``wait`` or a loop supervising many runs (``SupervisionLoop``)

    def register(self, selector: selectors.BaseSelector) -> None:
        """Watch the run's output pipes with ``selector`` (each key's data: (this, stream)), and
        its first process's exit where the kernel can tell it (a pidfd: stream "exit")."""
        selector.register(self.process.stdout, selectors.EVENT_READ, (self, "stdout"))
        selector.register(self.process.stderr, selectors.EVENT_READ, (self, "stderr"))
        self.open_pipes = 2
        if _PIDFD_OPEN is not None:
            try:
                self.pidfd = _PIDFD_OPEN(self.process.pid)
            except OSError:  # an old kernel: its exit is seen at the next poll
                return
            selector.register(self.pidfd, selectors.EVENT_READ, (self, "exit"))

    def starting(self, now: float, settle: float) -> bool:
        """Whether the run is still starting: alive, and spawned less than ``settle`` s ago."""
        return self.exited_at is None and now - self.spawned < settle

    def read(self, selector: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
        """Read what a ready pipe holds; at its end, stop watching it.  (The pidfd has nothing to
        read: it woke the loop for ``step`` to reap the process.)"""
        if key.data[1] == "exit":
            self._close_pidfd(selector)
            return
        data = os.read(key.fd, 65536)
        if data:
            self._emit(key.data[1], data)
        else:
            selector.unregister(key.fileobj)
            self.open_pipes -= 1

    def step(self) -> bool:
        """Reap the run's first process if it exited, then enforce the deadline and the claim.

        Returns:
          True once supervision is over: the first process exited and its pipes are closed, or
          stayed open longer than the drain time (stragglers, killed with it).
        """
        if self.exited_at is None and self._reap(os.WNOHANG):
            self.exited_at = time.monotonic()
            # The main process is done: whatever it left behind goes with it.
            self._signal_group(signal.SIGKILL)
        if self.exited_at is not None and (self.open_pipes == 0 or
                                           time.monotonic() - self.exited_at > _DRAIN_SECONDS):
            return True
        self._enforce()
        return False

    def close(self, selector: selectors.BaseSelector | None = None) -> RunResult:
        """End supervision: close the pipes (unwatched from ``selector``), reap (waiting, if the run
        is still alive), kill what is left of its group, and give the outcome."""
        for pipe in (self.process.stdout, self.process.stderr):
            if selector is not None and not pipe.closed:
                try:
                    selector.unregister(pipe)
                except KeyError:
                    pass
            pipe.close()
        self._close_pidfd(selector)
        if self.exited_at is None:
            self._reap(0)
        returncode = self.process.returncode
        self._signal_group(signal.SIGKILL)
        for stream, decoder in self.decoders.items():
            rest = decoder.decode(b"", final=True)
            if rest:
                self.output(stream, rest)
        return self._result(returncode)

    def _close_pidfd(self, selector: selectors.BaseSelector | None) -> None:
        if self.pidfd is None:
            return
        if selector is not None:
            try:
                selector.unregister(self.pidfd)
            except KeyError:
                pass
        os.close(self.pidfd)
        self.pidfd = None

    def _reap(self, options: int) -> bool:
        """Wait for the run's first process with ``wait4``, keeping its resource usage (which
        includes every descendant it waited for)."""
        pid, status, usage = os.wait4(self.process.pid, options)
        if pid == 0:
            return False
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self.peak_memory_kb = usage.ru_maxrss
        self.cpu_seconds = round(usage.ru_utime + usage.ru_stime, 3)
        return True

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
            if _command_name(pid) == "bwrap":
                continue
            if sig == signal.SIGTERM and _is_namespace_init(pid) and not _catches(pid, signal.SIGTERM):
                # The kernel ignores an unhandled SIGTERM sent to a namespace's first process;
                # SIGKILL is what SIGTERM's default action would have done.
                _kill(pid, signal.SIGKILL)
            else:
                _kill(pid, sig)

    def kill(self) -> None:
        """SIGKILL every process of the run at once (its supervisor is giving up on it)."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _result(self, returncode: int) -> RunResult:
        result = self._outcome(returncode)
        result.peak_memory_kb, result.cpu_seconds = self.peak_memory_kb, self.cpu_seconds
        return result

    def _outcome(self, returncode: int) -> RunResult:
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


def _status_fields(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)
    except OSError:
        return {}


def _is_namespace_init(pid: int) -> bool:
    return _status_fields(pid).get("NSpid", "").split()[-1:] == ["1"]


def _catches(pid: int, sig: int) -> bool:
    mask = int(_status_fields(pid).get("SigCgt", "0"), 16)
    return bool(mask & (1 << (sig - 1)))


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


class SupervisionLoop:
    """Supervises many runs with one selector loop on the calling thread: each run keeps its own
    output decoding, deadline, stop and kill, and reaping (``Supervision``); the loop only shares
    the waiting.  Unlike ``Supervision.wait`` it never blocks on one run: a run that closed its
    pipes but lives on is reaped, timed out or stopped like any other, at the next passes.
    """

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.active: list[Supervision] = []
        self._printing = True

    def add(self, supervision: Supervision) -> None:
        supervision.register(self.selector)
        self.active.append(supervision)

    def starting(self, settle: float) -> list[Supervision]:
        """The runs still starting (see ``Supervision.starting``)."""
        now = time.monotonic()
        return [supervision for supervision in self.active if supervision.starting(now, settle)]

    def run_pass(self, max_wait: float | None = None) -> list[tuple[Supervision, RunResult]]:
        """Wait for output or an exit (briefly; at most ``max_wait`` s), read it, then step every run.

        Returns:
          the runs whose supervision ended in this pass, with their outcomes.
        """
        wait = _POLL_SECONDS if self._printing else _QUIET_POLL_SECONDS
        ready = self.selector.select(wait if max_wait is None else max(0.0, min(wait, max_wait)))
        self._printing = bool(ready)
        for key, _ in ready:
            key.data[0].read(self.selector, key)
        ended, active = [], []
        for supervision in self.active:
            if supervision.step():
                ended.append((supervision, supervision.close(self.selector)))
            else:
                active.append(supervision)
        self.active = active
        return ended

    def close(self) -> None:
        self.selector.close()
