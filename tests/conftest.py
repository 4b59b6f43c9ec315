"""Fixtures on real services: PostgreSQL and Redis from the environment (``make test`` sets
TEST_DATABASE_URL and TEST_REDIS_URL), migrated once per session, emptied before each test."""

from __future__ import annotations

import os
import uuid

import pytest
import redis
from sqlalchemy import create_engine, text

from app import create_app
from app.extensions import db
from app.migrate import upgrade
from app.services import users
from tests.browser import browser, page  # noqa: F401  (fixtures: one Chromium per session)
from tests.helpers import ProcessGroup
from tests.oidc import oidc_provider  # noqa: F401  (fixture: one OIDC provider per session)

DATABASE_URL = os.environ.get("TEST_DATABASE_URL",
                              "postgresql+psycopg2://jobplane:jobplane@127.0.0.1:5432/jobplane_test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ADMIN_TOKEN = "jp_test_admin_token_0123456789"

_TABLES = ("execution_log_chunks", "executions", "jobs", "api_tokens", "users", "teams", "audit_logs",
           "apscheduler_jobs", "web_sessions")


@pytest.fixture(scope="session")
def database_url() -> str:
    """A freshly migrated database. Missing PostgreSQL fails the run loudly, never skips."""
    engine = create_engine(DATABASE_URL)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade(DATABASE_URL)
    return DATABASE_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    redis.Redis.from_url(REDIS_URL).ping()
    return REDIS_URL


@pytest.fixture
def settings(database_url, redis_url, tmp_path) -> dict:
    """Settings shared by the in-test app and the processes a test starts."""
    return {
        "ENV": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": "test-secret-key",
        "QUEUE_NAMESPACE": f"jobplane-test-{uuid.uuid4().hex[:8]}",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture
def app(settings):
    _empty_database(settings["DATABASE_URL"])
    redis.Redis.from_url(settings["REDIS_URL"]).flushdb()
    application = create_app(settings)
    yield application
    application.extensions["jobplane_db"].engine.dispose()


def _empty_database(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        # the chain's head first, as every audit writer does, so a writer still committing finishes first
        connection.execute(text("UPDATE audit_chain_head SET last_id = 0, last_hash = '', anchor_id = 0, "
                                "anchor_hash = ''"))
        connection.execute(text("SET LOCAL jobplane.audit_prune = 'on'"))  # the audit log is append-only
        connection.execute(text(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def admin(app):
    """The bootstrap admin and its API token."""
    with app.app_context():
        token = users.bootstrap_admin(token=ADMIN_TOKEN)
        db.session.commit()
    assert token == ADMIN_TOKEN
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def processes(settings, tmp_path):
    """Start real ``jobplane`` processes; every one still alive is killed at the end."""
    group = ProcessGroup(settings, tmp_path / "logs")
    yield group
    group.kill_all()
