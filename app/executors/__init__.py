"""Execution backends: how a claimed run becomes a process (``local``; ``kubernetes`` later)."""

from __future__ import annotations

from typing import Any, Mapping

from app.executors.base import ResourceLimits, RunResult, RunSpec
from app.executors.local import LocalExecutor

__all__ = ["LocalExecutor", "ResourceLimits", "RunResult", "RunSpec", "executor_for"]


def executor_for(config: Mapping[str, Any]) -> LocalExecutor:
    """The executor configured for this process."""
    return LocalExecutor(
        python=config["PYTHON"], bash=config["BASH"], sandbox=config["SANDBOX"],
        run_dir=config["RUN_DIR"], kill_grace_seconds=config["KILL_GRACE_SECONDS"],
        git_timeout_seconds=config["GIT_TIMEOUT_SECONDS"], git_allow_local=config["GIT_ALLOW_LOCAL"])
