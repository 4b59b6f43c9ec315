"""Retention (spec §9.5: "executions purged after 90 days"): deleting finished executions, with
their log chunks and notification records, once they are older than the retention period.

A purge can remove millions of rows. It works in batches, each its own short transaction, so no
lock is held for long and the web, workers and scheduler carry on meanwhile: like a worker's run,
it is one long activity made of several transactions, so it commits through
``db.unit_of_work()`` itself and is called outside any other transaction (the admin CLI; the
scheduler leader later).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, delete, exists, func, select
from sqlalchemy.orm import aliased

from app.errors import InvalidInput
from app.extensions import db
from app.models import Execution, ExecutionLogChunk, Notification
from app.models.execution import FINAL_STATUSES
from app.services import audit
from app.services.actors import SYSTEM, Actor

#: Executions deleted per transaction: small enough that each batch takes well under a second.
DEFAULT_BATCH_SIZE = 5000
MAX_BATCH_SIZE = 100_000

#: What a purge counts, in the order it reports them.
COUNTED = ("executions", "log_chunks", "notifications")


def _finished_before(model, older_than: datetime):
    # a run finished when it completed; skipped and missed fires never ran, so they are as old
    # as their record
    return and_(model.status.in_(sorted(FINAL_STATUSES)),
                func.coalesce(model.completed_at, model.created_at) < older_than)


def _purgeable(older_than: datetime) -> Select:
    """Ids of finished executions older than the cut-off that no other execution refers to.

    Retries refer to their first attempt (deleting it would cascade to them), so a first attempt
    waits until its retries are gone: they go in an earlier batch when they are old enough too,
    and a first attempt whose retry is still running or recent is kept.
    """
    retry = aliased(Execution)
    return (select(Execution.id)
            .where(_finished_before(Execution, older_than),
                   ~exists(select(retry.id).where(retry.first_attempt_id == Execution.id))))


def count_purgeable(*, older_than: datetime) -> dict[str, int]:
    """What ``purge_executions`` would remove now, without removing anything (``--dry-run``).

    A first attempt is counted when it and all its retries are old enough, as the purge would
    remove it once its retries are gone.
    """
    retry = aliased(Execution)
    young_retry = exists(select(retry.id).where(retry.first_attempt_id == Execution.id,
                                                ~_finished_before(retry, older_than)))
    ids = select(Execution.id).where(_finished_before(Execution, older_than), ~young_retry)
    return {
        "executions": db.session.scalar(select(func.count()).select_from(ids.subquery())),
        "log_chunks": db.session.scalar(select(func.count()).select_from(ExecutionLogChunk)
                                        .where(ExecutionLogChunk.execution_id.in_(ids))),
        "notifications": db.session.scalar(select(func.count()).select_from(Notification)
                                           .where(Notification.execution_id.in_(ids))),
    }


def purge_executions(*, older_than: datetime, batch_size: int = DEFAULT_BATCH_SIZE,
                     actor: Actor = SYSTEM) -> dict[str, int]:
    """Delete finished executions older than ``older_than``, with their log chunks and
    notification records, in batches of ``batch_size`` executions, each committed on its own.
    Queued and running executions are never touched, however old. One audit row
    (``executions_purged``) records what went, when anything did.

    Parameters:
      older_than: the cut-off: executions that completed (or, never run, were recorded) before it.
      batch_size: executions per transaction, 1 to 100,000.
      actor: who purges (the admin CLI's actor, or Jobplane itself).

    Returns:
      how many executions, log chunks and notifications were deleted.

    Raises:
      InvalidInput: a batch size out of range, or a cut-off without a timezone.
    """
    _check(older_than, batch_size)
    removed = dict.fromkeys(COUNTED, 0)
    while True:
        with db.unit_of_work():
            batch = purge_batch(older_than=older_than, batch_size=batch_size)
        for key, count in batch.items():
            removed[key] += count
        if not batch["executions"]:
            break
    if removed["executions"]:
        with db.unit_of_work():
            audit.record(actor=actor, action="executions_purged", resource_type="execution", resource_id="*",
                         changes={"older_than": audit.jsonable(older_than),
                                  **{key: {"old": count, "new": 0} for key, count in removed.items()}})
    return removed


def purge_batch(*, older_than: datetime, batch_size: int) -> dict[str, int]:
    """Delete one batch: up to ``batch_size`` purgeable executions with their log chunks and
    notifications, in the current transaction (flushed, not committed). Rows another transaction
    has locked (a worker finishing a run) are skipped, left for the next purge.

    Returns:
      how many executions, log chunks and notifications it deleted; no executions means done.
    """
    session = db.session
    # no ORDER BY: any purgeable rows will do, and sorting them made each batch walk past the
    # dead rows of the batches before it (bench/purge_batches.py)
    ids = list(session.scalars(_purgeable(older_than).limit(batch_size).with_for_update(skip_locked=True)))
    if not ids:
        return dict.fromkeys(COUNTED, 0)
    # children first and counted: the foreign keys would cascade, but silently
    return {
        "log_chunks": session.execute(delete(ExecutionLogChunk).where(ExecutionLogChunk.execution_id.in_(ids)))
        .rowcount,
        "notifications": session.execute(delete(Notification).where(Notification.execution_id.in_(ids))).rowcount,
        "executions": session.execute(delete(Execution).where(Execution.id.in_(ids))
                                      .execution_options(synchronize_session=False)).rowcount,
    }


def _check(older_than: Any, batch_size: Any) -> None:
    errors = {}
    if not isinstance(older_than, datetime) or older_than.tzinfo is None:
        errors["older_than"] = "must be a timezone-aware date and time"
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        errors["batch_size"] = f"must be a whole number from 1 to {MAX_BATCH_SIZE}"
    if errors:
        raise InvalidInput(errors)
