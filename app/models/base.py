"""Declarative base, naming convention and portable column types (PostgreSQL and SQLite)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import JSON, DateTime, MetaData, Text, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

#: Constraint names are derived, so Alembic migrations name them the same everywhere.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always returned timezone-aware.

    PostgreSQL keeps ``timestamptz``; SQLite drops the zone, so it is put back on load.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; attach a timezone")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


#: JSON everywhere, JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class EncryptedText(TypeDecorator):
    """Text encrypted at rest with ``JOBPLANE_SECRET_KEY`` (Fernet; earlier keys from
    ``JOBPLANE_SECRET_KEY_PREVIOUS`` still decrypt), for credentials such as webhook URLs.

    Values are read and written inside an app context, whose settings hold the keys.  A value
    no key decrypts reads as None, and says so in the log.
    """

    impl = Text
    cache_ok = True
    PREFIX = "enc1:"

    @staticmethod
    def _keys():
        from flask import current_app

        from app.secrets.database import keyring

        return keyring(current_app.config)

    def process_bind_param(self, value: str | None, dialect):
        if value is None:
            return None
        return self.PREFIX + self._keys().encrypt(value.encode()).decode()

    def process_result_value(self, value: str | None, dialect):
        if value is None or not value.startswith(self.PREFIX):
            return value
        from cryptography.fernet import InvalidToken

        try:
            return self._keys().decrypt(value[len(self.PREFIX):].encode()).decode()
        except InvalidToken:
            import logging

            logging.getLogger(__name__).error(
                "an encrypted value cannot be decrypted with JOBPLANE_SECRET_KEY nor any previous key; "
                "add the former key to JOBPLANE_SECRET_KEY_PREVIOUS")
            return None
