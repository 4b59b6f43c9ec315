"""Marshmallow schemas of the API: field names as in the spec (§5.1, §5.6).

Schemas check types and required fields and reject unknown fields; the rules (cron syntax,
timezones, limits) live in the services, so the CLI and UI obey them too.
"""

from __future__ import annotations

from marshmallow import Schema, fields

from app.services.masking import masked_url

#: A job as a client sends it: the request body example of the document.
JOB_EXAMPLE = {
    "name": "nightly-backup", "description": "dump the orders database to object storage", "job_type": "bash",
    "script": "pg_dump orders | gzip > /backups/orders.sql.gz", "schedule": "30 2 * * *",
    "timezone": "Europe/Berlin", "timeout_minutes": 60, "max_retries": 2, "retry_delay_minutes": 5,
    "notification_emails": ["oncall@example.com"], "notify_on": ["job_failed", "job_timeout", "job_recovered"],
    "env": {"BACKUP_BUCKET": "orders-backups"},
}


class JobCreateSchema(Schema):
    name = fields.String(required=True, metadata={"example": "nightly-backup"})
    description = fields.String(allow_none=True)
    job_type = fields.String(required=True, metadata={"enum": ["python", "bash"], "example": "bash"})
    script = fields.String(allow_none=True, metadata={"description": "inline script; or give script_url",
                                                      "example": "echo hello"})
    script_url = fields.String(allow_none=True, metadata={"description": "Git repository of the script"})
    script_ref = fields.String(allow_none=True, metadata={"description": "branch, tag or commit"})
    script_path = fields.String(allow_none=True, metadata={"description": "script's path in the repository"})
    schedule = fields.String(allow_none=True, metadata={
        "description": "cron: 5 fields, or 6 with leading seconds; null for on-demand jobs",
        "example": "*/5 * * * *"})
    run_at = fields.AwareDateTime(allow_none=True, metadata={
        "description": "one-time job: the single fire time (with schedule null)"})
    start_at = fields.AwareDateTime(allow_none=True, metadata={"description": "the schedule fires from then"})
    end_at = fields.AwareDateTime(allow_none=True, metadata={"description": "the schedule fires until then"})
    timezone = fields.String(metadata={"description": "IANA timezone of the schedule", "example": "UTC"})
    misfire_policy = fields.String(metadata={
        "enum": ["skip", "run_latest", "run_all"],
        "description": "fire times missed while no scheduler ran: skip them, run the latest once "
                       "(default), or run each (capped)"})
    max_lateness_seconds = fields.Integer(strict=True, metadata={
        "description": "a missed fire time later than this is never run (default 3600)"})
    concurrency_policy = fields.String(metadata={
        "enum": ["allow", "forbid", "replace"],
        "description": "a fire while a run is active: allow it, skip it (forbid), or cancel the active run "
                       "(replace); default from concurrent_allowed"})
    max_concurrent = fields.Integer(strict=True, allow_none=True, metadata={
        "description": "with allow: how many runs at once"})
    timeout_minutes = fields.Integer(strict=True, metadata={"example": 60})
    timeout_seconds = fields.Integer(strict=True, allow_none=True, metadata={
        "description": "a timeout finer than minutes; when set, it replaces timeout_minutes"})
    max_retries = fields.Integer(strict=True, metadata={"example": 0})
    retry_delay_minutes = fields.Integer(strict=True, metadata={"example": 5})
    retry_delay_seconds = fields.Integer(strict=True, allow_none=True, metadata={
        "description": "a retry delay finer than minutes; when set, it replaces retry_delay_minutes"})
    retry_delay_max_seconds = fields.Integer(strict=True, metadata={
        "description": "backoff cap: attempt n waits the delay × 2^(n-2), at most this long (default 3600)"})
    retry_on = fields.List(fields.String(), metadata={
        "description": "outcomes that are retried, among failed, timed_out, lost (default all three)"})
    executor = fields.String(allow_none=True, metadata={
        "enum": ["local", "kubernetes", None],
        "description": "where runs execute: local (a sandboxed process on a worker) or kubernetes (a Kubernetes "
                       "Job per run); null: the cluster default"})
    image = fields.String(allow_none=True, metadata={
        "description": "kubernetes: the container image of the runs (null: the runner image, with Python 3 "
                       "and Bash)"})
    network_enabled = fields.Boolean(metadata={"description": "network access for the run (default true)"})
    cpu_limit = fields.Integer(strict=True, metadata={"description": "CPUs the run may use (default 1)"})
    memory_limit_mb = fields.Integer(strict=True, metadata={"description": "memory limit (default 2048)"})
    cpu_time_limit_seconds = fields.Integer(strict=True, allow_none=True)
    max_open_files = fields.Integer(strict=True)
    max_processes = fields.Integer(strict=True)
    concurrent_allowed = fields.Boolean()
    notification_emails = fields.List(fields.String())
    notification_slack_webhook = fields.String(allow_none=True, metadata={
        "description": "Slack incoming webhook (https; stored encrypted)"})
    notification_webhook_url = fields.String(allow_none=True, metadata={
        "description": "a generic webhook: JSON signed with HMAC-SHA256 (X-Jobplane-Signature)"})
    notify_on = fields.List(fields.String(), metadata={
        "description": "events that notify: job_failed, job_timeout, job_lost, job_recovered (the default) "
                       "and job_succeeded"})
    env = fields.Dict(keys=fields.String(), values=fields.String())


