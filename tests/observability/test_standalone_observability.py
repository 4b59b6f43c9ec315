"""Standalone (one process, SQLite, in-memory queue) serves the same /metrics, /health and /ready on
its web port, and logs in text for people."""

from __future__ import annotations

import pytest
import requests

from tests.helpers import wait_for
from tests.observability.peers import sample
from tests.test_standalone import Standalone

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def standalone(tmp_path):
    instance = Standalone(tmp_path)
    yield instance
    if instance.process and instance.process.poll() is None:
        instance.stop()


def test_standalone_metrics_probes_and_text_logs(standalone):
    # Given a standalone Jobplane running a job every second
    standalone.start()
    response = standalone.post("/api/v1/jobs", json={"name": "tick", "job_type": "bash", "schedule": "* * * * * *",
                                                     "script": "echo tick"})
    assert response.status_code == 201, response.text
    history = f"/api/v1/jobs/{response.json()['id']}/executions"
    wait_for(lambda: any(e["status"] == "success" for e in standalone.get(history)), timeout=30,
             message="a successful run")

    # When Prometheus scrapes its web port (no token) / Then the scheduler, worker and web metrics are all there
    scraped = requests.get(f"{standalone.url}/metrics", timeout=10).text
    assert sample(scraped, "jobplane_scheduler_leader") == 1
    assert sample(scraped, "jobplane_fires_total", outcome="queued") >= 1
    assert sample(scraped, "jobplane_executions_finished_total", job_type="bash", outcome="success") >= 1
    assert sample(scraped, "jobplane_http_requests_total", route="/api/v1/jobs", method="POST", status="201") == 1
    assert sample(scraped, "jobplane_platform_source_up", source="queue") == 1  # the in-memory queue counts
    # And it is ready without any Redis (it has none)
    ready = requests.get(f"{standalone.url}/ready", timeout=10)
    assert ready.status_code == 200 and set(ready.json()["checks"]) == {"database", "migrations"}

    # And its log is text for people, not JSON
    standalone.stop()
    lines = [line for line in standalone.log.read_text().splitlines() if " INFO " in line or " WARNING " in line]
    assert lines and not any(line.startswith("{") for line in lines)
