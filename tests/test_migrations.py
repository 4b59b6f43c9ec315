"""Migrations own the schema: one head, and the models match what they build."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from app.migrate import downgrade, heads, upgrade
from app.models import Base


def _differences(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={
                "compare_type": True,
                "include_name": lambda name, type_, _: not (type_ == "table" and name == "apscheduler_jobs")})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_there_is_one_head(database_url):
    assert len(heads(database_url)) == 1


def test_postgresql_schema_matches_the_models(database_url):
    assert _differences(database_url) == []


def test_sqlite_schema_matches_the_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobplane.db'}"
    upgrade(url)
    assert _differences(url) == []


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_migrations_create_apschedulers_table(database_url, tmp_path, dialect):
    url = database_url if dialect == "postgresql" else f"sqlite:///{tmp_path / 'j.db'}"
    if dialect == "sqlite":
        upgrade(url)
    engine = create_engine(url)
    try:
        assert {"id", "next_run_time", "job_state"} <= {c["name"] for c in inspect(engine).get_columns("apscheduler_jobs")}
    finally:
        engine.dispose()


@pytest.fixture
def scratch_postgresql(database_url):
    """A database of its own (on the test server), so downgrading never touches the shared one."""
    url = make_url(database_url)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    name = "jobplane_test_migrations"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_every_migration_downgrades_and_upgrades_again(scratch_postgresql, tmp_path, dialect):
    # docs/kubernetes.md offers a schema downgrade for a rollback: every step must run both ways.
    url = scratch_postgresql if dialect == "postgresql" else f"sqlite:///{tmp_path / 'round-trip.db'}"
    upgrade(url)
    downgrade(url, "base")
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade(url)
    assert _differences(url) == []
