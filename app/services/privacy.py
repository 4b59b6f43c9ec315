"""GDPR (spec §9.5): exporting everything Jobplane holds about a user, and deleting a user.

Deleting a user removes their jobs (with those jobs' executions, logs and secrets) and their
tokens; the audit trail keeps its rows, with the user's random id as a pseudonym and the email,
IP address and user agent blanked (``audit_chain.erase_personal_data``).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import func, inspect, select

from app.extensions import db
from app.models import ApiToken, AuditLog, Execution, Job, Team, User
from app.services import access, audit, audit_chain, masking, secrets, users
from app.services.actors import Actor
from app.services.scheduler_signal import announce_job_change


def _columns(row: Any, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    return {attr.key: audit.jsonable(getattr(row, attr.key)) for attr in inspect(row).mapper.column_attrs
            if attr.key not in exclude}


def export_user(*, actor: Actor, user_id: UUID) -> dict[str, Any]:
    """Everything about a user: profile, team, tokens (never their values), jobs, the executions of
    those jobs (their logs stay at ``/api/v1/executions/{id}``), and the audit rows of their actions.
    The user themself or an admin."""
    user = users.get_user(actor=actor, user_id=user_id)
    team = db.session.get(Team, user.team_id) if user.team_id else None
    jobs = list(db.session.scalars(select(Job).where(Job.owner_id == user.id).order_by(Job.created_at)))
    job_ids = [job.id for job in jobs]
    executions = list(db.session.scalars(select(Execution).where(Execution.job_id.in_(job_ids))
                                         .order_by(Execution.scheduled_for))) if job_ids else []
    tokens = db.session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)).all()
    trail = db.session.scalars(select(AuditLog).where(AuditLog.user_id == user.id).order_by(AuditLog.id)).all()
    return {
        "user": _columns(user),
        "team": _columns(team) if team else None,
        "api_tokens": [_columns(token, exclude=("token_hash",)) for token in tokens],
        "jobs": [_masked(_columns(job)) for job in jobs],
        "executions": [_columns(execution, exclude=("claim_token",)) for execution in executions],
        "audit_logs": [_masked_changes(_columns(row, exclude=("pii_salt", "pii_digest", "prev_hash", "row_hash")))
                       for row in trail],
    }


def _masked(values: dict[str, Any]) -> dict[str, Any]:
    return {key: masking.masked_url(value) if key in masking.CREDENTIAL_FIELDS else value
            for key, value in values.items()}


def _masked_changes(row: dict[str, Any]) -> dict[str, Any]:
    changes = row.get("changes")
    if isinstance(changes, dict):
        row["changes"] = {field: ({side: masking.masked_url(value) for side, value in change.items()}
                                  if field in masking.CREDENTIAL_FIELDS and isinstance(change, dict) else change)
                          for field, change in changes.items()}
    return row


def delete_user(*, actor: Actor, user_id: UUID) -> dict[str, int]:
    """Delete a user and what they own (admins only; not the last admin). Returns what went."""
    access.require_admin(actor, "delete users")
    user = users.get_user(actor=actor, user_id=user_id)
    if user.role == "admin" and user.is_active:
        users.require_another_admin(user)
    job_ids = list(db.session.scalars(select(Job.id).where(Job.owner_id == user.id)))
    execution_count = db.session.scalar(select(func.count()).select_from(Execution)
                                        .where(Execution.job_id.in_(job_ids))) if job_ids else 0
    for job_id in job_ids:
        secrets.forget_job_secrets(job_id=job_id)
        announce_job_change(job_id)  # the scheduler drops it; a running run loses its claim
    user_id = user.id
    db.session.delete(user)  # the database cascades to jobs, executions, logs and tokens
    db.session.flush()
    # last: the erasure holds the audit chain's head (every audit writer waits) until the commit
    erased = audit_chain.erase_personal_data(db.session, user_id=user_id)
    summary = {"jobs": len(job_ids), "executions": execution_count, "audit_rows_pseudonymized": erased}
    audit.record(actor=actor, action="user_deleted", resource_type="user", resource_id=user_id,
                 changes={key: {"old": value, "new": 0} for key, value in summary.items()})
    audit_chain.erase_pending(db.session, user_id=user_id)  # when they deleted themself
    return summary
