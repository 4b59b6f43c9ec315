"""/ready turns unready when PostgreSQL or Redis goes away, or the schema is behind, and ready
again when they are back — on the web app and on the worker's probe port alike.

The machine's PostgreSQL and Redis are shared with other test runs and must not be stopped, so
the database server is reached through a TCP proxy that this test closes (the server "stops")
and reopens, and Redis is a redis-server of the test's own, stopped and started for real.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import create_engine, text
from alembic.script import ScriptDirectory

from app import create_app
from app.migrate import alembic_config
from tests.helpers import wait_for
from tests.observability.peers import OwnRedis, free_port


@pytest.fixture
def own_redis():
    server = OwnRedis()
    yield server
    server.stop()


@pytest.fixture
def via_proxy(settings, proxy, own_redis):
    """The settings, with the database behind the proxy and Redis the test's own."""
    return {**settings, "DATABASE_URL": proxy.url_of(settings["DATABASE_URL"]), "REDIS_URL": own_redis.url,
            "READY_TIMEOUT_SECONDS": 1.0}


def _ready(client) -> tuple[int, dict]:
    response = client.get("/ready")
    return response.status_code, response.json


def test_ready_follows_the_database_and_redis(app, via_proxy, proxy, own_redis):
    # Given a web app whose database and Redis are up
    web = create_app(via_proxy).test_client()
    assert _ready(web) == (200, {"status": "ready", "checks": {"database": "ok", "migrations": "ok", "redis": "ok"}})

    # When the database server goes away / Then /ready says so (and names no password), Redis still ok
    proxy.down()
    status, body = _ready(web)
    assert status == 503 and body["status"] == "unready"
    assert body["checks"]["database"].startswith("down: ") and body["checks"]["redis"] == "ok"
    assert urlsplit(via_proxy["DATABASE_URL"]).password not in str(body)

    # When it is back / Then ready again
    proxy.up()
    assert _ready(web)[0] == 200

    # When Redis stops / Then unready, naming Redis; when it starts again / Then ready
    own_redis.stop()
    status, body = _ready(web)
    assert status == 503 and body["checks"]["redis"].startswith("down: ") and body["checks"]["database"] == "ok"
    own_redis.start()
    assert _ready(web)[0] == 200


def test_ready_wants_the_schema_at_head_or_ahead(app, settings):
    # Given a database whose schema is one migration behind what the code needs
    engine = create_engine(settings["DATABASE_URL"])
    with engine.begin() as connection:
        head = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        behind = ScriptDirectory.from_config(alembic_config(settings["DATABASE_URL"])).get_revision(head).down_revision
        connection.execute(text("UPDATE alembic_version SET version_num = :behind"), {"behind": behind})
    try:
        # When /ready is asked / Then it is unready and says what to run
        status, body = _ready(app.test_client())
        assert status == 503
        assert "jobplane db upgrade" in body["checks"]["migrations"] and body["checks"]["database"] == "ok"

        # Given the schema migrated past the code (a newer release's revision, unknown here: the
        # moment of a rolling upgrade when the old pods still serve) / Then it is ready
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'from_a_newer_release'"))
        status, body = _ready(app.test_client())
        assert status == 200 and body["checks"]["migrations"] == "ok"
    finally:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
        engine.dispose()
    # Then, at head again, it is ready
    assert _ready(app.test_client())[0] == 200


def test_the_worker_probe_port_follows_its_dependencies(app, processes, via_proxy, proxy, own_redis):
    # Given a real worker whose database is behind the proxy and whose Redis is the test's own
    port = free_port()
    processes.settings = via_proxy
    worker = processes.worker(WORKER_METRICS_PORT=port)
    base = f"http://127.0.0.1:{port}"

    def answer(path):
        try:
            return requests.get(base + path, timeout=5)
        except requests.ConnectionError:
            return None

    wait_for(lambda: (r := answer("/ready")) is not None and r.status_code == 200, timeout=60,
             message=f"the worker's /ready\n{processes.log(worker)}")
    assert answer("/health").json() == {"status": "ok"}

    # When the database goes away / Then the worker is unready but alive; when it is back / Then ready
    proxy.down()
    wait_for(lambda: answer("/ready").status_code == 503, timeout=15, message="unready without the database")
    assert answer("/ready").json()["checks"]["database"].startswith("down: ")
    assert answer("/health").status_code == 200 and worker.poll() is None
    proxy.up()
    wait_for(lambda: answer("/ready").status_code == 200, timeout=15, message="ready again")

    # When Redis stops / Then unready, naming Redis; when it is back / Then ready
    own_redis.stop()
    wait_for(lambda: answer("/ready").status_code == 503, timeout=15, message="unready without Redis")
    assert answer("/ready").json()["checks"]["redis"].startswith("down: ")
    own_redis.start()
    wait_for(lambda: answer("/ready").status_code == 200, timeout=15, message="ready again after Redis")
