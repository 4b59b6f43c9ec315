"""The database session store of standalone mode: what Redis does in production, in a table."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import create_engine, func, select, update

from app.migrate import upgrade
from app.models import WebSession
from app.ui.sessions import DatabaseSessionStore, ServerSessionInterface


def _check_store(store: DatabaseSessionStore) -> None:
    store.save("a" * 64, {"user_id": "u1", "signed_in_at": time.time()}, ttl_seconds=60)
    store.save("b" * 64, {"csrf_token": "t"}, ttl_seconds=1)
    assert store.load("a" * 64)["user_id"] == "u1"
    store.save("a" * 64, {"user_id": "u1", "n": 2}, ttl_seconds=60)  # saving again replaces
    assert store.load("a" * 64)["n"] == 2
    with store.engine.begin() as connection:  # b's time runs out
        connection.execute(update(WebSession).where(WebSession.id_hash == "b" * 64)
                           .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert store.load("b" * 64) is None  # expired: never returned
    store.save("c" * 64, {}, ttl_seconds=60)  # any save sweeps what expired
    with store.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(WebSession)) == 2
    store.delete("a" * 64)
    assert store.load("a" * 64) is None


def test_the_database_store_on_sqlite_as_standalone_uses_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobplane.db'}"
    upgrade(url)
    _check_store(DatabaseSessionStore(create_engine(url)))


def test_the_database_store_on_postgresql(app):
    _check_store(DatabaseSessionStore(app.extensions["jobplane_db"].engine))


def test_a_session_older_than_its_lifetime_is_not_opened(app):
    store = DatabaseSessionStore(app.extensions["jobplane_db"].engine)
    interface = ServerSessionInterface(store, lifetime_seconds=3600, secure=False)
    assert not interface._expired({"signed_in_at": time.time() - 3599})
    assert interface._expired({"signed_in_at": time.time() - 3601})
    assert interface._ttl({}) == 600  # before sign-in: only long enough to finish signing in


def test_standalone_signs_in_with_an_api_token_and_keeps_the_session_in_its_database(tmp_path):
    import re

    from app import create_app
    from app.extensions import db
    from app.services import users

    application = create_app({"ENV": "standalone", "DATA_DIR": str(tmp_path), "DATABASE_URL": None})
    upgrade(application.config["DATABASE_URL"])
    with application.app_context():
        token = users.bootstrap_admin(token=None)
        db.session.commit()
    web = application.test_client()
    page = web.get("/login")
    assert "Single sign-on is not configured" in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert web.post("/login/token", data={"token": token, "csrf_token": csrf}).status_code == 303
    assert "admin" in web.get("/jobs").text
    with application.extensions["jobplane_db"].engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(WebSession)) == 1
