"""The ``database`` secret backend: values encrypted with Fernet in the ``job_secrets`` table.

The Fernet key is derived from ``JOBPLANE_SECRET_KEY`` with HKDF-SHA256, so any string makes a
valid key and the raw secret key is never used for two purposes. Former keys listed in
``JOBPLANE_SECRET_KEY_PREVIOUS`` still decrypt (a ``MultiFernet``), which makes rotation
possible without downtime: see ``app.services.secrets.rotate_secrets``.
"""

from __future__ import annotations

import base64
from typing import Any, Mapping
from uuid import UUID

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select

from app.extensions import db
from app.models import JobSecret
from app.secrets.base import SecretBackend, SecretUnreadable

#: HKDF context: a key derived for job secrets is useless for anything else.
_HKDF_INFO = b"jobplane job secrets v1"


def fernet_key(secret_key: str) -> bytes:
    """The Fernet key (URL-safe base64 of 32 bytes) derived from a ``JOBPLANE_SECRET_KEY`` value."""
    derived = HKDF(algorithm=SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret_key.encode())
    return base64.urlsafe_b64encode(derived)


def keyring(config: Mapping[str, Any]) -> MultiFernet:
    """Encrypts with the current secret key; decrypts with it or any previous one."""
    previous = [k.strip() for k in (config.get("SECRET_KEY_PREVIOUS") or "").split(",") if k.strip()]
    return MultiFernet([Fernet(fernet_key(key)) for key in (config["SECRET_KEY"], *previous)])


def unreadable(row: JobSecret) -> SecretUnreadable:
    return SecretUnreadable(
        f"secret {row.name} of job {row.job_id} cannot be decrypted with JOBPLANE_SECRET_KEY nor any key "
        "in JOBPLANE_SECRET_KEY_PREVIOUS: if the secret key was changed, add the former key to "
        "JOBPLANE_SECRET_KEY_PREVIOUS (comma-separated); otherwise set the secret again")


class DatabaseSecretBackend(SecretBackend):
    """Values as Fernet tokens in ``job_secrets.ciphertext``, in the caller's transaction."""

    name = "database"
    max_value_bytes = 32 * 1024

    def __init__(self, *, keys: MultiFernet):
        self._keys = keys

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "DatabaseSecretBackend":
        return cls(keys=keyring(config))

    def put(self, *, job_id: UUID, name: str, value: str) -> None:
        row = self._row(job_id, name)
        row.ciphertext = self._keys.encrypt(value.encode()).decode("ascii")

    def get_many(self, *, job_id: UUID, names: list[str]) -> dict[str, str]:
        rows = db.session.scalars(select(JobSecret).where(JobSecret.job_id == job_id,
                                                          JobSecret.name.in_(names))).all()
        values = {}
        for row in rows:
            if row.ciphertext is None:
                raise SecretUnreadable(
                    f"secret {row.name} of job {job_id} has no value in the database: it was set while "
                    "JOBPLANE_SECRETS_BACKEND was azure-keyvault; set it again, or switch the backend back")
            try:
                values[row.name] = self._keys.decrypt(row.ciphertext.encode("ascii")).decode()
            except InvalidToken:
                raise unreadable(row) from None
        missing = sorted(set(names) - set(values))
        if missing:
            raise SecretUnreadable(f"job {job_id} has no secret named {', '.join(missing)}")
        return values

    def delete(self, *, job_id: UUID, name: str) -> None:
        row = db.session.scalar(select(JobSecret).where(JobSecret.job_id == job_id, JobSecret.name == name))
        if row is not None:
            row.ciphertext = None

    def reencrypt(self, row: JobSecret) -> None:
        """Re-encrypt the row's value with the current key (key rotation).

        Raises:
          SecretUnreadable: no key in the keyring decrypts it.
        """
        try:
            row.ciphertext = self._keys.rotate(row.ciphertext.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise unreadable(row) from None

    @staticmethod
    def _row(job_id: UUID, name: str) -> JobSecret:
        row = db.session.scalar(select(JobSecret).where(JobSecret.job_id == job_id, JobSecret.name == name))
        if row is None:
            raise LookupError(f"no job_secrets row for {name} of job {job_id}: create it before put()")
        return row
