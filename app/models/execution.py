"""Executions (spec §5.6): one per (job, scheduled time), and their append-only logs."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, new_id, utcnow

#: Statuses of an execution. ``queued`` and ``running`` are active; the rest are final.
#: ``skipped`` (the concurrency policy refused the fire) and ``missed`` (the fire time passed
#: unfired) are ledger records: they never ran.
EXECUTION_STATUSES = ("queued", "running", "success", "failed", "timed_out", "lost", "cancelled",
                      "skipped", "missed")
ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = frozenset(EXECUTION_STATUSES) - frozenset(ACTIVE_STATUSES)
TRIGGERS = ("scheduled", "manual")


class Execution(Base):
    __tablename__ = "executions"
    __table_args__ = (
        # A repeated fire (failover, crash before APScheduler stored its next run time)
        # inserts nothing: the heart of "exactly once". Retries of a fire are further attempts
        # of the same fire time.
        UniqueConstraint("job_id", "scheduled_for", "attempt", name="uq_executions_job_id_scheduled_for_attempt"),
        Index("ix_executions_status", "status"),
        Index("ix_executions_started_at", "started_at"),
        Index("ix_executions_job_id_created_at", "job_id", "created_at"),
        Index("ix_executions_first_attempt_id", "first_attempt_id"),  # its ON DELETE CASCADE looks here
        CheckConstraint(
            "status IN ('queued', 'running', 'success', 'failed', 'timed_out', 'lost', 'cancelled', "
            "'skipped', 'missed')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(50), default="queued")
    #: the fire time this execution is for (the request time for a manual run)
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    triggered_by: Mapped[str] = mapped_column(String(50), default="scheduled")
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    #: for a retry, the first attempt of the same fire
    first_attempt_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("executions.id", ondelete="CASCADE"))
    #: not to be started before this (a retry's backoff); NULL: as soon as possible
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    #: resources used by the run: peak resident memory and CPU time (user + system)
    peak_memory_kb: Mapped[int | None] = mapped_column(BigInteger)
    cpu_seconds: Mapped[float | None] = mapped_column(Float)
    #: whether the run was isolated by bubblewrap (False: a plain process, said loudly)
    sandboxed: Mapped[bool | None] = mapped_column(Boolean)
    error_message: Mapped[str | None] = mapped_column(Text)
    #: why it was skipped, missed or cancelled (the fire ledger's answer to "why not")
    reason: Mapped[str | None] = mapped_column(Text)
    #: the scheduler replica that fired it (host:pid), or the API for manual runs
    fired_by: Mapped[str | None] = mapped_column(String(255))
    #: set by the worker that won the claim; only its updates count
    claim_token: Mapped[str | None] = mapped_column(String(64))
    worker_id: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: the executor the run was claimed for (``local``, ``kubernetes``); NULL until claimed
    executor: Mapped[str | None] = mapped_column(String(20))
    #: times a Kubernetes run was handed to a new worker after its worker died (its pod ran on)
    reattach_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: when the run message was last sent, and how many times in all (the sweeper re-sends)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    send_count: Mapped[int] = mapped_column(Integer, default=1)
    log_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    log_truncated: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExecutionLogChunk(Base):
    """A piece of an execution's output. Chunks are appended in ``seq`` order, never rewritten."""

    __tablename__ = "execution_log_chunks"
    __table_args__ = (UniqueConstraint("execution_id", "seq", name="uq_execution_log_chunks_execution_id_seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    execution_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("executions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    #: byte offset of this chunk in the whole log
    offset: Mapped[int] = mapped_column(BigInteger)
    #: ``stdout``, ``stderr`` or ``system`` (Jobplane's own lines, such as the truncation marker)
    stream: Mapped[str] = mapped_column(String(10))
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
