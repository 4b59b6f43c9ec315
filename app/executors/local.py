"""The local executor: a run is a process group on this machine, sandboxed when possible.

It writes (or fetches from Git) the script into a fresh working directory, wraps the command in
the run's resource limits and bubblewrap, and hands the started process to ``Supervision``,
which streams its output and enforces the timeout (never Dramatiq, whose time limit cannot
interrupt a blocking call).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone

from app.executors import limits, sandbox
from app.executors.base import OutputSink, RunResult, RunSpec, Tick
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
      run_dir: parent of the per-run working directories (default: the system temp dir).
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
            shutil.rmtree(workdir, ignore_errors=True)

    def stage(self, spec: RunSpec) -> StagedProcess | None:
        """Start ``spec``'s process now, held by a launcher until released (see ``launcher``).

        Returns:
          the held process, or None if it could not be prepared (a Git fetch failed, the sandbox is
          missing…): the caller runs it the usual way at its time, which reports why.
        """
        workdir = self.new_workdir(spec)
        try:
            command, env, sandboxed, notices = self._command(workdir, spec, staged=True)
            process = limits.spawn(command, spec.limits, execution_id=spec.execution_id, cwd=workdir, env=env,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True, close_fds=True)
        except (ScriptFetchError, sandbox.SandboxUnavailable, OSError) as exc:
            logger.warning("execution %s: could not stage its process (%s); it starts the usual way",
                           spec.execution_id, exc)
            shutil.rmtree(workdir, ignore_errors=True)
            return None
        return StagedProcess(process, workdir=workdir, spec=spec, sandboxed=sandboxed, notices=notices,
                             grace=self.kill_grace_seconds)

    def new_workdir(self, spec: RunSpec) -> str:
        """A fresh working directory for the run (the caller removes it)."""
        if self.run_dir:
            os.makedirs(self.run_dir, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"run-{spec.execution_id}-", dir=self.run_dir)

    def start(self, workdir: str, spec: RunSpec, *, output: OutputSink, tick: Tick) -> Supervision | RunResult:
        """Prepare ``spec`` in ``workdir`` (script, limits, sandbox) and spawn its process.

        Returns:
          its supervision, not yet waited for (``Supervision.wait``, or a ``SupervisionLoop`` that
          supervises many runs), or the outcome if it could not start (a Git fetch failed…).
          The caller removes ``workdir`` once the run has ended.
        """
        try:
            command, env, sandboxed, notices = self._command(workdir, spec, staged=False)
        except ScriptFetchError as exc:
            return RunResult("failed", None, str(exc), None, datetime.now(timezone.utc), self.sandboxed)
        for notice in notices:
            output("system", notice)
        started = datetime.now(timezone.utc)
        try:
            process = limits.spawn(command, spec.limits, execution_id=spec.execution_id, cwd=workdir, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True, close_fds=True)
        except OSError as exc:
            return RunResult("failed", None, f"could not start the script: {exc}", None,
                             datetime.now(timezone.utc), sandboxed)
        return Supervision(process, spec, output, tick, self.kill_grace_seconds, sandboxed, started)

    def _command(self, workdir: str, spec: RunSpec, *,
                  staged: bool) -> tuple[list[str], dict[str, str], bool, list[str]]:
        """The run's command line (behind a launcher if ``staged``), its environment, whether it is
        sandboxed, and the system lines for its log."""
        sandboxed = self.sandboxed
        script = self._place_script(workdir, spec)
        argv = ([self.python, "-u"] if spec.job_type == "python" else [self.bash]) + [script]
        if staged:
            argv = launcher_argv(self.python, argv)
        notices = []
        if sandboxed:
            home = sandbox.SANDBOX_WORKDIR
            command = sandbox.wrap(argv, workdir=workdir, network=spec.network,
                                   extra_read_only=self._interpreter_prefixes, bwrap=self._bwrap)
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
        return command, env, sandboxed, notices

    @functools.cached_property
    def _bwrap(self) -> str | None:
        return sandbox.bubblewrap()

    @functools.cached_property
    def _interpreter_prefixes(self) -> tuple[str, ...]:
        return _outside_usr(self.python, self.bash)

    def _place_script(self, workdir: str, spec: RunSpec) -> str:
        """The script's path relative to the working directory, written or fetched there."""
        if spec.script_url:
            return fetch_script(url=spec.script_url, ref=spec.script_ref, path=spec.script_path or "",
                                workdir=workdir, timeout=self.git_timeout_seconds,
                                allow_local=self.git_allow_local)
        name = SCRIPT_FILES[spec.job_type]
        with open(os.path.join(workdir, name), "w", encoding="utf-8") as handle:
            handle.write(spec.script or "")
        return name


def _outside_usr(*binaries: str) -> tuple[str, ...]:
    """Install prefixes of interpreters that live outside /usr, to bind them into the sandbox."""
    prefixes = []
    for binary in binaries:
        real = os.path.realpath(binary)
        if not real.startswith("/usr/"):
            prefixes.append(os.path.dirname(os.path.dirname(real)))
    return tuple(prefixes)
