"""Job secrets (spec §7.2): set, list and delete them; hand their values to a run; rotate the key.

A job refers to secrets by name; each run gets them as environment variables. Values are
write-only: nothing here returns one except ``values_for_run``, which only the worker calls.
Every change writes exactly one audit row, in the change's transaction, naming the secret and
never its value. Who may do what follows the jobs (§9.1): whoever may see the job may list its
secret names; only its owner (a job creator) or an admin may set or delete them.
"""

from __future__ import annotations

from uuid import UUID

from flask import current_app
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError

from app.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.extensions import db
from app.models import Job, JobSecret
from app.models.base import utcnow
from app.secrets import secret_backend
from app.secrets.base import SECRET_NAME, SecretBackend
from app.secrets.database import DatabaseSecretBackend
from app.services import access, audit
from app.services.actors import SYSTEM, Actor
from app.services import jobs as job_service

#: Names a job cannot use: Jobplane's own variables (``JOBPLANE_JOB_ID``…) come with this prefix.
RESERVED_PREFIX = "JOBPLANE_"


def set_secret(*, actor: Actor, job_id: UUID, name: str, value: str) -> tuple[JobSecret, bool]:
    """Create the job's secret ``name``, or replace its value.

    Returns:
      the secret (without its value) and whether it was created.

    Raises:
      NotFound: no such job, or one the actor may not see.
      Forbidden: the actor may see the job but not change it.
      InvalidInput: a bad ``name`` or ``value``; both are named when both are bad.
      SecretBackendUnavailable: the value could not be stored (nothing is changed).
    """
    job = _get_editable(actor, job_id)
    backend = secret_backend()
    errors = {}
    name_error = _name_problem(name) or backend.name_problem(job_id=job.id, name=name)
    if name_error:
        errors["name"] = name_error
    value_error = _value_problem(value, backend)
    if value_error:
        errors["value"] = value_error
    if errors:
        raise InvalidInput(errors)
    secret = _find(job.id, name, ignore_case=True)
    if secret is not None and secret.name != name:
        raise InvalidInput({"name": f"this job already has a secret {secret.name}; names must differ by more "
                                    "than case (environment variables and Key Vault names would clash)"})
    created = secret is None
    now = utcnow()
    if created:
        secret = JobSecret(job_id=job.id, name=name, created_at=now)
        db.session.add(secret)
    secret.updated_at = now
    try:
        db.session.flush()
    except IntegrityError:
        raise Conflict(f"secret {name} of job {job.id} was created by another request at the same time; "
                       "send yours again to replace it") from None
    # The row is in place before the backend is called: a failure there rolls back the request.
    backend.put(job_id=job.id, name=name, value=value)
    audit.record(actor=actor, action="secret_created" if created else "secret_updated", resource_type="job",
                 resource_id=job.id, changes={"secret": name})
    return secret, created


def list_secrets(*, actor: Actor, job_id: UUID) -> list[JobSecret]:
    """The job's secrets by name (names and timestamps only; never values).

    Raises:
      NotFound: no such job, or one the actor may not see (team viewers see their team's).
    """
    job = job_service.get_job(actor=actor, job_id=job_id)
    return list(db.session.scalars(select(JobSecret).where(JobSecret.job_id == job.id)
                                   .order_by(JobSecret.name)).all())


def list_secret_names(*, actor: Actor, job_id: UUID) -> list[str]:
    """The names of the job's secrets, sorted."""
    return [secret.name for secret in list_secrets(actor=actor, job_id=job_id)]


def delete_secret(*, actor: Actor, job_id: UUID, name: str) -> None:
    """Delete the job's secret ``name`` and its value.

    Raises:
      NotFound: no such job (or not visible), or no such secret.
      Forbidden: the actor may see the job but not change it.
      SecretBackendUnavailable: the value could not be deleted (nothing is changed).
    """
    job = _get_editable(actor, job_id)
    secret = _find(job.id, name)
    if secret is None:
        raise NotFound(f"job {job.id} has no secret named {name!r}")
    secret_backend().delete(job_id=job.id, name=secret.name)
    db.session.delete(secret)
    db.session.flush()
    audit.record(actor=actor, action="secret_deleted", resource_type="job", resource_id=job.id,
                 changes={"secret": secret.name})


