"""Reading the audit trail (admins only): filtered lists, CSV export, verification, retention."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any, Iterator

from sqlalchemy import Select, func, select

from app.extensions import db
from app.models import AuditLog
from app.services import access, audit, audit_chain
from app.services.actors import Actor

CSV_COLUMNS = ("id", "created_at", "user_id", "email", "action", "resource_type", "resource_id", "changes",
               "ip_address", "user_agent", "request_id", "row_hash")


def _filtered(filters: dict[str, Any]) -> Select:
    query = select(AuditLog)
    for field in ("user_id", "action", "resource_type", "resource_id"):
        if filters.get(field) is not None:
            query = query.where(getattr(AuditLog, field) == (str(filters[field]) if field == "resource_id"
                                                              else filters[field]))
    if filters.get("email"):  # who acted: a user's email, or the label of the CLI or a failed sign-in
        query = query.where(func.lower(AuditLog.email) == filters["email"].lower())
    since: datetime | None = filters.get("since")
    until: datetime | None = filters.get("until")
    if since:
        query = query.where(AuditLog.created_at >= since)
    if until:
        query = query.where(AuditLog.created_at < until)
    return query


def list_entries(*, actor: Actor, filters: dict[str, Any], limit: int = 100,
                 offset: int = 0) -> tuple[list[AuditLog], int]:
    """Audit rows matching ``filters`` (user_id, email, action, resource_type, resource_id, since,
    until), newest first, and how many match."""
    access.require_admin(actor, "read the audit log")
    query = _filtered(filters)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.order_by(AuditLog.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), total


def export_csv(*, actor: Actor, filters: dict[str, Any]) -> Iterator[str]:
    """The matching rows as CSV, oldest first, streamed in batches."""
    access.require_admin(actor, "export the audit log")
    query = _filtered(filters).order_by(AuditLog.id)

    def rows() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for row in db.session.scalars(query.execution_options(yield_per=1000)):
            writer.writerow([_cell(getattr(row, column)) for column in CSV_COLUMNS])
            if buffer.tell() > 64 * 1024:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    return rows()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    value = str(audit.jsonable(value))
    # a cell a spreadsheet would run as a formula is quoted (CSV injection)
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def verify(*, actor: Actor) -> audit_chain.Verification:
    access.require_admin(actor, "verify the audit log")
    return audit_chain.verify(db.session)


def prune(*, actor: Actor, retention_days: int) -> int:
    """Remove rows older than ``retention_days`` (committing in batches), then audit the pruning."""
    access.require_admin(actor, "prune the audit log")
    removed = audit_chain.prune(db.session, retention_days=retention_days)
    if removed:
        audit.record(actor=actor, action="audit_pruned", resource_type="audit_log", resource_id="retention",
                     changes={"rows_removed": {"old": removed, "new": 0},
                              "retention_days": {"old": None, "new": retention_days}})
    return removed
