"""Execution backends: how a claimed run becomes a process (``local``) or a Kubernetes Job
(``kubernetes``)."""

from __future__ import annotations

from typing import Any, Mapping

from app.executors.base import Executor, ResourceLimits, RunResult, RunSpec
from app.executors.local import LocalExecutor

__all__ = ["LocalExecutor", "ResourceLimits", "RunResult", "RunSpec", "executor_for"]


def executor_for(config: Mapping[str, Any], name: str = "local") -> Executor:
    """The executor ``name`` (``local`` or ``kubernetes``) as this process's settings configure it."""
    if name == "kubernetes":
        from app.executors.kubernetes import kubernetes_executor_for  # the client loads only where used

        return kubernetes_executor_for(config)
    return LocalExecutor(
        python=config["PYTHON"], bash=config["BASH"], sandbox=config["SANDBOX"],
        run_dir=config["RUN_DIR"], kill_grace_seconds=config["KILL_GRACE_SECONDS"],
        git_timeout_seconds=config["GIT_TIMEOUT_SECONDS"], git_allow_local=config["GIT_ALLOW_LOCAL"])
