"""The job form: a job's fields as form strings, and a submitted form back into service data.

The form turns text into the types the services take (numbers, lists, aware times) and reports
text it cannot read per field; every rule about the values themselves stays in the services, so
the form, the API and the CLI refuse the same things with the same messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.models import Job
from app.models.notification import DEFAULT_EVENTS, EVENTS

JOB_TYPES = ("bash", "python")
CONCURRENCY_POLICIES = ("forbid", "allow", "replace")
MISFIRE_POLICIES = ("run_latest", "skip", "run_all")
#: ``default`` leaves the choice to the cluster (JOBPLANE_EXECUTOR_DEFAULT)
EXECUTORS = ("default", "local", "kubernetes")
#: cron presets offered beside the schedule field: (label, expression)
CRON_PRESETS = (("Every 5 minutes", "*/5 * * * *"), ("Hourly", "0 * * * *"), ("Daily 02:00", "0 2 * * *"),
                ("Weekdays 09:00", "0 9 * * 1-5"), ("Weekly, Sunday 03:00", "0 3 * * 0"),
                ("Monthly, 1st 00:00", "0 0 1 * *"))
#: what each notification event means, for the checkboxes
EVENT_LABELS = {"job_failed": "failed (after its last attempt)", "job_timeout": "timed out",
                "job_lost": "lost (its worker died)", "job_recovered": "succeeded after failing",
                "job_succeeded": "succeeded"}

_TEXT = ("name", "description", "job_type", "script", "timezone", "concurrency_policy", "misfire_policy", "executor",
         "image")
_WHOLE_NUMBERS = ("timeout_minutes", "timeout_seconds", "max_retries", "retry_delay_minutes", "max_concurrent",
                  "max_lateness_seconds", "cpu_limit", "memory_limit_mb")
#: numbers that may be left empty (no value) rather than taking the default
_OPTIONAL_NUMBERS = ("timeout_seconds", "max_concurrent")
_TIMES = ("run_at", "start_at", "end_at")
_WEBHOOKS = ("notification_slack_webhook", "notification_webhook_url")


def blank() -> dict[str, Any]:
    """The form of a new job: Jobplane's defaults."""
    return {"name": "", "description": "", "job_type": "bash", "script": "", "when": "cron", "schedule": "0 2 * * *",
            "run_at": "", "start_at": "", "end_at": "", "timezone": "UTC", "timeout_minutes": "60",
            "timeout_seconds": "", "max_retries": "0", "retry_delay_minutes": "5", "concurrency_policy": "forbid",
            "max_concurrent": "", "misfire_policy": "run_latest", "max_lateness_seconds": "3600",
            "cpu_limit": "1", "memory_limit_mb": "2048", "executor": "default", "image": "", "network_enabled": True, "notification_emails": "",
            "notify_on": list(DEFAULT_EVENTS), "env": "", "version": "",
            "has_slack_webhook": False, "has_webhook_url": False}


def from_job(job: Job) -> dict[str, Any]:
    """A stored job as the form shows it; webhook URLs are never sent back to the browser."""
    zone = _zone(job.timezone)
    form = {field: "" if getattr(job, field) is None else str(getattr(job, field)) for field in _TEXT + _WHOLE_NUMBERS}
    form.update(
        executor=job.executor or "default",
        when="cron" if job.schedule else "once", schedule=job.schedule or "",
        network_enabled=job.network_enabled, notification_emails=", ".join(job.notification_emails or []),
        notify_on=list(job.notify_on or []), env="\n".join(f"{k}={v}" for k, v in (job.env or {}).items()),
        version=str(job.version), has_slack_webhook=bool(job.notification_slack_webhook),
        has_webhook_url=bool(job.notification_webhook_url),
        **{field: _local_input(getattr(job, field), zone) for field in _TIMES})
    return form


def parse(form: Mapping[str, Any], *, getlist) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:
    """Read a submitted form.

    Parameters:
      form: the request's form fields.
      getlist: returns every value of a repeated field (checkboxes).

    Returns:
      tuple: the form as typed (to show again), the data for ``create_job``/``update_job``
      (webhook fields only when changed) and the fields whose text could not be read.
    """
    shown = blank()
    shown.update({key: form.get(key, "") for key in shown if isinstance(shown[key], str)})
    shown["network_enabled"] = form.get("network_enabled") == "on"
    shown["notify_on"] = getlist("notify_on")
    errors: dict[str, list[str]] = {}
    data: dict[str, Any] = {field: shown[field].strip() if field != "script" else shown[field] for field in _TEXT}
    data["description"] = data["description"] or None
    data["executor"] = None if data["executor"] in ("", "default") else data["executor"]
    data["image"] = data["image"] or None
    for field in _WHOLE_NUMBERS:
        text = shown[field].strip()
        if not text and field in _OPTIONAL_NUMBERS:
            data[field] = None
        elif text.lstrip("-").isdigit():
            data[field] = int(text)
        else:
            errors[field] = ["must be a whole number"]
    zone = _zone(data["timezone"])
    for field in _TIMES:
        data[field] = _aware(shown[field], zone, field, errors)
    if shown["when"] == "once":
        data["schedule"] = None
        if data["run_at"] is None and "run_at" not in errors:
            errors["run_at"] = ["is required for a job that runs once: pick a date and time"]
    else:
        data["schedule"], data["run_at"] = shown["schedule"].strip(), None
    data["network_enabled"] = shown["network_enabled"]
    data["notification_emails"] = [a.strip() for a in shown["notification_emails"].replace("\n", ",").split(",")
                                   if a.strip()]
    data["notify_on"] = [event for event in shown["notify_on"] if event in EVENTS] or []
    data["env"] = _env(shown["env"], errors)
    for field in _WEBHOOKS:  # empty means "keep what is stored"; the remove box clears it
        if form.get(f"remove_{field}") == "on":
            data[field] = None
        elif (form.get(field) or "").strip():
            data[field] = form[field].strip()
    return shown, data, errors


def _env(text: str, errors: dict[str, list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            errors["env"] = [f"line {number} is not NAME=value"]
            continue
        env[name.strip()] = value
    return env


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")  # the services name a bad timezone; times are read as UTC meanwhile


def _aware(text: str, zone: ZoneInfo, field: str, errors: dict[str, list[str]]) -> datetime | None:
    """A ``datetime-local`` value is a wall-clock time in the job's timezone."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=zone)
    except ValueError:
        errors[field] = ["must be a date and time such as 2026-12-01T02:00"]
        return None


def _local_input(value: datetime | None, zone: ZoneInfo) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo("UTC"))
    return value.astimezone(zone).strftime("%Y-%m-%dT%H:%M")
