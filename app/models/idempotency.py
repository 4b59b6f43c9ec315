"""Idempotency keys of the API (spec §3.8): a retried ``POST`` is answered from the first one."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, UTCDateTime, new_id, utcnow

#: ``in_progress`` while the first request runs; ``completed`` once its response is stored.
IDEMPOTENCY_STATUSES = ("in_progress", "completed")


class IdempotencyKey(Base):
    """One ``Idempotency-Key`` of one user, the request it was first sent with, and the response."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        # a key belongs to its user: two users may pick the same key without meeting
        UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_id_key"),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
        CheckConstraint("status IN ('in_progress', 'completed')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    #: method and path of the first request, e.g. ``POST /api/v1/jobs``
    route: Mapped[str] = mapped_column(String(255))
    #: SHA-256 of the method, path and body: what "the same request" means
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="in_progress")
    #: which request holds an ``in_progress`` key: only it may complete or release it
    holder: Mapped[str] = mapped_column(String(32))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict | None] = mapped_column(JSONType)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: past this the key is forgotten (JOBPLANE_IDEMPOTENCY_TTL_HOURS after the request)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
