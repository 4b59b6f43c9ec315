"""What every executor takes and gives back."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Protocol

#: Called with (stream, text) as output arrives; stream is "stdout" or "stderr".
OutputSink = Callable[[str, str], None]
#: Called often while the run is alive; returning False means "stop this run now" (claim revoked).
Tick = Callable[[], bool]


@dataclass(frozen=True)
class ResourceLimits:
    """Per-run limits (spec defaults: 1 CPU, 2 GB)."""

    cpus: int = 1
    memory_mb: int = 2048
    cpu_time_seconds: int | None = None
    open_files: int = 1024
    processes: int = 512


@dataclass(frozen=True)
class RunSpec:
    execution_id: str
    job_type: str  # "python" or "bash"
    timeout_seconds: float
    #: inline script, or a Git repository holding it (url, ref, path)
    script: str | None = None
    script_url: str | None = None
    script_ref: str | None = None
    script_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: the job's secret values, by variable name: an executor keeps them out of anything it logs
    #: or shows (Kubernetes: a Secret, never the Job's manifest)
    secret_env: dict[str, str] = field(default_factory=dict)
    network: bool = True
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    job_id: str | None = None
    attempt: int = 1
    #: kubernetes: the container image (None: the executor's default)
    image: str | None = None
    #: a run handed over by a worker that died: its output up to this time is already stored
    #: (kubernetes re-attaches to the running pod and follows its log from there)
    resume_log_after: datetime | None = None


@dataclass
class RunResult:
    status: str  # success, failed, timed_out, cancelled
    exit_code: int | None
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime
    sandboxed: bool
    peak_memory_kb: int | None = None
    cpu_seconds: float | None = None


class Executor(Protocol):
    def run(self, spec: RunSpec, *, output: OutputSink, tick: Tick) -> RunResult: ...


def remove_workdir(workdir: str | None) -> None:
    """Remove a run's working directory on this machine (``LocalExecutor.new_workdir``'s; None: the
    run had one only in its sandbox)."""
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
