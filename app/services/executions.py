"""Executions as users see them: manual runs, reading, listing, logs and cancel.

Fires are recorded by ``firing``; the worker's side (claim, heartbeat, outcome) is ``claims``;
the leader's recovery is ``sweeper``.  Messages are always sent after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import Integer, LargeBinary, case, cast, func, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from app.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.extensions import db
from app.models import Execution, ExecutionLogChunk, Job
from app.models.base import utcnow
from app.models.execution import ACTIVE_STATUSES, EXECUTION_STATUSES, TRIGGERS
from app.observability import metrics
from app.services import access, audit, firing, jobs
from app.services.actors import Actor
from app.tasks import dispatch


def trigger_manual_run(*, actor: Actor, job_id: UUID, send: bool = True) -> Execution:
    """Queue a run of the job now, on behalf of the actor (spec: ``POST /jobs/{id}/run``).

    Parameters:
      send: False where this process's queue reaches no worker (the CLI beside a standalone
        process): the run is recorded as never sent, and the sweeper sends it at its next sweep.

    Raises:
      NotFound: no job the actor may see.
      Forbidden: the actor may see the job but not run it.
      Conflict: the job forbids overlapping runs and one is active.
    """
    job = jobs.get_job(actor=actor, job_id=job_id)
    if not access.can_run_job(actor, job):
        raise Forbidden("only the job's owner or an admin may run it")
    job = firing.lock_job(job.id)
    now = utcnow()
    firing.admit_manual_run(job, now=now)
    execution = Execution(job_id=job.id, scheduled_for=now, triggered_by="manual", status="queued",
                          fired_by="api", created_at=now, sent_at=now, send_count=1 if send else 0)
    db.session.add(execution)
    db.session.flush()
    audit.record(actor=actor, action="job_executed", resource_type="job", resource_id=job.id,
                 changes={"execution_id": {"old": None, "new": str(execution.id)}})
    if send:
        dispatch.send_runs_after_commit([execution.id])
    return execution


def get_execution(*, actor: Actor, execution_id: UUID) -> Execution:
    """The execution, if the actor may see its job (spec: same rule as the job)."""
    execution = db.session.get(Execution, execution_id)
    if execution is None:
        raise NotFound(f"execution {execution_id} not found")
    job = db.session.get(Job, execution.job_id)
    if job is None or not access.can_view_job(actor, job):
        raise NotFound(f"execution {execution_id} not found")
    return execution


#: ``sort`` of execution lists: a field, ``-`` first for descending; ties are broken by id.
EXECUTION_SORT_FIELDS = {"scheduled_for": Execution.scheduled_for, "started_at": Execution.started_at,
                         "duration": Execution.duration_seconds}
def list_attempts(*, actor: Actor, execution_id: UUID) -> list[Execution]:
    """Every attempt of the execution's fire (the first and its retries), in attempt order.

    Raises:
      NotFound: no execution the actor may see.
    """
    execution = get_execution(actor=actor, execution_id=execution_id)
    first = execution.first_attempt_id or execution.id
    return list(db.session.scalars(select(Execution)
                                   .where((Execution.id == first) | (Execution.first_attempt_id == first))
                                   .order_by(Execution.attempt, Execution.created_at)))


def list_job_executions(*, actor: Actor, job_id: UUID, limit: int = 100, offset: int = 0,
                        statuses: list[str] | None = None, trigger: str | None = None,
                        scheduled_after: datetime | None = None, scheduled_before: datetime | None = None,
                        started_after: datetime | None = None, started_before: datetime | None = None,
                        sort: str = "-scheduled_for") -> tuple[list[Execution], int]:
    """The job's executions (its fire ledger), filtered and sorted, and how many match.

    Parameters:
      statuses: only these statuses, e.g. ``["skipped", "missed"]`` for "why did it not run".
      trigger: ``scheduled`` or ``manual``.
      scheduled_after, scheduled_before: fire times in ``[after, before)``; timezone-aware.
      started_after, started_before: start times in ``[after, before)`` (runs not started are left out).
      sort: one of EXECUTION_SORT_FIELDS, ``-`` first for descending (default: newest fire time
        first); runs without a start or duration come last; ties are broken by id.

    Raises:
      NotFound: no job the actor may see.
      InvalidInput: an unknown status, trigger or sort field (the allowed ones are listed), a naive
        time, or a range that ends before it starts.
    """
    jobs.get_job(actor=actor, job_id=job_id)
    errors: dict[str, str] = {}
    unknown = set(statuses or ()) - set(EXECUTION_STATUSES)
    if unknown:
        errors["status"] = f"unknown status {', '.join(sorted(unknown))}; use {', '.join(EXECUTION_STATUSES)}"
    if trigger is not None and trigger not in TRIGGERS:
        errors["trigger"] = f"unknown trigger {trigger!r}; use one of {', '.join(TRIGGERS)}"
    ranges = {"scheduled": (Execution.scheduled_for, scheduled_after, scheduled_before),
              "started": (Execution.started_at, started_after, started_before)}
    for name, (_, after, before) in ranges.items():
        for field, moment in ((f"{name}_after", after), (f"{name}_before", before)):
            if moment is not None and moment.tzinfo is None:
                errors[field] = "must have a UTC offset, e.g. 2026-11-28T02:00:00+00:00"
        if after is not None and before is not None and after.tzinfo and before.tzinfo and before <= after:
            errors[f"{name}_before"] = f"must be later than {name}_after"
    order = jobs.sort_order(sort, EXECUTION_SORT_FIELDS, Execution.id, errors)
    if errors:
        raise InvalidInput(errors)
    query = select(Execution).where(Execution.job_id == job_id)
    if statuses:
        query = query.where(Execution.status.in_(statuses))
    if trigger is not None:
        query = query.where(Execution.triggered_by == trigger)
    for column, after, before in ranges.values():
        if after is not None:
            query = query.where(column >= after)
        if before is not None:
            query = query.where(column < before)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.order_by(*order).limit(limit).offset(offset)).all()
    return list(rows), total


#: ``after_seq`` before a run's first log piece (the log writer numbers pieces from 0)
BEFORE_FIRST_PIECE = -1


def log_chunks(*, actor: Actor, execution_id: UUID, after_seq: int = BEFORE_FIRST_PIECE,
               limit: int = 500) -> tuple[Execution, list[ExecutionLogChunk]]:
    """The execution (if the actor may see it) and its stored log pieces after ``after_seq``, in order:
    what a live viewer replays before following the live channel."""
    execution = get_execution(actor=actor, execution_id=execution_id)
    chunks = db.session.scalars(select(ExecutionLogChunk)
                                .where(ExecutionLogChunk.execution_id == execution_id, ExecutionLogChunk.seq > after_seq)
                                .order_by(ExecutionLogChunk.seq).limit(limit)).all()
    return execution, list(chunks)


def read_log(*, execution_id: UUID, offset: int = 0, limit: int | None = None) -> str:
    """The execution's stored output, as text, from character ``offset``."""
    chunks = db.session.scalars(select(ExecutionLogChunk.data)
                                .where(ExecutionLogChunk.execution_id == execution_id)
                                .order_by(ExecutionLogChunk.seq)).all()
    text = "".join(chunks)
    return text[offset:] if limit is None else text[offset:offset + limit]


