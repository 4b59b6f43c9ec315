"""The rules a job's fields must meet, checked all at once so every bad field is named."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flask import current_app

from app.errors import InvalidInput
from app.models.base import utcnow
from app.models.job import CONCURRENCY_POLICIES, EXECUTORS, JOB_TYPES, MISFIRE_POLICIES, RETRYABLE_OUTCOMES
from app.models.notification import DEFAULT_EVENTS, EVENTS
from app.notifications.urls import UnsafeUrl, check_shape
from app.services import schedules

#: Limits that keep one job from filling the database.
MAX_NAME = 255
MAX_DESCRIPTION = 10_000
MAX_SCRIPT_BYTES = 1024 * 1024
MAX_URL = 2048
MAX_EMAILS = 50
MAX_ENV_VARS = 200
MAX_TIMEOUT_MINUTES = 7 * 24 * 60
MAX_RETRIES = 5  # spec §3.6: 0–5 retries
MAX_IMAGE = 512

#: A container image reference: [registry[:port]/]path[:tag][@digest], no spaces or shell characters.
_IMAGE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
                    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[a-z0-9]+:[a-fA-F0-9]{32,})?$")

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
    "run_at": None,
    "start_at": None,
    "end_at": None,
    "timezone": "UTC",
    "misfire_policy": "run_latest",
    "max_lateness_seconds": 3600,
    "concurrency_policy": None,
    "max_concurrent": None,
    "timeout_minutes": 60,
    "timeout_seconds": None,
    "max_retries": 0,
    "retry_delay_minutes": 5,
    "retry_delay_seconds": None,
    "retry_delay_max_seconds": 3600,
    "retry_on": ["failed", "timed_out", "lost"],
    "executor": None,
    "image": None,
    "network_enabled": True,
    "cpu_limit": 1,
    "memory_limit_mb": 2048,
    "cpu_time_limit_seconds": None,
    "max_open_files": 1024,
    "max_processes": 512,
    "concurrent_allowed": None,
    "notification_emails": [],
    "notification_slack_webhook": None,
    "notification_webhook_url": None,
    "notify_on": list(DEFAULT_EVENTS),
    "env": {},
}


def validate_job_fields(values: dict[str, Any], *, previous: dict[str, Any] | None = None) -> dict[str, Any]:
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

    _check_executor(errors, values)

    for key in ("script", "script_url", "script_ref", "script_path", "schedule",
                "notification_slack_webhook", "notification_webhook_url", "description"):
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
                trigger = schedules.parse_cron(values["schedule"], values["timezone"])
            except InvalidInput as exc:
                errors.update({k: v[0] for k, v in exc.errors.items()})
            else:
                if trigger.get_next_fire_time(None, utcnow()) is None:
                    errors["schedule"] = (f"{values['schedule']!r} never fires (a date that does not exist, "
                                          "such as 30 February?)")

    _check_timing(errors, values, previous or {})
    _check_policies(errors, values)
    _check_int(errors, values, "timeout_minutes", 1, MAX_TIMEOUT_MINUTES)
    if values.get("timeout_seconds") is not None:
        _check_int(errors, values, "timeout_seconds", 1, MAX_TIMEOUT_MINUTES * 60)
    _check_int(errors, values, "max_retries", 0, MAX_RETRIES)
    _check_int(errors, values, "retry_delay_minutes", 0, 24 * 60)
    _check_retries_and_limits(errors, values)
    if values.get("concurrent_allowed") is not None and not isinstance(values["concurrent_allowed"], bool):
        errors["concurrent_allowed"] = "must be true or false"

    emails = values.get("notification_emails") or []
    if not isinstance(emails, list) or len(emails) > MAX_EMAILS:
        errors["notification_emails"] = f"must be a list of at most {MAX_EMAILS} email addresses"
    else:
        bad = [e for e in emails if not isinstance(e, str) or not _EMAIL.match(e)]
        if bad:
            errors["notification_emails"] = f"not an email address: {', '.join(map(str, bad[:3]))}"
    values["notification_emails"] = emails

    for key, what in (("notification_slack_webhook", "a Slack incoming webhook"),
                      ("notification_webhook_url", "your webhook receiver")):
        url = values.get(key)
        if url is None:
            continue
        if not isinstance(url, str) or len(url) > MAX_URL:
            errors[key] = f"must be the https:// URL of {what} (at most {MAX_URL} characters)"
            continue
        try:
            check_shape(url, current_app.config)
        except UnsafeUrl as problem:
            errors[key] = f"{problem} (the URL of {what})"

    notify_on = values.get("notify_on")
    if not isinstance(notify_on, list) or any(event not in EVENTS for event in notify_on):
        errors["notify_on"] = f"must be a list of events among {', '.join(EVENTS)}"
    else:
        values["notify_on"] = list(dict.fromkeys(notify_on))

    env = values.get("env") or {}
    if not isinstance(env, dict) or len(env) > MAX_ENV_VARS:
        errors["env"] = f"must be an object of at most {MAX_ENV_VARS} NAME: value pairs"
    else:
        for key, value in env.items():
            if not _ENV_NAME.fullmatch(str(key)) or str(key).upper().startswith("JOBPLANE_"):
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


def _check_executor(errors: dict[str, str], values: dict[str, Any]) -> None:
    """``executor``: local, kubernetes, or null (the cluster default); ``image`` only means something
    on Kubernetes, and must be an image reference."""
    if isinstance(values.get("executor"), str) and not values["executor"].strip():
        values["executor"] = None
    if isinstance(values.get("image"), str):
        values["image"] = values["image"].strip() or None
    executor, image = values.get("executor"), values.get("image")
    if executor is not None and executor not in EXECUTORS:
        errors["executor"] = f"must be one of {', '.join(EXECUTORS)}, or null for the cluster default"
    if image is None:
        return
    if not isinstance(image, str) or len(image) > MAX_IMAGE or not _IMAGE.fullmatch(image):
        errors["image"] = ("must be a container image reference such as python:3.12-slim or "
                           f"registry.example.com/team/runner:1.4 (at most {MAX_IMAGE} characters)")
    elif executor == "local":
        errors["image"] = "only applies to the kubernetes executor; remove it or set executor to kubernetes"


def _check_timing(errors: dict[str, str], values: dict[str, Any], previous: dict[str, Any]) -> None:
    """A job fires on a schedule, once at ``run_at``, or only on demand (neither). A ``run_at``
    already in the past is refused, unless it is the one the job already had (an update)."""
    if values.get("schedule") is not None and values.get("run_at") is not None:
        errors["run_at"] = "give either schedule (recurring) or run_at (once), not both"
    run_at = values.get("run_at")
    if run_at is not None:
        if run_at.tzinfo is None:
            errors["run_at"] = "must include a timezone offset, e.g. 2026-12-01T02:00:00+00:00"
        elif run_at < utcnow() - timedelta(seconds=5) and run_at != previous.get("run_at"):
            errors["run_at"] = "is in the past; use POST /api/v1/jobs/{id}/run to run a job now"
    for key in ("start_at", "end_at"):
        if values.get(key) is not None and values[key].tzinfo is None:
            errors[key] = "must include a timezone offset, e.g. 2026-12-01T00:00:00+00:00"
    start, end = values.get("start_at"), values.get("end_at")
    if start and end and start.tzinfo and end.tzinfo and end <= start:
        errors["end_at"] = "must be after start_at"


def _check_policies(errors: dict[str, str], values: dict[str, Any]) -> None:
    """Misfire and concurrency policies; ``concurrent_allowed`` is the spec's alias (allow/forbid)."""
    if values.get("misfire_policy") not in MISFIRE_POLICIES:
        errors["misfire_policy"] = f"must be one of {', '.join(MISFIRE_POLICIES)}"
    _check_int(errors, values, "max_lateness_seconds", 1, 31 * 24 * 3600)
    policy = values.get("concurrency_policy")
    allowed = values.get("concurrent_allowed")
    if policy is None:
        policy = "allow" if allowed else "forbid"
    elif policy not in CONCURRENCY_POLICIES:
        errors["concurrency_policy"] = f"must be one of {', '.join(CONCURRENCY_POLICIES)}"
        return
    elif allowed is not None and allowed != (policy == "allow"):
        errors["concurrent_allowed"] = (f"contradicts concurrency_policy {policy!r}; give one of them "
                                        "(concurrent_allowed true means allow)")
    values["concurrency_policy"] = policy
    values["concurrent_allowed"] = policy == "allow"
    if values.get("max_concurrent") is not None:
        if policy != "allow":
            errors["max_concurrent"] = "only applies with concurrency_policy allow"
        else:
            _check_int(errors, values, "max_concurrent", 1, 1000)


