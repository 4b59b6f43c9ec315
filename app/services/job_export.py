"""Job definitions as YAML: exporting jobs, and applying a file of them (``jobplane jobs export``
and ``jobs apply``), so jobs can be kept in Git and moved between installations.

A definition holds every field a user sets (``job_rules.JOB_FIELDS``), the owner's email and
whether the job is paused. It never holds a secret value: the job's secrets appear by name only,
and webhook URLs (credentials) masked, as the API shows them. Applying goes through
``app.services.jobs`` (create, update, pause, resume), so validation, audit and the scheduler's
signal apply exactly as through the API. A job is matched by name and owner.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import yaml
from sqlalchemy import func, select

from app.errors import InvalidInput, JobplaneError, NotFound
from app.extensions import db
from app.models import Job, JobSecret, User
from app.services import access, jobs, masking, users
from app.services.actors import Actor
from app.services.job_rules import JOB_FIELDS

#: Fields of a definition besides the job's own; ``secrets`` is informational (names only).
EXTRA_FIELDS = ("owner", "paused", "secrets")
#: Fields stored as timestamps, written as ISO 8601 text.
DATETIME_FIELDS = ("run_at", "start_at", "end_at")
#: What ``masking.masked_url`` makes of a URL: the file holds no credential, only its shape.
_MASKED_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*/\*\*\*\*.{0,4}$")


def definition(job: Job) -> dict[str, Any]:
    """A job as a definition: name, owner, paused, every user-set field, secret names."""
    owner = db.session.get(User, job.owner_id)
    values: dict[str, Any] = {"name": job.name, "owner": owner.email, "paused": job.status == "disabled"}
    for key in JOB_FIELDS:
        if key == "name":
            continue
        value = getattr(job, key)
        if key in masking.CREDENTIAL_FIELDS:
            value = masking.masked_url(value)
        elif key in DATETIME_FIELDS and value is not None:
            value = value.isoformat()
        values[key] = value
    values["secrets"] = list(db.session.scalars(select(JobSecret.name).where(JobSecret.job_id == job.id)
                                                .order_by(JobSecret.name)))
    return values


def export_jobs(*, actor: Actor, owner_email: str | None = None) -> list[dict[str, Any]]:
    """The definitions of the jobs the actor may see (of one owner when given), by owner and name.

    Raises:
      NotFound: no user with ``owner_email``.
    """
    return [definition(job) for job in select_jobs(actor=actor, owner_email=owner_email)]


def select_jobs(*, actor: Actor, owner_email: str | None = None) -> list[Job]:
    """The jobs the actor may see (not deleted), of one owner when given, by owner email and name."""
    query = access.visible_jobs(actor, select(Job).join(User, User.id == Job.owner_id)
                                .where(Job.status != "deleted"))
    if owner_email is not None:
        query = query.where(Job.owner_id == users.find_by_email(owner_email).id)
    return list(db.session.scalars(query.order_by(func.lower(User.email), Job.name, Job.created_at, Job.id)))


class _Dumper(yaml.SafeDumper):
    """Scripts and other multi-line text as YAML literal blocks, readable and diffable."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _text)


