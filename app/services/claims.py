"""The worker's side of an execution: claiming it, appending its log (each append is also a
heartbeat), and recording its outcome.  Only the claim winner's writes count: once the claim is
revoked (cancelled, replaced, declared lost) every further write is refused."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import Integer, String, Uuid, bindparam, func, select, text, update

from app.extensions import db
from app.models import Execution, ExecutionLogChunk, Job
from app.models.base import UTCDateTime, utcnow
from app.observability import metrics
from app.services import notifications, retries


@dataclass(frozen=True)
class ClaimOutcome:
    """A claim won, lost to another delivery (``claim`` None), or deferred by ``max_concurrent``."""

    claim: "Claim | None"
    deferred: bool = False
    #: how long to wait before offering a deferred execution again (None: the usual pause)
    wait_seconds: float | None = None


@dataclass(frozen=True)
class Claim:
    """What the worker that won an execution needs to run it."""

    execution_id: UUID
    token: str
    job: Job
    scheduled_for: datetime
    attempt: int
    #: ``local`` or ``kubernetes``: where this run executes
    executor: str = "local"
    #: a run taken over from a worker that died (its Kubernetes pod ran on): its log is stored
    #: up to this time, the dead worker's last heartbeat
    resume_log_after: datetime | None = None
    #: when the run first started (for a handed-over run: before this claim)
    started_at: datetime | None = None


def claim_execution(*, execution_id: UUID, worker_id: str, default_executor: str = "local") -> ClaimOutcome:
    """Take a queued execution for this worker with one conditional update.

    A job that allows overlapping runs up to ``max_concurrent`` is checked under its row lock,
    so the limit holds across every worker; a run over the limit stays queued (deferred).

    The run's executor is the job's, or ``default_executor``; a run handed over by the sweeper
    (its worker died, its Kubernetes pod did not) keeps its executor and start time.

    Returns:
      the outcome: ``claim`` is None when another delivery took it or it is no longer queued.
    """
    row = db.session.execute(_LOCK_JOB_OF_EXECUTION, {"execution_id": execution_id}).first()
    if row is None:
        return ClaimOutcome(None)
    job, due_at, reattach_count, last_heartbeat = row
    job_id = job.id
    if due_at is not None and due_at > utcnow() + timedelta(seconds=1):
        return ClaimOutcome(None, deferred=True, wait_seconds=(due_at - utcnow()).total_seconds())
    if job.concurrency_policy == "allow" and job.max_concurrent:
        running = db.session.scalar(select(func.count()).where(
            Execution.job_id == job_id, Execution.status == "running"))
        if running >= job.max_concurrent:
            db.session.execute(update(Execution).where(Execution.id == execution_id, Execution.status == "queued")
                               .values(sent_at=utcnow()).execution_options(synchronize_session=False))
            return ClaimOutcome(None, deferred=True)
    token = secrets.token_hex(16)
    now = utcnow()
    claimed = db.session.execute(_CLAIM, {"execution_id": execution_id, "token": token, "worker_id": worker_id,
                                          "now": now, "executor": job.executor or default_executor}).first()
    if claimed is None:
        return ClaimOutcome(None)
    return ClaimOutcome(Claim(execution_id=execution_id, token=token, job=job,
                              scheduled_for=claimed.scheduled_for, attempt=claimed.attempt,
                              executor=claimed.executor, started_at=claimed.started_at,
                              resume_log_after=last_heartbeat if reattach_count else None))


def claim_execution_group(*, execution_ids: list[UUID], worker_id: str,
                          default_executor: str = "local") -> list[Claim]:
    """Take, in one statement, every execution of ``execution_ids`` that a group run can run:
    ``queued``, due (no retry delay, its fire time come: a staged one is not started early), not
    handed over, on the ``local`` executor, of a job without ``max_concurrent``.  PostgreSQL only.

    Unlike ``claim_execution`` it takes no job row lock: that lock serializes the ``max_concurrent``
    count between workers, and such jobs are left to the usual path.  The claimed rows are locked
    in id order and rows another transaction holds are skipped (that one is claiming them), so
    two deliveries of one group message cannot deadlock, and only one of them wins each execution.

    Returns:
      the claims won, each with its own token (its job loaded); ``started_at`` is the claim time
      until the run's spawn time is recorded with its outcome.
    """
    if not execution_ids:
        return []
    tokens = [secrets.token_hex(16) for _ in execution_ids]
    rows = db.session.execute(_CLAIM_GROUP, {
        "ids": [str(execution_id) for execution_id in execution_ids], "tokens": tokens, "worker_id": worker_id,
        "now": utcnow(), "default_executor": default_executor}).all()
    if not rows:
        return []
    jobs = {job.id: job for job in db.session.scalars(select(Job).where(Job.id.in_({row.job_id for row in rows})))}
    return [Claim(execution_id=row.id, token=row.token, job=jobs[row.job_id], scheduled_for=row.scheduled_for,
                  attempt=row.attempt, executor="local", started_at=row.started_at) for row in rows]


def still_queued(*, execution_ids: list[UUID]) -> list[UUID]:
    """Those of ``execution_ids`` that are still ``queued``."""
    if not execution_ids:
        return []
    return list(db.session.scalars(select(Execution.id).where(Execution.id.in_(execution_ids),
                                                              Execution.status == "queued")))


def heartbeat_group(*, claims: list[Claim]) -> set[UUID]:
    """Heartbeat many runs in one statement.

    Returns:
      the executions whose claim still holds (the others were revoked: stop their runs).
    """
    if not claims:
        return set()
    return set(db.session.scalars(_HEARTBEAT_GROUP, {
        "ids": [str(claim.execution_id) for claim in claims], "tokens": [claim.token for claim in claims],
        "now": utcnow()}))


def append_log(*, claim: Claim, chunks: list[tuple[str, str]],
               truncated: bool = False) -> list[ExecutionLogChunk] | None:
    """Append output chunks ``(stream, text)`` and heartbeat, if the claim still holds.

    Returns:
      the stored chunks (with their ``seq`` and ``offset``), or None when the claim was revoked
      (cancelled, replaced, or declared lost): stop the run.
    """
    size = sum(len(text.encode()) for _, text in chunks)
    values = {"heartbeat_at": utcnow(), "log_bytes": Execution.log_bytes + size}
    if truncated:
        values["log_truncated"] = True
    result = db.session.execute(
        update(Execution)
        .where(Execution.id == claim.execution_id, Execution.claim_token == claim.token,
               Execution.status == "running")
        .values(**values)
        .returning(Execution.log_bytes)
        .execution_options(synchronize_session=False))
    new_total = result.scalar()
    if new_total is None:
        return None
    stored = []
    if chunks:
        last_seq = db.session.scalar(select(func.max(ExecutionLogChunk.seq))
                                     .where(ExecutionLogChunk.execution_id == claim.execution_id))
        seq = 0 if last_seq is None else last_seq + 1
        offset = new_total - size
        for stream, text in chunks:
            chunk = ExecutionLogChunk(execution_id=claim.execution_id, seq=seq, offset=offset,
                                      stream=stream, data=text, created_at=utcnow())
            db.session.add(chunk)
            stored.append(chunk)
            seq += 1
            offset += len(text.encode())
    return stored


def finish_execution(*, claim: Claim, status: str, exit_code: int | None, error_message: str | None,
                     started_at: datetime | None, completed_at: datetime, peak_memory_kb: int | None = None,
                     cpu_seconds: float | None = None, sandboxed: bool | None = None) -> bool:
    """Record the outcome of a claimed run, and queue its retry if the job retries it.

    Returns:
      False if the claim was revoked meanwhile (nothing is recorded).
    """
    values = {"execution_id": claim.execution_id, "token": claim.token, "status": status, "exit_code": exit_code,
              "error_message": error_message, "completed_at": completed_at, "peak_memory_kb": peak_memory_kb,
              "cpu_seconds": cpu_seconds, "sandboxed": sandboxed}
    if started_at is not None:
        values["started_at"] = started_at
        values["duration_seconds"] = round((completed_at - started_at).total_seconds(), 3)
    # The row comes back with the update (one round trip): retries and notifications read it.
    execution = db.session.scalars(_FINISH[started_at is not None], values).first()
    if execution is None:
        return False
    _finished(execution, status=status, completed_at=completed_at)
    return True


@dataclass(frozen=True)
class Outcome:
    """The outcome of a claimed run, as ``finish_execution`` takes it (for ``finish_executions``)."""

    claim: Claim
    status: str
    exit_code: int | None
    error_message: str | None
    #: when the run's process was spawned (None: it never started; the claim's time stays)
    started_at: datetime | None
    completed_at: datetime
    peak_memory_kb: int | None = None
    cpu_seconds: float | None = None
    sandboxed: bool | None = None


def finish_executions(*, outcomes: list[Outcome]) -> set[UUID]:
    """Record the outcomes of many claimed runs with one statement (PostgreSQL), each then with
    its retry or notification as ``finish_execution`` does.

    Returns:
      the executions recorded; the others' claims were revoked meanwhile (nothing recorded).
    """
    if not outcomes:
        return set()
    columns: dict[str, list] = {name: [] for name in (
        "ids", "tokens", "statuses", "exit_codes", "errors", "completed", "peaks", "cpus", "sandboxed", "started",
        "durations")}
    for outcome in outcomes:
        for name, value in zip(columns, (
                str(outcome.claim.execution_id), outcome.claim.token, outcome.status, outcome.exit_code,
                outcome.error_message, outcome.completed_at, outcome.peak_memory_kb, outcome.cpu_seconds,
                outcome.sandboxed, outcome.started_at,
                None if outcome.started_at is None else
                round((outcome.completed_at - outcome.started_at).total_seconds(), 3))):
            columns[name].append(value)
    by_id = {outcome.claim.execution_id: outcome for outcome in outcomes}
    recorded = set()
    for execution in db.session.scalars(_FINISH_MANY, columns,
                                        execution_options={"populate_existing": True}).all():
        outcome = by_id[execution.id]
        _finished(execution, status=outcome.status, completed_at=outcome.completed_at)
        recorded.add(execution.id)
    return recorded


def _finished(execution: Execution, *, status: str, completed_at: datetime) -> None:
    """After an outcome is recorded: its metrics, and its retry or (final) its notifications."""
    job = db.session.get(Job, execution.job_id)  # the worker's session holds it since the claim
    metrics.execution_finished_after_commit(job_type=job.job_type, outcome=status, started_at=execution.started_at,
                                            completed_at=completed_at)
    if retries.schedule_retry(job=job, execution=execution, outcome=status, now=completed_at) is None:
        notifications.record_outcome(job=job, execution=execution)  # final: in this same transaction


# --- the hot path's statements, built once: building one costs about what running it does --------

#: The execution's job, its row locked until the commit (as ``firing.lock_job``), and its due time.
_LOCK_JOB_OF_EXECUTION = (select(Job, Execution.due_at, Execution.reattach_count, Execution.heartbeat_at).join(Execution, Execution.job_id == Job.id)
                          .where(Execution.id == bindparam("execution_id")).with_for_update(of=Job))

#: The claim: ``queued`` -> ``running`` with a fresh token, or nothing if another delivery won.
_CLAIM = (update(Execution)
          .where(Execution.id == bindparam("execution_id"), Execution.status == "queued")
          .values(status="running", claim_token=bindparam("token"), worker_id=bindparam("worker_id"),
                  heartbeat_at=bindparam("now"),
                  # a run handed over (its Kubernetes pod ran on) keeps its start and its executor
                  started_at=func.coalesce(Execution.started_at, bindparam("now")),
                  executor=func.coalesce(Execution.executor, bindparam("executor")))
          .returning(Execution.scheduled_for, Execution.attempt, Execution.executor, Execution.started_at)
          .execution_options(synchronize_session=False))


def _finish_statement(*, with_start: bool):
    """The outcome of a run whose claim still holds, the row returned; ``with_start``: the executor
    reports when the process started (and so the duration)."""
    values = {name: bindparam(name) for name in ("status", "exit_code", "error_message", "completed_at",
                                                 "peak_memory_kb", "cpu_seconds", "sandboxed")}
    values["heartbeat_at"] = bindparam("completed_at")
    if with_start:
        values.update(started_at=bindparam("started_at"), duration_seconds=bindparam("duration_seconds"))
    return (update(Execution)
            .where(Execution.id == bindparam("execution_id"), Execution.claim_token == bindparam("token"),
                   Execution.status == "running")
            .values(**values)
            .returning(Execution)
            .execution_options(synchronize_session=False, populate_existing=True))


_FINISH = {True: _finish_statement(with_start=True), False: _finish_statement(with_start=False)}


#: The group claim (``claim_execution_group``): lock the claimable rows in id order, skipping those
#: another transaction holds, then mark them running, each with its own token.
_CLAIM_GROUP = text("""
WITH claimable AS (
    SELECT e.id FROM executions AS e JOIN jobs AS j ON j.id = e.job_id
    WHERE e.id = ANY(CAST(:ids AS uuid[])) AND e.status = 'queued' AND e.due_at IS NULL
      AND e.reattach_count = 0 AND e.scheduled_for <= :now
      AND coalesce(e.executor, j.executor, :default_executor) = 'local'
      AND (j.concurrency_policy <> 'allow' OR coalesce(j.max_concurrent, 0) = 0)
    ORDER BY e.id
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE executions AS e
SET status = 'running', claim_token = t.token, worker_id = :worker_id, heartbeat_at = :now, started_at = :now,
    executor = 'local'
FROM claimable AS c JOIN unnest(CAST(:ids AS uuid[]), CAST(:tokens AS text[])) AS t(id, token) ON t.id = c.id
WHERE e.id = c.id
RETURNING e.id, e.job_id, e.scheduled_for, e.attempt, e.started_at, t.token
""").bindparams(bindparam("now", type_=UTCDateTime())).columns(
    id=Uuid, job_id=Uuid, scheduled_for=UTCDateTime, attempt=Integer, started_at=UTCDateTime, token=String)

#: One heartbeat for the runs of a group whose claims still hold.
_HEARTBEAT_GROUP = text("""
UPDATE executions AS e SET heartbeat_at = :now
FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS text[])) AS t(id, token)
WHERE e.id = t.id AND e.claim_token = t.token AND e.status = 'running'
RETURNING e.id
""").bindparams(bindparam("now", type_=UTCDateTime())).columns(id=Uuid)

#: The outcomes of many runs whose claims still hold (``finish_executions``), the rows returned.
_FINISH_MANY = select(Execution).from_statement(text("""
UPDATE executions AS e
SET status = t.status, exit_code = t.exit_code, error_message = t.error_message, completed_at = t.completed_at,
    heartbeat_at = t.completed_at, peak_memory_kb = t.peak_memory_kb, cpu_seconds = t.cpu_seconds,
    sandboxed = t.sandboxed, started_at = coalesce(t.started_at, e.started_at),
    duration_seconds = coalesce(t.duration_seconds, e.duration_seconds)
FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS text[]), CAST(:statuses AS text[]), CAST(:exit_codes AS integer[]),
            CAST(:errors AS text[]), CAST(:completed AS timestamptz[]), CAST(:peaks AS bigint[]),
            CAST(:cpus AS double precision[]), CAST(:sandboxed AS boolean[]), CAST(:started AS timestamptz[]),
            CAST(:durations AS double precision[]))
     AS t(id, token, status, exit_code, error_message, completed_at, peak_memory_kb, cpu_seconds, sandboxed,
          started_at, duration_seconds)
WHERE e.id = t.id AND e.claim_token = t.token AND e.status = 'running'
RETURNING e.*
"""))
