"""Running a claimed execution: the worker's side of the fire path.

A run is one long activity made of short transactions: the claim (committed before the script
starts, so the whole fleet knows it is taken), log appends that double as heartbeats, and the
outcome.  Only the claim winner's writes count; if the sweeper revoked the claim, the run is
stopped at its next heartbeat.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from uuid import UUID

from flask import current_app

from app.executors.base import Executor, RunResult, RunSpec
from app.extensions import db
from app.models.base import utcnow
from app.services import executions
from app.services.executions import Claim
from app.tasks import dispatch

logger = logging.getLogger(__name__)

#: Shown in place of the output past the cap (spec: logs capped at 50 MB).
TRUNCATION_MARKER = "\n[jobplane] log truncated: the output passed {cap} bytes; the rest was not kept\n"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def run_execution(*, execution_id: str | UUID, executor: Executor) -> str | None:
    """Claim and run an execution; a delivery that loses the claim does nothing.

    Returns:
      the final status, "deferred" when the job's max_concurrent holds it back, or None when
      this delivery did not win the claim.
    """
    execution_id = UUID(str(execution_id))
    config = current_app.config
    with db.unit_of_work():
        outcome = executions.claim_execution(execution_id=execution_id, worker_id=worker_id())
    if outcome.deferred:
        # Held back by the job's max_concurrent: offer it again shortly.
        dispatch.run_execution_sender()(execution_id, delay_seconds=config["CONCURRENCY_RETRY_SECONDS"])
        return "deferred"
    claim = outcome.claim
    if claim is None:
        logger.info("execution %s already claimed or not queued; delivery dropped", execution_id)
        return None
    writer = LogWriter(claim, flush_seconds=config["LOG_FLUSH_SECONDS"],
                       heartbeat_seconds=config["HEARTBEAT_SECONDS"], cap_bytes=config["LOG_CAP_BYTES"])
    spec = RunSpec(execution_id=str(execution_id), job_type=claim.job.job_type,
                   script=claim.job.script or "", timeout_seconds=claim.job.effective_timeout_seconds,
                   env=_run_env(claim))
    try:
        if claim.job.script is None:
            result = _not_supported(claim)
        else:
            result = executor.run(spec, output=writer.write, tick=writer.tick)
    except Exception as exc:  # the run must end recorded, whatever broke
        logger.exception("execution %s: executor error", execution_id)
        result = RunResult("failed", None, f"Jobplane could not run the script: {exc}", None, utcnow(), False)
    writer.flush()
    status = "cancelled" if result.status == "cancelled" else result.status
    if status == "cancelled":
        # Our claim was revoked (the sweeper declared the run lost); the row is not ours to write.
        logger.warning("execution %s stopped: claim revoked", execution_id)
        return "cancelled"
    with db.unit_of_work():
        recorded = executions.finish_execution(
            claim=claim, status=status, exit_code=result.exit_code, error_message=result.error_message,
            started_at=result.started_at, completed_at=result.completed_at)
    if not recorded:
        logger.warning("execution %s finished after its claim was revoked; outcome %s not recorded",
                       execution_id, status)
    return status


def _run_env(claim: Claim) -> dict[str, str]:
    return {**(claim.job.env or {}),
            "JOBPLANE_JOB_ID": str(claim.job.id),
            "JOBPLANE_JOB_NAME": claim.job.name,
            "JOBPLANE_EXECUTION_ID": str(claim.execution_id),
            "JOBPLANE_SCHEDULED_FOR": claim.scheduled_for.isoformat(),
            "JOBPLANE_ATTEMPT": str(claim.attempt)}


def _not_supported(claim: Claim) -> RunResult:
    return RunResult("failed", None, "scripts from Git (script_url) are not supported by this "
                     "version's executor yet; paste the script inline", None, utcnow(), False)


class LogWriter:
    """Buffers a run's output and appends it to the execution log in order.

    Each flush is one short transaction that also heartbeats the claim; ``tick`` returns False
    once the claim is gone, which stops the run.
    """

    def __init__(self, claim: Claim, *, flush_seconds: float, heartbeat_seconds: float, cap_bytes: int):
        self.claim = claim
        self.flush_seconds = flush_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.cap_bytes = cap_bytes
        self.kept_bytes = 0
        self.truncated = False
        self.pending: list[tuple[str, str]] = []
        self.last_flush = time.monotonic()
        self.last_heartbeat = time.monotonic()
        self.claim_held = True

    def write(self, stream: str, text: str) -> None:
        if self.truncated:
            return
        size = len(text.encode())
        if self.kept_bytes + size > self.cap_bytes:
            room = max(self.cap_bytes - self.kept_bytes, 0)
            head = text.encode()[:room].decode("utf-8", errors="ignore")
            if head:
                self.pending.append((stream, head))
            self.pending.append(("system", TRUNCATION_MARKER.format(cap=self.cap_bytes)))
            self.truncated = True
            self.kept_bytes = self.cap_bytes
            return
        self.kept_bytes += size
        if self.pending and self.pending[-1][0] == stream:
            self.pending[-1] = (stream, self.pending[-1][1] + text)
        else:
            self.pending.append((stream, text))

    def tick(self) -> bool:
        now = time.monotonic()
        if (self.pending and now - self.last_flush >= self.flush_seconds) or \
                now - self.last_heartbeat >= self.heartbeat_seconds:
            self.flush()
        return self.claim_held

    def flush(self) -> None:
        chunks, self.pending = self.pending, []
        now = time.monotonic()
        self.last_flush = self.last_heartbeat = now
        if not self.claim_held:
            return
        try:
            with db.unit_of_work():
                self.claim_held = executions.append_log(claim=self.claim, chunks=chunks,
                                                        truncated=self.truncated)
        except Exception:
            # The database blinked: keep the output and try again at the next tick.
            logger.exception("execution %s: could not append its log; will retry", self.claim.execution_id)
            self.pending = chunks + self.pending