class JobUpdateSchema(JobCreateSchema):
    """``PATCH``: any subset of the fields; ``version`` (or ``If-Match``) guards against lost updates."""

    version = fields.Integer(metadata={"description": "the version you read; 409 if the job changed since"})

    def on_bind_field(self, field_name, field_obj):
        field_obj.required = False


class JobReplaceSchema(JobCreateSchema):
    """``PUT``: the whole job; fields left out take their defaults."""

    version = fields.Integer(metadata={"description": "the version you read; 409 if the job changed since"})


class JobSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    description = fields.String(allow_none=True)
    owner_id = fields.UUID()
    team_id = fields.UUID(allow_none=True)
    job_type = fields.String()
    script = fields.String(allow_none=True)
    script_url = fields.String(allow_none=True)
    script_ref = fields.String(allow_none=True)
    script_path = fields.String(allow_none=True)
    schedule = fields.String(allow_none=True)
    run_at = fields.DateTime(allow_none=True)
    start_at = fields.DateTime(allow_none=True)
    end_at = fields.DateTime(allow_none=True)
    timezone = fields.String()
    misfire_policy = fields.String()
    max_lateness_seconds = fields.Integer()
    concurrency_policy = fields.String()
    max_concurrent = fields.Integer(allow_none=True)
    paused_at = fields.DateTime(allow_none=True)
    timeout_minutes = fields.Integer()
    timeout_seconds = fields.Integer(allow_none=True)
    max_retries = fields.Integer()
    retry_delay_minutes = fields.Integer()
    retry_delay_seconds = fields.Integer(allow_none=True)
    retry_delay_max_seconds = fields.Integer()
    retry_on = fields.List(fields.String())
    executor = fields.String(allow_none=True)
    image = fields.String(allow_none=True)
    network_enabled = fields.Boolean()
    cpu_limit = fields.Integer()
    memory_limit_mb = fields.Integer()
    cpu_time_limit_seconds = fields.Integer(allow_none=True)
    max_open_files = fields.Integer()
    max_processes = fields.Integer()
    concurrent_allowed = fields.Boolean()
    status = fields.String()
    notification_emails = fields.List(fields.String())
    notification_slack_webhook = fields.Method("_masked_webhook", allow_none=True, metadata={
        "description": "masked: a webhook URL is a credential", "type": "string"})
    notification_webhook_url = fields.Method("_masked_generic_webhook", allow_none=True, metadata={
        "description": "masked: a webhook URL is a credential", "type": "string"})
    notify_on = fields.List(fields.String())
    env = fields.Dict(keys=fields.String(), values=fields.String())
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    version = fields.Integer()

    def _masked_webhook(self, job) -> str | None:
        return masked_url(job.notification_slack_webhook)

    def _masked_generic_webhook(self, job) -> str | None:
        return masked_url(job.notification_webhook_url)


class ExecutionSchema(Schema):
    id = fields.UUID()
    job_id = fields.UUID()
    status = fields.String()
    scheduled_for = fields.DateTime()
    triggered_by = fields.String()
    attempt = fields.Integer()
    retry_count = fields.Function(lambda e: e.attempt - 1, metadata={"type": "integer"})
    started_at = fields.DateTime(allow_none=True)
    completed_at = fields.DateTime(allow_none=True)
    duration_seconds = fields.Float(allow_none=True)
    exit_code = fields.Integer(allow_none=True)
    peak_memory_kb = fields.Integer(allow_none=True)
    cpu_seconds = fields.Float(allow_none=True)
    sandboxed = fields.Boolean(allow_none=True)
    executor = fields.String(allow_none=True, metadata={"description": "local or kubernetes; null until claimed"})
    reattach_count = fields.Integer(metadata={
        "description": "kubernetes: times the run was taken over by another worker after its worker died"})
    first_attempt_id = fields.UUID(allow_none=True)
    due_at = fields.DateTime(allow_none=True)
    error_message = fields.String(allow_none=True)
    reason = fields.String(allow_none=True, metadata={
        "description": "why it was skipped, missed or cancelled"})
    fired_by = fields.String(allow_none=True)
    worker_id = fields.String(allow_none=True)
    log_bytes = fields.Integer()
    log_truncated = fields.Boolean()
    created_at = fields.DateTime()


