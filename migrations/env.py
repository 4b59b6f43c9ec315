"""Alembic environment: Jobplane's models, plus APScheduler's table, which a migration owns."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from app.models import Base

#: Tables created by migrations but not mapped as models.
UNMAPPED_TABLES = {"apscheduler_jobs"}


def include_name(name, type_, parent_names):
    return not (type_ == "table" and name in UNMAPPED_TABLES)


def run_migrations() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata,
                          include_name=include_name, render_as_batch=connection.dialect.name == "sqlite",
                          compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
