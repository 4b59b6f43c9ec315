"""Shared steps of the secrets tests: users, jobs, other apps on the same database, table text."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from flask import Flask
from sqlalchemy import select, text

from app import create_app
from app.extensions import db
from app.models import User
from app.services import api_tokens, jobs, users
from app.services.actors import SYSTEM, Actor

JOB = {"name": "nightly-export", "job_type": "bash", "script": 'echo "$DB_PASSWORD" | wc -c', "schedule": None}


def admin_actor() -> Actor:
    """The bootstrap admin (the ``admin`` fixture made it), inside an app context."""
    return Actor(user=db.session.scalar(select(User).where(User.email == "admin")))


def make_user(email: str, role: str, team_id=None) -> tuple[User, str]:
    """A user with an API token; call inside an app context and commit."""
    user = users.create_user(actor=SYSTEM, email=email, role=role)
    user.team_id = team_id
    _, token = api_tokens.issue_token(actor=SYSTEM, user=user, name="test")
    return user, token


def make_job(actor: Actor, **fields: Any):
    return jobs.create_job(actor=actor, data={**JOB, **fields})


@contextmanager
def other_app(settings: dict, **overrides: Any) -> Iterator[Flask]:
    """Another app on the same database with different settings (another key, another backend)."""
    application = create_app({**settings, **overrides})
    try:
        with application.app_context():
            yield application
    finally:
        application.extensions["jobplane_db"].engine.dispose()


def table_text(table: str) -> str:
    """Every row of ``table`` as text, to search for a value that must not be there (PostgreSQL)."""
    return db.session.scalar(text(f"SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {table} t"))
