"""The observability settings refuse bad values by name, and a taken probe port does not stop a
process (a scheduler must keep firing even when its metrics cannot be served)."""

from __future__ import annotations

import logging
import socket
import subprocess

import pytest
import requests

from app.config import ConfigError, load_settings
from app.observability.server import start_probe_server
from tests.helpers import JOBPLANE, process_env, wait_for
from tests.observability.peers import free_port, sample


@pytest.mark.parametrize("variable, value, fragment", [
    ("JOBPLANE_LOG_FORMAT", "yaml", "must be one of json, text"),
    ("JOBPLANE_SCHEDULER_METRICS_PORT", "70000", "must be a TCP port"),
    ("JOBPLANE_WORKER_METRICS_PORT", "-1", "must be a TCP port"),
    ("JOBPLANE_WORKER_METRICS_PORT", "ninety", "must be a whole number"),
    ("JOBPLANE_READY_TIMEOUT_SECONDS", "0", "must be more than 0"),
])
def test_bad_values_name_the_variable(variable, value, fragment):
    # Given a bad value / When the settings are read / Then the error names the variable and the fix
    environ = {"JOBPLANE_ENV": "test", "JOBPLANE_DATABASE_URL": "postgresql+psycopg2://u@h/d", variable: value}
    with pytest.raises(ConfigError, match=variable) as raised:
        load_settings(environ)
    assert fragment in str(raised.value)


def test_the_cli_refuses_a_bad_port_before_starting_anything(settings):
    # When `jobplane worker` is started with a port out of range / Then it exits non-zero, naming it
    result = subprocess.run([JOBPLANE, "worker"], env=process_env(settings, {"WORKER_METRICS_PORT": 99999}),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "JOBPLANE_WORKER_METRICS_PORT must be a TCP port" in result.stderr


def test_a_taken_port_is_logged_not_fatal(settings, caplog):
    # Given a port some other program listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = load_settings({}, overrides=settings)
        # When the probe server is started on it / Then there is none, and the log says which port and why
        with caplog.at_level(logging.ERROR, logger="app.observability.server"):
            assert start_probe_server(config, port) is None
        assert f"127.0.0.1:{port}" in caplog.text and "set another port" in caplog.text


def test_web_workers_share_their_request_counts(app, processes, tmp_path):
    # Given `jobplane web` with two worker processes
    port = free_port()
    web = processes.start("web", PORT=port, WEB_WORKERS=2, WEB_THREADS=2, METRICS_DIR=tmp_path / "metrics")
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(f"{base}/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False
    wait_for(up, timeout=60, message=f"the web process\n{processes.log(web)}")
    # When 40 requests are spread over the workers (each on a new connection)
    for _ in range(40):
        assert requests.get(f"{base}/health", headers={"Connection": "close"}, timeout=5).status_code == 200
    # Then both workers answered some (each keeps its samples in a file of its own)...
    assert len(list((tmp_path / "metrics" / "web").glob("counter_*.db"))) == 2
    # ...and every scrape, whichever worker answers it, counts all 40
    for _ in range(6):
        scraped = requests.get(f"{base}/metrics", headers={"Connection": "close"}, timeout=5).text
        assert sample(scraped, "jobplane_http_requests_total", route="/health", status="200") == 40