def _check_retries_and_limits(errors: dict[str, str], values: dict[str, Any]) -> None:
    if values.get("retry_delay_seconds") is not None:
        _check_int(errors, values, "retry_delay_seconds", 0, 24 * 3600)
    _check_int(errors, values, "retry_delay_max_seconds", 1, 7 * 24 * 3600)
    retry_on = values.get("retry_on")
    if not isinstance(retry_on, list) or not set(retry_on) <= set(RETRYABLE_OUTCOMES):
        errors["retry_on"] = f"must be a list of outcomes among {', '.join(RETRYABLE_OUTCOMES)}"
    if not isinstance(values.get("network_enabled"), bool):
        errors["network_enabled"] = "must be true or false"
    _check_int(errors, values, "cpu_limit", 1, 64)
    _check_int(errors, values, "memory_limit_mb", 64, 256 * 1024)
    if values.get("cpu_time_limit_seconds") is not None:
        _check_int(errors, values, "cpu_time_limit_seconds", 1, 7 * 24 * 3600)
    _check_int(errors, values, "max_open_files", 16, 1_048_576)
    _check_int(errors, values, "max_processes", 1, 100_000)


def _check_int(errors: dict[str, str], values: dict[str, Any], key: str, low: int, high: int) -> None:
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors[key] = f"must be a whole number from {low} to {high}"
