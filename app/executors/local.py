"""The local executor: a run is a process group on this machine, sandboxed when possible.

It gives the run a fresh working directory with its script (written, or fetched from Git), wraps
the command in the run's resource limits and bubblewrap, and hands the started process to
``Supervision``, which streams its output and enforces the timeout (never Dramatiq, whose time
limit cannot interrupt a blocking call).

A sandboxed run of an inline script, with no ``JOBPLANE_RUN_DIR``, has its working directory only
in its sandbox: a tmpfs there, which bubblewrap fills with the script from a memfd.  Nothing is
created on (or removed from) the machine's disk, nor left there if the worker is killed.  A
directory and a file per run on ext4 cost the worker 0.23 ms a run on a quiet machine
(bench/run_workdir.py), and about 4 of its 42 CPU seconds in a 5,000-job burst, while
PostgreSQL writes to the same disk (bench/burst.py).  Other runs (unsandboxed, a script from
Git, or ``JOBPLANE_RUN_DIR`` set) get a directory of the machine's, which the caller removes
(``remove_workdir``).
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import tempfile
from datetime import datetime, timezone

from app.executors import limits, sandbox
from app.executors.base import OutputSink, RunResult, RunSpec, Tick, remove_workdir
from app.executors.git import ScriptFetchError, fetch_script
from app.executors.launcher import StagedProcess, launcher_argv
from app.executors.supervision import Supervision

logger = logging.getLogger(__name__)

#: Script file names in the working directory, by job type.
SCRIPT_FILES = {"python": "script.py", "bash": "script.sh"}


class LocalExecutor:
    """Runs scripts as local processes.

    Parameters:
      python, bash: interpreter binaries.
      sandbox: ``auto`` (bubblewrap when installed), ``bubblewrap`` (required) or ``none``.
      run_dir: parent of the per-run working directories on this machine (default: none for a
        sandboxed run of an inline script, the system temp dir for the others).
      kill_grace_seconds: between SIGTERM and SIGKILL when a run must stop.
      git_timeout_seconds, git_allow_local: fetching scripts from Git.
    """

    def __init__(self, *, python: str, bash: str, sandbox: str = "auto", run_dir: str | None = None,
                 kill_grace_seconds: float = 10.0, git_timeout_seconds: float = 120.0,
                 git_allow_local: bool = False):
        self.python = python
        self.bash = bash
        self.sandbox_mode = sandbox
        self.run_dir = run_dir
        self.kill_grace_seconds = kill_grace_seconds
        self.git_timeout_seconds = git_timeout_seconds
        self.git_allow_local = git_allow_local

    @functools.cached_property
    def sandboxed(self) -> bool:
        """Whether runs are sandboxed (looked up once per executor: one run, or one group of runs)."""
        if self.sandbox_mode == "none":
            return False
        if self.sandbox_mode == "bubblewrap":
            return True  # wrap() raises a clear error when it is missing
        return sandbox.bubblewrap() is not None

    def run(self, spec: RunSpec, *, output: OutputSink, tick: Tick) -> RunResult:
        """Run ``spec`` to its end, its timeout, or until ``tick`` says stop."""
        workdir = self.new_workdir(spec)
        try:
            started = self.start(workdir, spec, output=output, tick=tick)
            return started if isinstance(started, RunResult) else started.wait()
        finally:
            remove_workdir(workdir)

    def stage(self, spec: RunSpec) -> StagedProcess | None:
        """Start ``spec``'s process now, held by a launcher until released (see ``launcher``).

        Returns:
          the held process, or None if it could not be prepared (a Git fetch failed, the sandbox is
          missing…): the caller runs it the usual way at its time, which reports why.
        """
        workdir = self.new_workdir(spec)
        try:
            command, env, sandboxed, notices, script_fd = self._command(workdir, spec, staged=True)
            try:
                process = limits.spawn(command, spec.limits, execution_id=spec.execution_id, cwd=workdir, env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       start_new_session=True, close_fds=True, pass_fds=_fds(script_fd))
            finally:
                _close(script_fd)
        except (ScriptFetchError, sandbox.SandboxUnavailable, OSError) as exc:
            logger.warning("execution %s: could not stage its process (%s); it starts the usual way",
                           spec.execution_id, exc)
            remove_workdir(workdir)
            return None
        return StagedProcess(process, workdir=workdir, spec=spec, sandboxed=sandboxed, notices=notices,
                             grace=self.kill_grace_seconds)

    def new_workdir(self, spec: RunSpec) -> str | None:
        """A fresh working directory for the run on this machine (the caller removes it:
        ``remove_workdir``), or None when the run's working directory lives only in its sandbox
        (see the module's docstring)."""
        if self.sandboxed and not spec.script_url and not self.run_dir:
            return None
        if self.run_dir:
            os.makedirs(self.run_dir, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"run-{spec.execution_id}-", dir=self.run_dir)

    def start(self, workdir: str | None, spec: RunSpec, *, output: OutputSink,
              tick: Tick) -> Supervision | RunResult:
        """Prepare ``spec`` in ``workdir`` (``new_workdir``'s: script, limits, sandbox) and spawn
        its process.

        Returns:
          its supervision, not yet waited for (``Supervision.wait``, or a ``SupervisionLoop`` that
          supervises many runs), or the outcome if it could not start (a Git fetch failed…).
          The caller removes ``workdir`` once the run has ended.
        """
        try:
            command, env, sandboxed, notices, script_fd = self._command(workdir, spec, staged=False)
        except ScriptFetchError as exc:
            return RunResult("failed", None, str(exc), None, datetime.now(timezone.utc), self.sandboxed)
        try:
            for notice in notices:
                output("system", notice)
            started = datetime.now(timezone.utc)
            process = limits.spawn(command, spec.limits, execution_id=spec.execution_id, cwd=workdir, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True, close_fds=True, pass_fds=_fds(script_fd))
        except OSError as exc:
            return RunResult("failed", None, f"could not start the script: {exc}", None,
                             datetime.now(timezone.utc), sandboxed)
        finally:
            _close(script_fd)
        return Supervision(process, spec, output, tick, self.kill_grace_seconds, sandboxed, started)

    def _command(self, workdir: str | None, spec: RunSpec, *,
                  staged: bool) -> tuple[list[str], dict[str, str], bool, list[str], int | None]:
        """The run's command line (behind a launcher if ``staged``), its environment, whether it is
        sandboxed, the system lines for its log, and the file descriptor the sandbox copies the
        script from when ``workdir`` is None (the caller passes it to the command, then closes it)."""
        sandboxed = self.sandboxed
        script, script_fd = self._place_script(workdir, spec)
        argv = ([self.python, "-u"] if spec.job_type == "python" else [self.bash]) + [script]
        if staged:
            argv = launcher_argv(self.python, argv)
        notices = []
        if sandboxed:
            home = sandbox.SANDBOX_WORKDIR
            try:
                command = sandbox.wrap(argv, workdir=workdir, files={script: script_fd} if workdir is None else None,
                                       network=spec.network, extra_read_only=self._interpreter_prefixes,
                                       bwrap=self._bwrap)
            except sandbox.SandboxUnavailable:
                _close(script_fd)
                raise
        else:
            home = workdir
            command = argv
            logger.warning("execution %s runs WITHOUT a sandbox (bubblewrap missing or "
                           "JOBPLANE_SANDBOX=none)", spec.execution_id)
            notices.append("[jobplane] WARNING: running without a sandbox (bubblewrap is not "
                           "installed or JOBPLANE_SANDBOX=none); the script can see this machine.\n")
        command = limits.wrap(command, spec.limits)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
               "PYTHONUNBUFFERED": "1", **spec.env, **spec.secret_env}
        return command, env, sandboxed, notices, script_fd

    @functools.cached_property
    def _bwrap(self) -> str | None:
        return sandbox.bubblewrap()

    @functools.cached_property
    def _interpreter_prefixes(self) -> tuple[str, ...]:
        return _outside_usr(self.python, self.bash)

    def _place_script(self, workdir: str | None, spec: RunSpec) -> tuple[str, int | None]:
        """The script's path relative to the working directory, written or fetched there; without
        a ``workdir``, also a memfd holding it, for the sandbox to copy into its own."""
        if spec.script_url:
            return fetch_script(url=spec.script_url, ref=spec.script_ref, path=spec.script_path or "",
                                workdir=workdir, timeout=self.git_timeout_seconds,
                                allow_local=self.git_allow_local), None
        name = SCRIPT_FILES[spec.job_type]
        data = (spec.script or "").encode("utf-8")
        if workdir is None:
            fd = os.memfd_create(name)
            try:
                os.pwrite(fd, data, 0)  # bubblewrap reads it from offset 0
            except OSError:
                os.close(fd)
                raise
            return name, fd
        with open(os.path.join(workdir, name), "wb") as handle:
            handle.write(data)
        return name, None


def _fds(fd: int | None) -> tuple[int, ...]:
    return () if fd is None else (fd,)


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _outside_usr(*binaries: str) -> tuple[str, ...]:
    """Install prefixes of interpreters that live outside /usr, to bind them into the sandbox."""
    prefixes = []
    for binary in binaries:
        real = os.path.realpath(binary)
        if not real.startswith("/usr/"):
            prefixes.append(os.path.dirname(os.path.dirname(real)))
    return tuple(prefixes)
