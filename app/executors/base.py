"""What every executor takes and gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Protocol

#: Called with (stream, text) as output arrives; stream is "stdout" or "stderr".
OutputSink = Callable[[str, str], None]
#: Called often while the run is alive; returning False means "stop this run now" (claim revoked).
Tick = Callable[[], bool]


@dataclass(frozen=True)
class RunSpec:
    execution_id: str
    job_type: str  # "python" or "bash"
    script: str
    timeout_seconds: float
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    status: str  # success, failed, timed_out, cancelled
    exit_code: int | None
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime
    sandboxed: bool


class Executor(Protocol):
    def run(self, spec: RunSpec, *, output: OutputSink, tick: Tick) -> RunResult: ...