def dump_yaml(definitions: list[dict[str, Any]]) -> str:
    return yaml.dump({"jobs": definitions}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def load_yaml(text: str) -> list[dict[str, Any]]:
    """The definitions in a file written by ``dump_yaml`` (or by hand in its shape).

    Raises:
      InvalidInput: not YAML, or not ``jobs:`` followed by a list of mappings.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput({"file": f"is not valid YAML: {exc}"}) from None
    if not isinstance(document, dict) or set(document) != {"jobs"} or not isinstance(document["jobs"], list):
        raise InvalidInput({"file": "must hold `jobs:` and a list of job definitions, as `jobplane jobs export` "
                                    "writes"})
    for index, entry in enumerate(document["jobs"]):
        if not isinstance(entry, dict):
            raise InvalidInput({f"jobs[{index}]": "must be a mapping of field: value"})
    return document["jobs"]


@dataclass
class JobChange:
    """What applying one definition did (or, in a dry run, would do)."""

    name: str
    owner: str
    #: ``created``, ``updated`` or ``unchanged``
    action: str
    job_id: UUID
    diff: str
    #: secrets the definition names that the job does not have (values are never in a file)
    missing_secrets: list[str] = field(default_factory=list)


def apply_definitions(*, actor: Actor, definitions: list[dict[str, Any]], source: str) -> list[JobChange]:
    """Create or update a job for each definition, matched by name and owner. Every definition is
    checked; if any is wrong, the error names each bad job and field and the caller's transaction
    must be rolled back (the CLI does), so a file applies wholly or not at all.

    Parameters:
      actor: who applies (the admin CLI). Jobs are created by their owner, so the owner must
        be allowed to create jobs; the audit row names the owner and the actor's label.
      source: the file's name, for the diffs.

    Raises:
      InvalidInput: keys ``<job> (<owner>).<field>``; nothing must be committed.
    """
    errors: dict[str, list[str]] = {}
    changes: list[JobChange] = []
    seen: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(definitions):
        where = f"jobs[{index}] {entry.get('name')!r} ({entry.get('owner')})"
        try:
            key = _identity(entry)
            if key in seen:
                raise InvalidInput({"name": f"jobs[{seen[key]}] defines the same job (name and owner); "
                                            "keep one of them"})
            seen[key] = index
            changes.append(_apply_one(actor, entry, source))
        except InvalidInput as exc:
            for name, messages in exc.errors.items():
                errors[f"{where}.{name}"] = messages
        except JobplaneError as exc:
            errors[where] = [exc.message]
    if errors:
        raise InvalidInput(errors)
    return changes


def _identity(entry: dict[str, Any]) -> tuple[str, str]:
    problems = {}
    unknown = set(entry) - set(JOB_FIELDS) - set(EXTRA_FIELDS)
    for name in sorted(unknown):
        problems[str(name)] = "unknown field; the fields are those `jobplane jobs export` writes"
    if not isinstance(entry.get("name"), str) or not entry["name"].strip():
        problems["name"] = "is required: the job's name"
    if not isinstance(entry.get("owner"), str) or not entry["owner"].strip():
        problems["owner"] = "is required: the email of the user who owns the job"
    if not isinstance(entry.get("paused", False), bool):
        problems["paused"] = "must be true or false"
    secrets = entry.get("secrets", [])
    if not isinstance(secrets, list) or not all(isinstance(name, str) for name in secrets):
        problems["secrets"] = "must be a list of secret names"
    if problems:
        raise InvalidInput(problems)
    return entry["name"].strip(), entry["owner"].strip().lower()


def _apply_one(actor: Actor, entry: dict[str, Any], source: str) -> JobChange:
    try:
        owner = users.find_by_email(entry["owner"].strip())
    except NotFound as exc:
        raise InvalidInput({"owner": exc.message}) from None
    name = entry["name"].strip()
    found = list(db.session.scalars(select(Job).where(Job.owner_id == owner.id, Job.name == name,
                                                      Job.status != "deleted")))
    if len(found) > 1:
        raise InvalidInput({"name": f"{owner.email} has {len(found)} jobs named {name!r}; rename all but one "
                                    "so the file can tell them apart"})
    job = found[0] if found else None
    data = _job_data(entry, job)
    before = definition(job) if job is not None else None
    if job is None:
        if not owner.is_active:
            raise InvalidInput({"owner": f"{owner.email} is disabled; enable them (`jobplane users enable`) "
                                         "or give another owner"})
        as_owner = Actor(user=owner, user_agent=f"jobplane-cli ({actor.label})" if actor.label else "jobplane-cli")
        job = jobs.create_job(actor=as_owner, data=data)
    else:
        job = jobs.update_job(actor=actor, job_id=job.id, data=data, partial=False, expected_version=None)
    paused = entry.get("paused", False)
    if paused and job.status != "disabled":
        jobs.pause_job(actor=actor, job_id=job.id)
    elif not paused and job.status == "disabled":
        jobs.resume_job(actor=actor, job_id=job.id)
    db.session.flush()
    after = definition(job)
    have = set(after["secrets"])
    return JobChange(name=name, owner=owner.email, job_id=job.id,
                     action="created" if before is None else ("unchanged" if before == after else "updated"),
                     diff=_diff(before, after, f"{name} ({owner.email})", source),
                     missing_secrets=[secret for secret in entry.get("secrets", []) if secret not in have])


def _job_data(entry: dict[str, Any], job: Job | None) -> dict[str, Any]:
    """The job's fields from a definition: timestamps parsed, and masked webhook URLs replaced by
    the job's stored URL they stand for (a file never holds the URL itself)."""
    data = {key: value for key, value in entry.items() if key in JOB_FIELDS}
    problems = {}
    for key in DATETIME_FIELDS:
        value = data.get(key)
        if isinstance(value, str):
            try:
                data[key] = datetime.fromisoformat(value)
            except ValueError:
                problems[key] = "must be an ISO 8601 date and time with its offset, e.g. 2026-12-01T02:00:00+00:00"
        elif value is not None and not isinstance(value, datetime):
            problems[key] = "must be an ISO 8601 date and time with its offset, e.g. 2026-12-01T02:00:00+00:00"
    for key in masking.CREDENTIAL_FIELDS:
        value = data.get(key)
        if isinstance(value, str) and _MASKED_URL.match(value):
            stored = getattr(job, key) if job is not None else None
            if stored is not None and masking.masked_url(stored) == value:
                data[key] = stored
            else:
                problems[key] = ("holds a masked URL (exports never hold credentials) that matches no URL this "
                                 "job has: put the full URL in the file")
    if problems:
        raise InvalidInput(problems)
    return data


def _diff(before: dict[str, Any] | None, after: dict[str, Any], label: str, source: str) -> str:
    def lines(values: dict[str, Any] | None) -> list[str]:
        if values is None:
            return []
        return yaml.dump(values, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                         width=100).splitlines(keepends=True)

    return "".join(difflib.unified_diff(lines(before), lines(after), fromfile=f"{label} in Jobplane",
                                        tofile=f"{label} in {source}"))
