"""Running a claimed execution: the worker's side of the fire path.

A run is one long activity made of short transactions: the claim (committed before the script
starts, so the whole fleet knows it is taken), log appends that double as heartbeats, and the
outcome.  Only the claim winner's writes count; if the claim was revoked (cancelled, replaced,
declared lost) the run is stopped at its next heartbeat.  Secrets reach the script as
environment variables and are masked out of everything it prints.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime
from typing import Callable
from uuid import UUID

from flask import current_app

from app import observability
from app.errors import JobplaneError
from app.executors.base import Executor, ResourceLimits, RunResult, RunSpec
from app.extensions import db
from app.models import Job
from app.models.base import utcnow
from app.services import claims, staged_runs
from app.services import secrets as job_secrets
from app.services.claims import Claim
from app.services.live import live_log_for
from app.services.masking import SecretMasker
from app.tasks import dispatch

logger = logging.getLogger(__name__)

#: Shown in place of the output past the cap (spec: logs capped at 50 MB).
TRUNCATION_MARKER = "\n[jobplane] log truncated: the output passed {cap} bytes; the rest was not kept\n"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def run_execution(*, execution_id: str | UUID, executor_for: Callable[[str], Executor]) -> str | None:
    """Claim and run an execution; a delivery that loses the claim does nothing.  A staged
    execution (its fire time still ahead) is prepared first and started at its time (``staged_runs``).

    Parameters:
      executor_for: the executor of a name (``local``, ``kubernetes``); the claim says which.

    Returns:
      the final status, "deferred" when it may not start yet (its retry delay, or its job's
      max_concurrent), or None when this delivery did not win the claim.
    """
    execution_id = UUID(str(execution_id))
    staged = staged_runs.prepare(execution_id=execution_id, executor_for=executor_for,
                                 default_executor=current_app.config["EXECUTOR_DEFAULT"], build_spec=run_spec)
    try:
        return _claim_and_run(execution_id, executor_for, staged)
    finally:
        if staged is not None:
            staged.discard()  # whatever broke before the release: no held process outlives it


def _claim_and_run(execution_id: UUID, executor_for: Callable[[str], Executor],
                   staged: staged_runs.StagedRun | None) -> str | None:
    config = current_app.config
    with db.unit_of_work():
        outcome = claims.claim_execution(execution_id=execution_id, worker_id=worker_id(),
                                         default_executor=config["EXECUTOR_DEFAULT"])
        if staged is not None:
            staged.claimed(outcome)
        # In the claim's transaction: a job without secrets needs no other before its run.
        secret_names = (job_secrets.names_for_run(job_id=outcome.claim.job.id)
                        if outcome.claim and (staged is None or staged.secret_values is None) else [])
    if staged is not None and outcome.claim is not None:
        staged.release()  # first, so that the bookkeeping below cannot make it late
    if outcome.deferred:
        wait = outcome.wait_seconds or config["CONCURRENCY_RETRY_SECONDS"]
        dispatch.run_execution_sender()(execution_id, delay_seconds=wait)
        return "deferred"
    claim = outcome.claim
    if claim is None:
        logger.info("execution %s already claimed or not queued; delivery dropped", execution_id)
        return None
    observability.run_started(claim)
    live = live_log_for(current_app)
    live.publish(execution_id, {"type": "status", "status": "running"})
    secret_values = staged.secret_values if staged is not None else None
    if secret_values is None:
        try:
            secret_values = {}
            if secret_names:
                with db.unit_of_work():  # not left open during the run
                    secret_values = job_secrets.values_for_run(job_id=claim.job.id, names=secret_names)
        except JobplaneError as exc:
            secret_values = None
            secret_error = exc.message
    masker = SecretMasker((secret_values or {}).values())
    observability.run_masker(masker)
    writer = LogWriter(claim, masker=masker, live=live, flush_seconds=config["LOG_FLUSH_SECONDS"],
                       heartbeat_seconds=config["HEARTBEAT_SECONDS"], cap_bytes=config["LOG_CAP_BYTES"])
    if secret_values is None:
        result = RunResult("failed", None, f"the job's secrets could not be read: {secret_error}", None,
                           utcnow(), False)
    else:
        result = _run(claim, executor_for, writer, secret_values, staged)
    writer.flush(final=True)
    if result.status == "cancelled":
        # The claim was revoked (cancelled, replaced, declared lost): the row is not ours to write.
        logger.warning("execution %s stopped: its claim was revoked", execution_id)
        return "cancelled"
    with db.unit_of_work():
        recorded = claims.finish_execution(
            claim=claim, status=result.status, exit_code=result.exit_code,
            error_message=_error_message(masker.mask(result.error_message) if result.error_message else None,
                                         writer.stderr_tail if result.status in ("failed", "timed_out") else ""),
            started_at=claim.started_at if claim.resume_log_after else result.started_at,
            completed_at=result.completed_at,
            peak_memory_kb=result.peak_memory_kb, cpu_seconds=result.cpu_seconds, sandboxed=result.sandboxed)
    if not recorded:
        logger.warning("execution %s finished after its claim was revoked; outcome %s not recorded",
                       execution_id, result.status)
        return "cancelled"
    live.publish(execution_id, {"type": "status", "status": result.status, "exit_code": result.exit_code})
    return result.status


def _run(claim: Claim, executor_for: Callable[[str], Executor], writer: "LogWriter",
         secret_values: dict[str, str], staged: staged_runs.StagedRun | None) -> RunResult:
    spec = run_spec(claim.job, claim.execution_id, claim.scheduled_for, claim.attempt, secret_values,
                    resume_log_after=claim.resume_log_after, started_at=claim.started_at)
    try:
        executor = executor_for(claim.executor)  # inside: a cluster that cannot be configured fails the run
        if claim.resume_log_after is not None:
            writer.write("system", "[jobplane] the worker running this execution stopped; this worker takes "
                                   "over and follows its Kubernetes pod\n")
        if staged is not None:
            return staged.run(executor, spec, output=writer.write, tick=writer.tick)
        return executor.run(spec, output=writer.write, tick=writer.tick)
    except Exception as exc:  # the run must end recorded, whatever broke
        logger.exception("execution %s: executor error", claim.execution_id)
        return RunResult("failed", None, f"Jobplane could not run the script: {exc}", None, utcnow(), False)


def run_spec(job: Job, execution_id: UUID, scheduled_for: datetime, attempt: int,
             secret_values: dict[str, str], *, resume_log_after: datetime | None = None,
             started_at: datetime | None = None) -> RunSpec:
    """What the executor needs to run an execution of ``job``; ``resume_log_after`` and
    ``started_at`` for a Kubernetes run taken over from a worker that died."""
    metadata = _metadata(job, execution_id, scheduled_for, attempt)
    timeout = job.effective_timeout_seconds
    if resume_log_after is not None and started_at is not None:
        # a run taken over: its timeout counts from its first start, not from this worker's
        timeout = max(1.0, timeout - (utcnow() - started_at).total_seconds())
    return RunSpec(
        execution_id=str(execution_id), job_type=job.job_type, timeout_seconds=timeout,
        script=job.script, script_url=job.script_url, script_ref=job.script_ref, script_path=job.script_path,
        env={**(job.env or {}), **metadata},
        secret_env={name: value for name, value in secret_values.items() if name not in metadata},
        network=job.network_enabled,
        limits=ResourceLimits(cpus=job.cpu_limit, memory_mb=job.memory_limit_mb,
                              cpu_time_seconds=job.cpu_time_limit_seconds, open_files=job.max_open_files,
                              processes=job.max_processes),
        job_id=str(job.id), attempt=attempt, image=job.image, resume_log_after=resume_log_after)


def _metadata(job: Job, execution_id: UUID, scheduled_for: datetime, attempt: int) -> dict[str, str]:
    return {"JOBPLANE_JOB_ID": str(job.id),
            "JOBPLANE_JOB_NAME": job.name,
            "JOBPLANE_EXECUTION_ID": str(execution_id),
            "JOBPLANE_SCHEDULED_FOR": scheduled_for.isoformat(),
            "JOBPLANE_ATTEMPT": str(attempt)}


#: how much of a failed run's stderr its error message quotes (its last lines)
STDERR_TAIL_CHARS = 500


def _error_message(error: str | None, stderr_tail: str) -> str | None:
    """The error, with the last lines the run wrote to stderr (already masked), which say why."""
    lines = [line.strip() for line in stderr_tail.splitlines() if line.strip()][-5:]
    if not lines:
        return error
    tail = "\n".join(lines)
    return f"{error}\nlast error output:\n{tail}" if error else tail


class LogWriter:
    """Buffers a run's output, masks its secrets, and appends it to the log in order.

    Each flush is one short transaction that also heartbeats the claim, then the stored pieces
    are published for live viewers.  ``tick`` returns False once the claim is gone.
    """

    def __init__(self, claim: Claim, *, masker: SecretMasker, live, flush_seconds: float,
                 heartbeat_seconds: float, cap_bytes: int):
        self.claim = claim
        self.masker = masker
        self.live = live
        self.flush_seconds = flush_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.cap_bytes = cap_bytes
        self.kept_bytes = 0
        self.truncated = False
        self.pending: list[tuple[str, str]] = []  # raw, not yet masked
        self.last_flush = self.last_heartbeat = time.monotonic()
        self.claim_held = True
        #: the end of what the run wrote to stderr, masked: the "why" of a failure for its notification
        self.stderr_tail = ""

    def write(self, stream: str, text: str) -> None:
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

    def flush(self, final: bool = False) -> None:
        """Append the pending output and heartbeat; the final flush writes only output, if any
        (the outcome, recorded right after, checks the claim and heartbeats)."""
        chunks = self._masked(final)
        for stream, text in chunks:
            if stream == "stderr":
                self.stderr_tail = (self.stderr_tail + text)[-STDERR_TAIL_CHARS:]
        self.last_flush = self.last_heartbeat = time.monotonic()
        if not self.claim_held or (final and not chunks):
            return
        chunks = self._capped(chunks)
        try:
            with db.unit_of_work():
                stored = claims.append_log(claim=self.claim, chunks=chunks, truncated=self.truncated)
        except Exception:
            # The database blinked: keep the (masked) output and try again at the next tick.
            logger.exception("execution %s: could not append its log; will retry", self.claim.execution_id)
            self.pending = chunks + self.pending
            self.kept_bytes -= sum(len(text.encode()) for _, text in chunks)
            return
        if stored is None:
            self.claim_held = False
            return
        for chunk in stored:
            try:
                self.live.publish(self.claim.execution_id, {"type": "log", "seq": chunk.seq, "offset": chunk.offset,
                                                            "stream": chunk.stream, "data": chunk.data})
            except Exception:  # viewers can always replay the stored log
                logger.warning("execution %s: live publish failed", self.claim.execution_id, exc_info=True)
                break

    def _masked(self, final: bool) -> list[tuple[str, str]]:
        """Mask the pending output; unless ``final``, keep back the end of the last piece."""
        pending, self.pending = self.pending, []
        chunks = []
        for index, (stream, text) in enumerate(pending):
            if index == len(pending) - 1 and not final:
                safe, rest = self.masker.split_safe(text)
                if rest:
                    self.pending = [(stream, rest)]
            else:
                safe = self.masker.mask(text)
            if safe:
                chunks.append((stream, safe))
        return chunks

    def _capped(self, chunks: list[tuple[str, str]]) -> list[tuple[str, str]]:
        kept = []
        for stream, text in chunks:
            if self.truncated:
                break
            size = len(text.encode())
            if self.kept_bytes + size > self.cap_bytes:
                room = max(self.cap_bytes - self.kept_bytes, 0)
                head = text.encode()[:room].decode("utf-8", errors="ignore")
                if head:
                    kept.append((stream, head))
                kept.append(("system", TRUNCATION_MARKER.format(cap=self.cap_bytes)))
                self.truncated = True
                self.kept_bytes = self.cap_bytes
                break
            self.kept_bytes += size
            kept.append((stream, text))
        if self.truncated:
            self.pending = []
        return kept