#: ``GET /executions/{id}/log``: bytes returned when no limit is given, and the most at once.
LOG_RANGE_DEFAULT_BYTES = 1024 * 1024
LOG_RANGE_MAX_BYTES = 10 * 1024 * 1024
#: The longest UTF-8 character: a range at least this long always holds a whole one, so reading
#: on from its end always moves forward.
LOG_RANGE_MIN_BYTES = 4


@dataclass(frozen=True)
class LogRange:
    """A byte range of an execution's stored log, cut on character boundaries."""

    data: bytes  #: UTF-8, whole characters only
    start: int  #: byte offset of ``data`` in the log
    size: int  #: bytes in the stored log so far
    truncated: bool  #: the log reached LOG_CAP_BYTES: the rest of the run's output was not kept

    @property
    def next_offset(self) -> int:
        """Where to read on from: nothing is skipped or read twice."""
        return self.start + len(self.data)


def read_log_range(*, actor: Actor, execution_id: UUID, offset: int | None = None, limit: int | None = None,
                   tail: int | None = None) -> LogRange:
    """A part of the execution's stored log, by byte position (``GET /executions/{id}/log``).

    Bytes ``offset`` (default 0) to ``offset + limit`` (default 1 MiB, at most 10 MiB); or, with
    ``tail``, the last ``tail`` bytes. An offset past the end gives no bytes, and the end as
    ``next_offset``: how a follower of a running execution waits for more.

    A range never splits a UTF-8 character: a start inside one moves forward to the next
    character, an end inside one moves back before it, so a range may hold up to 3 bytes fewer
    at each end than asked, and reading on from ``next_offset`` misses and repeats nothing.

    Only the chunks overlapping the range are read, and only the bytes of them inside it (the
    database slices them), so memory stays within ``limit`` however large the log is.

    Raises:
      NotFound: no execution the actor may see.
      InvalidInput: a negative offset; a limit or tail out of range; tail with offset or limit.
    """
    _check_log_range(offset, limit, tail)
    execution = get_execution(actor=actor, execution_id=execution_id)
    size = _log_size(execution_id)
    if tail is not None:
        start, end = max(size - tail, 0), size
    else:
        start = min(offset or 0, size)
        end = min(start + (limit or LOG_RANGE_DEFAULT_BYTES), size)
    first = start
    # one byte past the end tells whether the end falls inside a character
    raw = _log_bytes(execution_id, first, min(end + 1, size))
    while start < end and _continues_character(raw[start - first]):
        start += 1
    while end > start and end < size and _continues_character(raw[end - first]):
        end -= 1
    return LogRange(data=raw[start - first:end - first], start=start, size=size,
                    truncated=execution.log_truncated)


