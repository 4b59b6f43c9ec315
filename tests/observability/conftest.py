"""The database server behind a TCP proxy that a test closes and reopens (the machine's PostgreSQL
is shared with other test runs and must not be stopped)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.observability.peers import TcpProxy


@pytest.fixture
def proxy(database_url):
    parts = urlsplit(database_url)
    peer = TcpProxy(parts.hostname, parts.port or 5432)
    yield peer
    peer.down()
