"""Notifications: one row per (execution, event, channel), written with the execution's final
status, then delivered by the notification actors; the row is the delivery's state machine."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, UTCDateTime, new_id, utcnow

#: what a job can be told about (spec §5.4); ``job_succeeded`` is opt-in
EVENTS = ("job_failed", "job_timeout", "job_lost", "job_recovered", "job_succeeded")
DEFAULT_EVENTS = ("job_failed", "job_timeout", "job_lost", "job_recovered")
CHANNELS = ("email", "slack", "webhook")
#: pending → sending → sent | failed; ``fallback`` = failed and handed to email
NOTIFICATION_STATUSES = ("pending", "sending", "sent", "failed", "fallback")


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("execution_id", "event", "channel"),
        Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_notifications_job_id", "job_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"))
    #: NULL for a test notification
    execution_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("executions.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(30))
    channel: Mapped[str] = mapped_column(String(20))
    #: email addresses for email; for Slack and webhooks the URL is read from the job when sent
    recipients: Mapped[list[str]] = mapped_column(JSONType, default=list)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: the Slack or webhook notification this email stands in for
    fallback_of: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
