"""The audit log's hash chain: how rows are linked, verified, pruned and stripped of personal data.

Each row stores ``prev_hash`` (the previous row's hash) and ``row_hash`` = SHA-256 over its own
content and ``prev_hash``.  Rows are chained at commit (``install``), under the lock of the single
``audit_chain_head`` row, so concurrent transactions append one after the other and no other lock
is ever taken while that one is held.  The head also remembers the newest hash (rows cut off the
end are noticed) and the hash of the last pruned row (retention removes the oldest rows without
breaking verification).

Personal data (email, IP address, user agent) enters the hash only through ``pii_digest``, so the
GDPR erasure can blank those columns and the chain still verifies.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from sqlalchemy import delete, event, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.models import AuditChainHead, AuditLog

_PENDING = "jobplane_audit_pending"
_HEAD_ID = 1


def pii_digest(salt: str | None, email: str | None, ip_address: str | None, user_agent: str | None) -> str:
    """SHA-256 of a row's personal data with the row's own random salt, which the erasure blanks
    too: once erased, the digest cannot be matched against a guessed email and address."""
    return hashlib.sha256(json.dumps([salt, email, ip_address, user_agent]).encode()).hexdigest()


def new_salt() -> str:
    return secrets.token_hex(16)


#: the digest of a row with no personal data at all
EMPTY_PII_DIGEST = pii_digest(None, None, None, None)


def row_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 of a row's content (everything but its id, personal columns and own hash)."""
    created_at = row["created_at"]
    if isinstance(created_at, str):
        created_at = datetime.fromisoformat(created_at)
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=timezone.utc)
    content = {
        "user_id": str(row["user_id"]).replace("-", "") if row["user_id"] else None,
        "action": row["action"],
        "resource_type": row["resource_type"],
        "resource_id": row["resource_id"],
        "changes": row["changes"],
        "request_id": row["request_id"],
        "created_at": created_at.astimezone(timezone.utc).isoformat(timespec="microseconds"),
        "pii_digest": row["pii_digest"],
        "prev_hash": row["prev_hash"],
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _as_mapping(row: AuditLog) -> dict[str, Any]:
    return {column: getattr(row, column) for column in (
        "user_id", "action", "resource_type", "resource_id", "changes", "request_id", "created_at",
        "pii_digest", "prev_hash")}


# --- appending ----------------------------------------------------------------------------------

def add_pending(session: Session, row: AuditLog) -> None:
    """Queue ``row`` to be chained and inserted when ``session`` commits (dropped on rollback)."""
    row.pii_salt = new_salt()
    row.pii_digest = pii_digest(row.pii_salt, row.email, row.ip_address, row.user_agent)
    # begin the transaction now if no SQL has yet: a rollback only ends (and drops) a begun one
    session.connection()
    session.info.setdefault(_PENDING, []).append(row)


def install(factory: sessionmaker) -> None:
    """Chain the pending audit rows of every session ``factory`` makes, just before it commits."""
    event.listen(factory, "before_commit", _chain_pending)
    event.listen(factory, "after_transaction_end", _drop_pending)


def _lock_head(session: Session) -> AuditChainHead:
    # an UPDATE takes the row lock on PostgreSQL and the write lock on SQLite alike
    session.execute(update(AuditChainHead).where(AuditChainHead.id == _HEAD_ID)
                    .values(last_id=AuditChainHead.last_id).execution_options(synchronize_session=False))
    head = session.get(AuditChainHead, _HEAD_ID, populate_existing=True)
    if head is None:
        raise RuntimeError("audit_chain_head is missing: run `jobplane db upgrade`")
    return head


def _chain_pending(session: Session) -> None:
    pending: list[AuditLog] = session.info.pop(_PENDING, [])
    if not pending:
        return
    head = _lock_head(session)
    previous = head.last_hash
    for row in pending:
        row.prev_hash = previous
        row.row_hash = previous = row_hash(_as_mapping(row))
        session.add(row)
    session.flush()
    head.last_id, head.last_hash = pending[-1].id, previous
    session.flush()


def _drop_pending(session: Session, transaction) -> None:
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


# --- verifying ----------------------------------------------------------------------------------

@dataclass
class Verification:
    checked: int
    problem: str | None = None
    row_id: int | None = None
    head_hash: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(session: Session, *, batch_size: int = 2000) -> Verification:
    """Walk the chain from the retention anchor to the head; report the first broken place.

    Rows may be appended, and the oldest pruned, while the walk goes on: the head is read afresh
    before anything is reported, so only a chain that is broken in the database is reported.
    """
    head = _read_head(session)
    if head is None:
        return Verification(0, "audit_chain_head is missing (deleted?)")
    # plain values: reading the head again refreshes the same object
    anchor_id, last_id, last_hash = head.anchor_id, head.last_id, head.last_hash
    expected_prev, previous_id, checked, after_id = head.anchor_hash, anchor_id, 0, anchor_id
    while True:
        rows = session.scalars(select(AuditLog).where(AuditLog.id > after_id)
                               .order_by(AuditLog.id).limit(batch_size)).all()
        for row in rows:
            if row.prev_hash != expected_prev:
                latest = _read_head(session)
                if latest is not None and latest.anchor_id != anchor_id and latest.anchor_id >= previous_id:
                    # retention pruned the rows this walk had not reached yet: start at the new anchor
                    return verify(session, batch_size=batch_size)
                where = f"after row {previous_id}" if previous_id else "at the start of the log"
                return Verification(checked, f"row {row.id} does not follow the row before it: a row {where} "
                                             f"is missing, or row {row.id}'s link was edited", row.id)
            erased = (row.email, row.ip_address, row.user_agent, row.pii_salt) == (None, None, None, None)
            if not erased and pii_digest(row.pii_salt, row.email, row.ip_address, row.user_agent) != row.pii_digest:
                return Verification(checked, f"row {row.id} was edited (its email, IP address or user agent)",
                                    row.id)
            if row_hash(_as_mapping(row)) != row.row_hash:
                return Verification(checked, f"row {row.id} was edited", row.id)
            expected_prev, previous_id, checked = row.row_hash, row.id, checked + 1
        for row in rows:
            session.expunge(row)  # the caller's own objects stay in its session
        if len(rows) == batch_size:
            after_id = rows[-1].id
            continue
        if expected_prev == last_hash:
            return Verification(checked, head_hash=last_hash)
        latest = _read_head(session)
        if latest is None or latest.last_hash == last_hash:
            break
        # rows were committed while walking: walk on to the new head
        last_id, last_hash, after_id = latest.last_id, latest.last_hash, previous_id
    if previous_id > last_id:
        return Verification(checked, f"row {previous_id} is past the chain's head (row {last_id}): "
                                     f"it was not appended by Jobplane", previous_id)
    return Verification(checked, f"rows after row {previous_id} are missing: the chain's head "
                                 f"(row {last_id}) is not in the table", last_id)


def _read_head(session: Session) -> AuditChainHead | None:
    # never the copy a session may hold from its own earlier commit: others may have appended since
    return session.get(AuditChainHead, _HEAD_ID, populate_existing=True)


# --- retention and erasure ---------------------------------------------------------------------

def _allow(session: Session, flag: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL jobplane.{flag} = 'on'"))


def prune(session: Session, *, retention_days: int, batch_size: int = 5000) -> int:
    """Remove the oldest rows, older than ``retention_days``, in committed batches (short locks).

    Only a prefix of the chain is ever removed, and the head's anchor moves to the last removed
    row's hash, so what remains still verifies.  Returns the number of rows removed.
    """
    cutoff = datetime.now(timezone.utc) - timedelta(days=retention_days)
    removed = 0
    while True:
        head = _lock_head(session)
        first_kept = session.scalar(select(func.min(AuditLog.id)).where(AuditLog.created_at >= cutoff))
        upper = session.scalar(select(AuditLog.id).where(
            AuditLog.id > head.anchor_id, *([AuditLog.id < first_kept] if first_kept else []))
            .order_by(AuditLog.id).offset(batch_size - 1).limit(1))
        if upper is None:
            upper = session.scalar(select(func.max(AuditLog.id)).where(
                AuditLog.id > head.anchor_id, *([AuditLog.id < first_kept] if first_kept else [])))
        if upper is None:
            session.commit()
            return removed
        last = session.get(AuditLog, upper)
        _allow(session, "audit_prune")
        result = session.execute(delete(AuditLog).where(AuditLog.id > head.anchor_id, AuditLog.id <= upper)
                                 .execution_options(synchronize_session=False))
        head.anchor_id, head.anchor_hash = last.id, last.row_hash
        removed += result.rowcount
        session.commit()


def erase_pending(session: Session, *, user_id) -> None:
    """Blank the email, IP address and user agent of the rows about ``user_id`` that this
    transaction has queued but not yet written (a user who deletes themself)."""
    for row in session.info.get(_PENDING, []):
        if row.user_id == user_id:
            row.email = row.ip_address = row.user_agent = row.pii_salt = None
            row.pii_digest = EMPTY_PII_DIGEST


def erase_personal_data(session: Session, *, user_id) -> int:
    """Blank the email, IP address, user agent and salt of every row about ``user_id`` (GDPR erasure).

    The rows stay, with the user's id: a random UUID that, once the user is deleted, points at
    nobody.  Returns the number of rows changed.

    The head is locked first, as retention does before it deletes: taken the other way round,
    the two would deadlock on the rows they share.  It is held until the transaction ends, so
    call this last.
    """
    _lock_head(session)
    _allow(session, "audit_erase")
    result = session.execute(
        update(AuditLog).where(AuditLog.user_id == user_id)
        .where((AuditLog.email.is_not(None)) | (AuditLog.ip_address.is_not(None))
               | (AuditLog.user_agent.is_not(None)) | (AuditLog.pii_salt.is_not(None)))
        .values(email=None, ip_address=None, user_agent=None, pii_salt=None).execution_options(synchronize_session=False))
    return result.rowcount
