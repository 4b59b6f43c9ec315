"""Worlds the API tests share: people of two teams with their tokens, and a standalone-style API on
SQLite (where the fallbacks for PostgreSQL-only SQL run)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app import create_app
from app.extensions import db
from app.migrate import upgrade
from app.models import Team
from app.services import api_tokens, users
from app.services.actors import SYSTEM


@pytest.fixture
def people(app, admin):
    """Teams data (Alice, job creator; Vera, team viewer) and web (Bob, job creator): each one's
    ``Authorization`` header by name, their ids as ``<name>_id`` and the teams' as ``team_<name>``."""
    with app.app_context():
        data, web = Team(name="data"), Team(name="web")
        db.session.add_all([data, web])
        db.session.flush()
        found = {"admin": admin, "team_data": str(data.id), "team_web": str(web.id)}
        for name, role, team in (("alice", "job_creator", data), ("vera", "team_viewer", data),
                                 ("bob", "job_creator", web)):
            user = users.create_user(actor=SYSTEM, email=f"{name}@example.com", role=role, team_id=team.id,
                                     display_name=name.title())
            _, token = api_tokens.issue_token(actor=SYSTEM, user=user, name="test")
            found[name] = {"Authorization": f"Bearer {token}"}
            found[f"{name}_id"] = str(user.id)
        db.session.commit()
    return found


@pytest.fixture
def sqlite_api(tmp_path):
    """A standalone-style app on a freshly migrated SQLite file: its ``app``, a test ``client`` and
    the bootstrap admin's ``headers``."""
    url = f"sqlite:///{tmp_path / 'jobplane.db'}"
    upgrade(url)
    application = create_app({"ENV": "standalone", "DATABASE_URL": url, "DATA_DIR": str(tmp_path)})
    with application.app_context():
        token = users.bootstrap_admin(token="jp_sqlite_admin_token_012345")
        db.session.commit()
    yield SimpleNamespace(app=application, client=application.test_client(),
                          headers={"Authorization": f"Bearer {token}"})
    application.extensions["jobplane_db"].engine.dispose()
