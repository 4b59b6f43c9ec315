"""Writing the audit trail: exactly one row per change, in the change's own transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from app.extensions import db
from app.models import AuditLog
from app.models.base import utcnow
from app.services import audit_chain
from app.services.actors import Actor


def jsonable(value: Any) -> Any:
    """A value as it can be stored in the audit row's JSON (timestamps as ISO 8601)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


def record(*, actor: Actor, action: str, resource_type: str, resource_id: Any,
           changes: dict[str, Any] | None = None) -> AuditLog:
    """Add an audit row for a change made in the current transaction; it is chained and
    inserted when the transaction commits, and dropped if it rolls back.

    Parameters:
      action: what happened, in the spec's words (``job_created``, ``job_executed``…).
      changes: for updates, ``{field: {"old": …, "new": …}}``; never secret values.
    """
    row = AuditLog(
        user_id=actor.user.id if actor.user else None,
        email=actor.user.email if actor.user else actor.label,
        action=action,
        resource_type=resource_type,
        resource_id=str(resource_id),
        changes=changes,
        ip_address=actor.ip_address,
        user_agent=actor.user_agent,
        request_id=actor.request_id,
        created_at=utcnow(),
    )
    audit_chain.add_pending(db.session, row)
    return row