def names_for_run(*, job_id: UUID) -> list[str]:
    """The names of the job's secrets (the worker reads them in its claim's transaction)."""
    return list(db.session.scalars(_NAMES_OF_JOB, {"job_id": job_id}).all())


def names_for_runs(*, job_ids: list[UUID]) -> dict[UUID, list[str]]:
    """The names of the secrets of each of these jobs that has any (a group run: one query)."""
    names: dict[UUID, list[str]] = {}
    if job_ids:
        for job_id, name in db.session.execute(select(JobSecret.job_id, JobSecret.name)
                                               .where(JobSecret.job_id.in_(job_ids)).order_by(JobSecret.name)):
            names.setdefault(job_id, []).append(name)
    return names


#: Built once: on the worker's hot path, building the statement cost about as much as running it.
_NAMES_OF_JOB = select(JobSecret.name).where(JobSecret.job_id == bindparam("job_id")).order_by(JobSecret.name)


def values_for_run(*, job_id: UUID, names: list[str] | None = None) -> dict[str, str]:
    """Every secret of the job (or those ``names``, already read) with its value, for the run
    about to start (the worker's call).

    A job without secrets never touches the backend.

    Raises:
      SecretBackendUnavailable: the backend cannot be reached or refused; the run must fail with
        this message (spec §7.2: no degraded mode). ``SecretUnreadable``, a subclass, when a
        value is missing or cannot be decrypted.
    """
    if names is None:
        names = names_for_run(job_id=job_id)
    if not names:
        return {}
    return secret_backend().get_many(job_id=job_id, names=names)


def forget_job_secrets(*, job_id: UUID) -> list[str]:
    """Delete every secret of a job, values included, without an audit row of its own: for the
    deletion of the job itself, whose audit row covers it.

    Returns:
      the names of the deleted secrets.
    """
    secrets = list(db.session.scalars(select(JobSecret).where(JobSecret.job_id == job_id)).all())
    backend = secret_backend()
    for secret in secrets:
        backend.delete(job_id=job_id, name=secret.name)
        db.session.delete(secret)
    db.session.flush()
    return sorted(secret.name for secret in secrets)


def rotate_secrets(*, actor: Actor = SYSTEM) -> int:
    """Re-encrypt every value stored in the database with the current ``JOBPLANE_SECRET_KEY``.

    Run it after moving the former key to ``JOBPLANE_SECRET_KEY_PREVIOUS``; once it has committed,
    the former key can be dropped. Values kept in Key Vault are not touched. Writes one audit row.

    Returns:
      how many values were re-encrypted.

    Raises:
      SecretUnreadable: a value no key decrypts (nothing is changed: the caller rolls back).
    """
    keys = DatabaseSecretBackend.from_config(current_app.config)
    rows = db.session.scalars(select(JobSecret).where(JobSecret.ciphertext.is_not(None))
                              .order_by(JobSecret.job_id, JobSecret.name)).all()
    for row in rows:
        keys.reencrypt(row)
    db.session.flush()
    audit.record(actor=actor, action="secrets_rotated", resource_type="job_secrets", resource_id="database",
                 changes={"reencrypted": len(rows)})
    return len(rows)


def _get_editable(actor: Actor, job_id: UUID) -> Job:
    job = job_service.get_job(actor=actor, job_id=job_id)
    if not access.can_edit_job(actor, job):
        raise Forbidden("only the job's owner or an admin may change its secrets")
    return job


def _find(job_id: UUID, name: str, *, ignore_case: bool = False) -> JobSecret | None:
    column, wanted = (func.lower(JobSecret.name), name.lower()) if ignore_case else (JobSecret.name, name)
    return db.session.scalar(select(JobSecret).where(JobSecret.job_id == job_id, column == wanted).limit(1))


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
        return ("must be an environment variable name: letters, digits and _, not starting with a digit, "
                "at most 128 characters")
    if name.upper().startswith(RESERVED_PREFIX):
        return f"must not start with {RESERVED_PREFIX}: those variables are Jobplane's"
    return None


def _value_problem(value: object, backend: SecretBackend) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if "\x00" in value:
        return "must not contain NUL characters (an environment variable cannot hold them)"
    if len(value.encode()) > backend.max_value_bytes:
        return f"must be at most {backend.max_value_bytes} bytes (UTF-8) with the {backend.name} backend"
    return None
