"""A Jobplane web server in a thread (werkzeug, threaded) for browser and websocket tests, with
single sign-on against the real OIDC provider of tests/oidc.py (standing in for Azure AD)."""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from app import create_app
from tests.conftest import _empty_database


class LiveServer:
    def __init__(self, app):
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.thread.join(10)


def sso_settings(settings: dict, provider) -> dict:
    return {**settings, "OIDC_ISSUER": provider.issuer, "OIDC_CLIENT_ID": provider.client_id,
            "OIDC_CLIENT_SECRET": provider.client_secret, "OIDC_API_AUDIENCE": provider.api_audience}


@pytest.fixture
def live_server(settings, redis_url):
    """Start a server for settings chosen by the test: ``live_server(**overrides)``."""
    import redis

    started = []

    def start(**overrides) -> LiveServer:
        _empty_database(settings["DATABASE_URL"])
        redis.Redis.from_url(redis_url).flushdb()
        server = LiveServer(create_app({**settings, **overrides}))
        if "BASE_URL" not in overrides:
            server.app.config["BASE_URL"] = server.url
        started.append(server.__enter__())
        return server

    yield start
    for server in started:
        server.__exit__()
        server.app.extensions["jobplane_db"].engine.dispose()