class JobListQuerySchema(Schema):
    """Filters and order of ``GET /jobs``; the allowed values are checked by the service."""

    status = fields.String(metadata={"enum": ["active", "disabled"], "description": "disabled: paused jobs"})
    owner = fields.String(metadata={"description": "the owner's user id or email"})
    team = fields.UUID(metadata={"description": "the team's id"})
    q = fields.String(metadata={"description": "a part of the job's name, in any case"})
    job_type = fields.String(metadata={"enum": ["python", "bash"]})
    sort = fields.String(load_default="-created_at", metadata={
        "description": "name, created_at, updated_at, status or job_type; a leading - for descending "
                       "(default -created_at); ties are broken by id"})


_AWARE = {"invalid_awareness": "must have a UTC offset, e.g. 2026-11-28T02:00:00+00:00 or ...Z; a time "
                               "without one is ambiguous"}


class ExecutionQuerySchema(Schema):
    status = fields.List(fields.String(), metadata={
        "description": "statuses, repeated or comma-separated, e.g. skipped,missed: the fire ledger's "
                       "answer to 'did my 02:00 run happen, and if not, why'"})
    trigger = fields.String(metadata={"enum": ["scheduled", "manual"], "description": "what started it"})
    scheduled_after = fields.AwareDateTime(error_messages=_AWARE, metadata={
        "description": "fire time at or after this (ISO 8601 with offset)"})
    scheduled_before = fields.AwareDateTime(error_messages=_AWARE, metadata={
        "description": "fire time before this (ISO 8601 with offset)"})
    started_after = fields.AwareDateTime(error_messages=_AWARE, metadata={
        "description": "started at or after this (ISO 8601 with offset)"})
    started_before = fields.AwareDateTime(error_messages=_AWARE, metadata={
        "description": "started before this (ISO 8601 with offset)"})
    sort = fields.String(load_default="-scheduled_for", metadata={
        "description": "scheduled_for, started_at or duration; a leading - for descending (default "
                       "-scheduled_for); runs not started yet come last; ties are broken by id"})


class JobMetricsQuerySchema(Schema):
    days = fields.Integer(load_default=30, metadata={"description": "how many days back, 1 to 90 (default 30)"})


class ExecutionDetailSchema(ExecutionSchema):
    logs = fields.String(metadata={"description": "the stored output (stdout and stderr, in order)"})


class _RunCountsSchema(Schema):
    total = fields.Integer()
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer(),
                            metadata={"description": "every execution status, with its count (0 included)"})


class _DurationsSchema(Schema):
    p50 = fields.Float(allow_none=True)
    p95 = fields.Float(allow_none=True)
    max = fields.Float(allow_none=True)


class _LastRunSchema(Schema):
    id = fields.String()
    status = fields.String()
    scheduled_for = fields.String()
    started_at = fields.String()
    completed_at = fields.String(allow_none=True)
    duration_seconds = fields.Float(allow_none=True)


class _DayMetricsSchema(Schema):
    date = fields.String(metadata={"description": "a UTC day, e.g. 2026-11-28"})
    succeeded = fields.Integer()
    failed = fields.Integer(metadata={"description": "failed, timed out or lost"})
    other = fields.Integer(metadata={"description": "queued, running, cancelled, skipped or missed"})
    p50_seconds = fields.Float(allow_none=True, metadata={"description": "median duration of the day's runs"})


class JobMetricsSchema(Schema):
    job_id = fields.String()
    days = fields.Integer()
    since = fields.String(metadata={"description": "start of the window: midnight UTC, days-1 days ago"})
    until = fields.String(metadata={"description": "end of the window: now"})
    runs = fields.Nested(_RunCountsSchema)
    success_rate = fields.Float(allow_none=True, metadata={
        "description": "success / (success + failed + timed_out + lost), 0 to 1; null without outcomes"})
    duration_seconds = fields.Nested(_DurationsSchema, metadata={"description": "over finished runs"})
    last_run = fields.Nested(_LastRunSchema, allow_none=True, metadata={
        "description": "the latest execution that started, whenever it was"})
    series = fields.List(fields.Nested(_DayMetricsSchema), metadata={"description": "one entry per day, oldest first"})
