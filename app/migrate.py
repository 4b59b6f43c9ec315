"""Alembic, driven from code: ``jobplane db upgrade``, standalone start-up and the tests.

Migrations never run inside the app factory; entry points call ``upgrade`` explicitly.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine

#: The Alembic scripts (``migrations/`` at the project root).
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database's schema to ``revision``."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Take the database's schema back to ``revision`` (a rollback across a migration)."""
    command.downgrade(alembic_config(database_url), revision)


def heads(database_url: str) -> tuple[str, ...]:
    return tuple(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())


def known_revisions(database_url: str) -> frozenset[str]:
    """Every revision the code's scripts define (a schema at any other revision is newer)."""
    return frozenset(script.revision for script in
                     ScriptDirectory.from_config(alembic_config(database_url)).walk_revisions())


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_at_head(database_url: str) -> bool:
    engine = create_engine(database_url)
    try:
        return current_revision(engine) in heads(database_url)
    finally:
        engine.dispose()
