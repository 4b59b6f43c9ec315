"""Jobs (spec §5.6): what to run, when, and how. The source of truth for the scheduler."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, EncryptedText, JSONType, UTCDateTime, new_id, utcnow
from app.models.notification import DEFAULT_EVENTS

JOB_TYPES = ("python", "bash")
#: Where a run executes: a sandboxed process on the worker, or a Kubernetes Job.
EXECUTORS = ("local", "kubernetes")
#: ``disabled`` is a paused job: it fires nothing until resumed.
JOB_STATUSES = ("active", "disabled", "deleted")
#: What to do with fire times that passed while no scheduler could fire them.
MISFIRE_POLICIES = ("skip", "run_latest", "run_all")
#: Outcomes a job may retry.
RETRYABLE_OUTCOMES = ("failed", "timed_out", "lost")
#: What a fire does while an earlier run of the job is still queued or running.
CONCURRENCY_POLICIES = ("allow", "forbid", "replace")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # the job list is newest first, ties by id: a page is read through this index, not sorted from all (0008)
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_owner_id", "owner_id"),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_team_id", "team_id"),
        CheckConstraint("job_type IN ('python', 'bash')", name="job_type"),
        CheckConstraint("status IN ('active', 'disabled', 'deleted')", name="status"),
        CheckConstraint("(script IS NULL) <> (script_url IS NULL)", name="one_script_source"),
        CheckConstraint("misfire_policy IN ('skip', 'run_latest', 'run_all')", name="misfire_policy"),
        CheckConstraint("concurrency_policy IN ('allow', 'forbid', 'replace')", name="concurrency_policy"),
        CheckConstraint("executor IN ('local', 'kubernetes')", name="executor"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    team_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("teams.id", ondelete="SET NULL"))
    job_type: Mapped[str] = mapped_column(String(50))
    #: inline script; exactly one of ``script`` and ``script_url`` is set
    script: Mapped[str | None] = mapped_column(Text)
    #: Git repository holding the script, with ``script_ref`` and ``script_path``
    script_url: Mapped[str | None] = mapped_column(Text)
    script_ref: Mapped[str | None] = mapped_column(String(255))
    script_path: Mapped[str | None] = mapped_column(String(1024))
    #: cron expression (5 fields, or 6 with leading seconds); NULL for a one-time or on-demand job
    schedule: Mapped[str | None] = mapped_column(String(100))
    #: the single fire time of a one-time job (``schedule`` NULL)
    run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: a schedule fires only from ``start_at`` and until ``end_at``, when set
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    misfire_policy: Mapped[str] = mapped_column(String(20), default="run_latest")
    #: a missed fire time older than this is recorded as missed, never run
    max_lateness_seconds: Mapped[int] = mapped_column(Integer, default=3600)
    concurrency_policy: Mapped[str] = mapped_column(String(20), default="forbid")
    #: with ``allow``: how many runs may be running at once (NULL: no limit)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    #: when the job was paused (to replay the pause on resume, if its misfire policy says so)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timeout_minutes: Mapped[int] = mapped_column(Integer, default=60)
    #: finer than the spec's minutes; when set, it is the timeout
    timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    retry_delay_minutes: Mapped[int] = mapped_column(Integer, default=5)
    #: finer than the spec's minutes; when set, it is the retry delay
    retry_delay_seconds: Mapped[int | None] = mapped_column(Integer)
    #: backoff: attempt n waits the retry delay × 2^(n-2), at most this long
    retry_delay_max_seconds: Mapped[int] = mapped_column(Integer, default=3600)
    #: outcomes that are retried
    retry_on: Mapped[list[str]] = mapped_column(JSONType, default=lambda: list(RETRYABLE_OUTCOMES))
    #: ``local`` or ``kubernetes``; NULL: the cluster default (JOBPLANE_DEFAULT_EXECUTOR)
    executor: Mapped[str | None] = mapped_column(String(20))
    #: kubernetes: the container image of its runs; NULL: JOBPLANE_K8S_IMAGE (Python 3 and Bash)
    image: Mapped[str | None] = mapped_column(String(512))
    #: sandbox: network access, and resource limits per run (spec defaults: 1 CPU, 2 GB)
    network_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    cpu_limit: Mapped[int] = mapped_column(Integer, default=1)
    memory_limit_mb: Mapped[int] = mapped_column(Integer, default=2048)
    cpu_time_limit_seconds: Mapped[int | None] = mapped_column(Integer)
    max_open_files: Mapped[int] = mapped_column(Integer, default=1024)
    max_processes: Mapped[int] = mapped_column(Integer, default=512)
    #: the spec's flag, kept in step with ``concurrency_policy`` (allow ↔ true)
    concurrent_allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(50), default="active")
    notification_emails: Mapped[list[str]] = mapped_column(JSONType, default=list)
    #: encrypted at rest with JOBPLANE_SECRET_KEY: a webhook URL is a credential (spec §7.4)
    notification_slack_webhook: Mapped[str | None] = mapped_column(EncryptedText)
    #: a generic webhook: JSON, signed with HMAC-SHA256 (encrypted at rest too)
    notification_webhook_url: Mapped[str | None] = mapped_column(EncryptedText)
    #: events that notify (app.models.notification.EVENTS)
    notify_on: Mapped[list[str]] = mapped_column(JSONType, default=lambda: list(DEFAULT_EVENTS))
    #: environment variables given to every run (names → values, not secret)
    env: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    #: optimistic locking (spec §3.8); bumped by every change
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}

    @property
    def effective_timeout_seconds(self) -> int:
        return self.timeout_seconds if self.timeout_seconds is not None else self.timeout_minutes * 60
