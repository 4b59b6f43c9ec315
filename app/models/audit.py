"""The audit trail (spec §9.4): one row per change, written in the change's transaction.

Rows are chained: each stores the hash of the row before it and its own hash, so an edited or
removed row is found by ``jobplane audit verify`` (``app.services.audit_chain``).  On PostgreSQL a
trigger also rejects UPDATE, DELETE and TRUNCATE outside the two maintenance paths (retention
pruning and the GDPR erasure of personal data).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, UTCDateTime, utcnow


class AuditLog(Base):
    __tablename__ = "audit_logs"
    __table_args__ = (
        Index("ix_audit_logs_user_id", "user_id"),
        Index("ix_audit_logs_created_at", "created_at"),
        Index("ix_audit_logs_resource", "resource_type", "resource_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    #: NULL for changes made by Jobplane itself (bootstrap, scheduler) or an unknown login
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    #: personal data: erased (NULL) when the user is deleted; ``pii_digest`` keeps the chain whole
    email: Mapped[str | None] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(100))
    resource_type: Mapped[str] = mapped_column(String(50))
    resource_id: Mapped[str] = mapped_column(String(64))
    changes: Mapped[dict | None] = mapped_column(JSONType)
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: SHA-256 of (pii_salt, email, ip_address, user_agent) as written; the salt is erased with them
    pii_salt: Mapped[str | None] = mapped_column(String(32))
    pii_digest: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """The single row that serializes writers and remembers both ends of the chain.

    ``anchor_hash`` is the hash of the last row retention pruned (empty before any pruning), so
    verification can start there; ``last_hash`` is the newest row's hash, so cutting rows off the
    end is noticed too.
    """

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    last_hash: Mapped[str] = mapped_column(String(64), default="")
    anchor_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    anchor_hash: Mapped[str] = mapped_column(String(64), default="")
