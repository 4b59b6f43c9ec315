"""Jobs: creating, reading and listing them under the spec's rules (§5.1, §5.6, §9.1)."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from sqlalchemy import func, select

from app.errors import InvalidInput, NotFound
from app.extensions import db
from app.models import Job
from app.models.job import JOB_TYPES
from app.services import access, audit, schedules
from app.services.actors import Actor
from app.services.scheduler_signal import announce_job_change

#: Limits that keep one job from filling the database.
MAX_NAME = 255
MAX_DESCRIPTION = 10_000
MAX_SCRIPT_BYTES = 1024 * 1024
MAX_URL = 2048
MAX_EMAILS = 50
MAX_ENV_VARS = 200
MAX_TIMEOUT_MINUTES = 7 * 24 * 60
MAX_RETRIES = 5  # spec §3.6: 0–5 retries

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

#: Fields a job is created from, with their defaults (spec §5.6).
JOB_FIELDS: dict[str, Any] = {
    "name": None,
    "description": None,
    "job_type": None,
    "script": None,
    "script_url": None,
    "script_ref": None,
    "script_path": None,
    "schedule": None,
    "timezone": "UTC",
    "timeout_minutes": 60,
    "timeout_seconds": None,
    "max_retries": 0,
    "retry_delay_minutes": 5,
    "concurrent_allowed": False,
    "notification_emails": [],
    "notification_slack_webhook": None,
    "env": {},
}


def create_job(*, actor: Actor, data: dict[str, Any]) -> Job:
    """Create a job owned by the acting user, audited and announced to the scheduler.

    Raises:
      Forbidden: the actor's role may not create jobs.
      InvalidInput: a field breaks a rule; every bad field is named.
    """
    access.require_can_create_job(actor)
    values = {**JOB_FIELDS, **data}
    unknown = set(data) - set(JOB_FIELDS)
    if unknown:
        raise InvalidInput({field: "unknown field" for field in unknown})
    values = validate_job_fields(values)
    job = Job(**values, owner_id=actor.user.id, team_id=actor.user.team_id, status="active")
    db.session.add(job)
    db.session.flush()
    audit.record(actor=actor, action="job_created", resource_type="job", resource_id=job.id,
                 changes={k: {"old": None, "new": v} for k, v in values.items() if v not in (None, [], {})})
    announce_job_change(job.id)
    return job


def validate_job_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Check every field of a job, collecting all errors before raising.

    Returns:
      the values, normalized (names stripped, empty strings as None).

    Raises:
      InvalidInput: naming each bad field and what would be accepted.
    """
    errors: dict[str, str] = {}
    values = dict(values)

    name = values.get("name")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = "is required: give the job a name"
    elif len(name.strip()) > MAX_NAME:
        errors["name"] = f"must be at most {MAX_NAME} characters"
    else:
        values["name"] = name.strip()

    if values.get("description") is not None and len(values["description"]) > MAX_DESCRIPTION:
        errors["description"] = f"must be at most {MAX_DESCRIPTION} characters"

    if values.get("job_type") not in JOB_TYPES:
        errors["job_type"] = f"must be one of {', '.join(JOB_TYPES)}"

    for key in ("script", "script_url", "script_ref", "script_path", "schedule",
                "notification_slack_webhook", "description"):
        if isinstance(values.get(key), str) and not values[key].strip():
            values[key] = None
    script, script_url = values.get("script"), values.get("script_url")
    if (script is None) == (script_url is None):
        message = "give exactly one of script (inline) or script_url (a Git repository)"
        errors["script"] = errors["script_url"] = message
    elif script is not None and len(script.encode()) > MAX_SCRIPT_BYTES:
        errors["script"] = f"must be at most {MAX_SCRIPT_BYTES // 1024} KiB"
    elif script_url is not None:
        if len(script_url) > MAX_URL:
            errors["script_url"] = f"must be at most {MAX_URL} characters"
        elif not values.get("script_path"):
            errors["script_path"] = "is required with script_url: the script's path in the repository"
    if script is not None and (values.get("script_ref") or values.get("script_path")):
        errors["script_ref" if values.get("script_ref") else "script_path"] = \
            "only applies to script_url; remove it or use script_url"

    try:
        schedules.parse_timezone(values.get("timezone"))
    except InvalidInput as exc:
        errors.update({k: v[0] for k, v in exc.errors.items()})
    else:
        if values.get("schedule") is not None:
            try:
                schedules.parse_cron(values["schedule"], values["timezone"])
            except InvalidInput as exc:
                errors.update({k: v[0] for k, v in exc.errors.items()})

    _check_int(errors, values, "timeout_minutes", 1, MAX_TIMEOUT_MINUTES)
    if values.get("timeout_seconds") is not None:
        _check_int(errors, values, "timeout_seconds", 1, MAX_TIMEOUT_MINUTES * 60)
    _check_int(errors, values, "max_retries", 0, MAX_RETRIES)
    _check_int(errors, values, "retry_delay_minutes", 0, 24 * 60)
    if not isinstance(values.get("concurrent_allowed"), bool):
        errors["concurrent_allowed"] = "must be true or false"

    emails = values.get("notification_emails") or []
    if not isinstance(emails, list) or len(emails) > MAX_EMAILS:
        errors["notification_emails"] = f"must be a list of at most {MAX_EMAILS} email addresses"
    else:
        bad = [e for e in emails if not isinstance(e, str) or not _EMAIL.match(e)]
        if bad:
            errors["notification_emails"] = f"not an email address: {', '.join(map(str, bad[:3]))}"
    values["notification_emails"] = emails

    webhook = values.get("notification_slack_webhook")
    if webhook is not None and (len(webhook) > MAX_URL or not webhook.startswith(("https://", "http://"))):
        errors["notification_slack_webhook"] = "must be an https:// URL of a Slack incoming webhook"

    env = values.get("env") or {}
    if not isinstance(env, dict) or len(env) > MAX_ENV_VARS:
        errors["env"] = f"must be an object of at most {MAX_ENV_VARS} NAME: value pairs"
    else:
        for key, value in env.items():
            if not _ENV_NAME.match(str(key)) or str(key).upper().startswith("JOBPLANE_"):
                errors["env"] = (f"variable name {key!r} is not allowed: use letters, digits and _, "
                                 "not starting with a digit or JOBPLANE_")
                break
            if not isinstance(value, str):
                errors["env"] = f"value of {key} must be a string"
                break
    values["env"] = env

    if errors:
        raise InvalidInput(errors)
    return values


def _check_int(errors: dict[str, str], values: dict[str, Any], key: str, low: int, high: int) -> None:
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors[key] = f"must be a whole number from {low} to {high}"


def get_job(*, actor: Actor, job_id: UUID) -> Job:
    """The job, if the actor may see it.

    Raises:
      NotFound: no such job, or one the actor may not see (not told apart, so ids leak nothing).
    """
    job = db.session.get(Job, job_id)
    if job is None or job.status == "deleted" or not access.can_view_job(actor, job):
        raise NotFound(f"job {job_id} not found")
    return job


def list_jobs(*, actor: Actor, limit: int = 100, offset: int = 0) -> tuple[list[Job], int]:
    """The jobs the actor may see, newest first, and how many there are in all."""
    query = access.visible_jobs(actor, select(Job).where(Job.status != "deleted"))
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    jobs = db.session.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)).all()
    return list(jobs), total


def schedulable_jobs() -> list[Job]:
    """Every job the scheduler should have a trigger for: active and with a schedule."""
    return list(db.session.scalars(
        select(Job).where(Job.status == "active", Job.schedule.is_not(None))).all())