def _check_log_range(offset: int | None, limit: int | None, tail: int | None) -> None:
    if tail is not None and (offset is not None or limit is not None):
        raise InvalidInput({"tail": "give either tail (the last bytes) or offset and limit, not both"})
    if offset is not None and offset < 0:
        raise InvalidInput({"offset": "must be 0 or more: the byte position to read from"})
    if limit is not None and not LOG_RANGE_MIN_BYTES <= limit <= LOG_RANGE_MAX_BYTES:
        raise InvalidInput({"limit": f"must be {LOG_RANGE_MIN_BYTES} to {LOG_RANGE_MAX_BYTES} bytes; read a "
                                     "larger log in parts, from each response's X-Next-Offset"})
    if tail is not None and not 1 <= tail <= LOG_RANGE_MAX_BYTES:
        raise InvalidInput({"tail": f"must be 1 to {LOG_RANGE_MAX_BYTES} bytes"})


def _continues_character(byte: int) -> bool:
    """A UTF-8 continuation byte (10xxxxxx): not where a character starts."""
    return byte & 0xC0 == 0x80


class _utf8(FunctionElement):
    """The UTF-8 bytes of a text expression, to measure and slice it by bytes rather than characters."""

    type = LargeBinary()
    inherit_cache = True


@compiles(_utf8)
def _utf8_sqlite(element, compiler, **kw):
    return f"CAST({compiler.process(element.clauses, **kw)} AS BLOB)"


@compiles(_utf8, "postgresql")
def _utf8_postgresql(element, compiler, **kw):
    # not CAST(... AS bytea): that parses backslashes in the text as escapes
    return f"convert_to({compiler.process(element.clauses, **kw)}, 'UTF8')"


def _log_size(execution_id: UUID) -> int:
    """Bytes stored so far: where the last chunk ends."""
    last = db.session.execute(
        select(ExecutionLogChunk.offset, func.length(_utf8(ExecutionLogChunk.data)))
        .where(ExecutionLogChunk.execution_id == execution_id)
        .order_by(ExecutionLogChunk.seq.desc()).limit(1)).first()
    return 0 if last is None else last[0] + last[1]


def _log_bytes(execution_id: UUID, start: int, stop: int) -> bytes:
    """Bytes ``start`` to ``stop`` of the log: the overlapping part of each chunk that overlaps."""
    if stop <= start:
        return b""
    chunk = ExecutionLogChunk
    # the chunk holding byte ``start`` is the last one to begin at or before it
    first_offset = (select(func.max(chunk.offset))
                    .where(chunk.execution_id == execution_id, chunk.offset <= start).scalar_subquery())
    skip = case((chunk.offset < start, start - chunk.offset), else_=0)
    piece = func.substr(_utf8(chunk.data), cast(skip + 1, Integer), cast(stop - chunk.offset - skip, Integer),
                        type_=LargeBinary)
    pieces = db.session.scalars(
        select(piece)
        .where(chunk.execution_id == execution_id, chunk.offset >= func.coalesce(first_offset, 0),
               chunk.offset < stop)
        .order_by(chunk.seq)).all()
    return b"".join(bytes(p) for p in pieces)


def cancel_execution(*, actor: Actor, execution_id: UUID) -> Execution:
    """Cancel a queued or running execution (``POST /executions/{id}/cancel``).

    A queued one never starts; a running one loses its claim, and its worker stops the run at
    its next heartbeat (SIGTERM, the grace period, then SIGKILL of its whole process group).

    Raises:
      NotFound: no execution the actor may see.
      Forbidden: the actor may see it but not manage its job.
      Conflict: it has already ended.
    """
    execution = get_execution(actor=actor, execution_id=execution_id)
    job = db.session.get(Job, execution.job_id)
    if not access.can_run_job(actor, job):
        raise Forbidden("only the job's owner or an admin may cancel its runs")
    previous = execution.status
    who = actor.user.email if actor.user else "jobplane"
    result = db.session.execute(
        update(Execution).where(Execution.id == execution_id, Execution.status.in_(ACTIVE_STATUSES))
        .values(status="cancelled", claim_token=None, completed_at=utcnow(), reason=f"cancelled by {who}")
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise Conflict(f"execution {execution_id} has already ended ({previous}); there is nothing to cancel")
    audit.record(actor=actor, action="execution_cancelled", resource_type="execution", resource_id=execution_id,
                 changes={"status": {"old": previous, "new": "cancelled"}})
    metrics.executions_cancelled_after_commit(job_type=job.job_type, count=1)
    db.session.refresh(execution)
    return execution
