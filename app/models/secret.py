"""Job secrets: the names a job's runs receive as environment variables, and where their values are.

The value is never stored in clear: with the ``database`` backend ``ciphertext`` holds it encrypted
(Fernet, keyed from ``JOBPLANE_SECRET_KEY``); with ``azure-keyvault`` it is NULL and the value is
in the vault.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, new_id, utcnow


class JobSecret(Base):
    __tablename__ = "job_secrets"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_job_secrets_job_id_name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"))
    #: an environment variable name (``DB_PASSWORD``); unique per job, ignoring case
    name: Mapped[str] = mapped_column(String(128))
    #: Fernet token of the value (database backend); NULL when the value lives in Key Vault
    ciphertext: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: when the value was last set (re-encryption by a key rotation does not count)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
