"""Unhandled errors reach Sentry — here a local HTTP server standing for Sentry's ingestion — from a
real web process and a real worker, tagged with the run's ids, with secrets scrubbed.

The errors are real ones: the database server goes away (a TCP proxy in front of the shared
PostgreSQL, closed by the test) in the middle of a request and in the middle of a run.
"""

from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import ADMIN_TOKEN
from tests.helpers import wait_for
from tests.observability.peers import SentryIngest, free_port

pytestmark = pytest.mark.timeout(180)

SECRET = "s3cr3t-hunter2-value"


@pytest.fixture
def ingest():
    peer = SentryIngest()
    yield peer
    peer.close()


@pytest.fixture
def observed(settings, proxy, ingest):
    """Settings of the processes: Sentry on, the database behind the proxy."""
    return {**settings, "DATABASE_URL": proxy.url_of(settings["DATABASE_URL"]), "SENTRY_DSN": ingest.dsn,
            "HEARTBEAT_SECONDS": 0.5, "WORKER_METRICS_PORT": 0}


def _job_with_secret(client, admin, **fields) -> str:
    script = "printf 'started %0100d\\n' 0; sleep 3"
    response = client.post("/api/v1/jobs", headers=admin,
                           json={"name": "sentried", "job_type": "bash", "script": script, **fields})
    assert response.status_code == 201, response.json
    job_id = response.json["id"]
    assert client.put(f"/api/v1/jobs/{job_id}/secrets/DEPLOY_NOTE", headers=admin,
                      json={"value": SECRET}).status_code in (200, 201, 204)
    return job_id


def test_an_unhandled_error_in_a_request_reaches_sentry_scrubbed(app, admin, client, processes, observed, proxy,
                                                                  ingest):
    # Given a real web process with Sentry on, and a job with a secret
    job_id = _job_with_secret(client, admin)
    port = free_port()
    processes.settings = observed
    web = processes.start("web", PORT=port, WEB_WORKERS=1)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(f"{base}/health"), timeout=30, message=f"the web process\n{processes.log(web)}")

    # When the database goes away while a request sets the secret
    proxy.down()
    response = requests.put(f"{base}/api/v1/jobs/{job_id}/secrets/DEPLOY_NOTE", json={"value": SECRET}, timeout=30,
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Request-ID": "req-sentry-1"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "req-sentry-1"

    # Then Sentry receives the error, from the web, with neither the secret nor the token in it
    events = wait_for(ingest.events, timeout=30, message=f"a Sentry event\n{processes.log(web)}")
    event = events[0]
    assert event["exception"]["values"][-1]["type"] == "OperationalError"
    assert event["tags"]["process"] == "web" and event["request"]["url"].endswith(f"/jobs/{job_id}/secrets/DEPLOY_NOTE")
    raw = b"".join(ingest.envelopes).decode()
    assert SECRET not in raw and ADMIN_TOKEN not in raw and observed["SECRET_KEY"] not in raw
    # And the web's log line of that error is JSON with the request's id, and no token either
    log = processes.log(web)
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(entry.get("request_id") == "req-sentry-1" and entry["level"] == "ERROR" for entry in lines), log
    assert SECRET not in log and ADMIN_TOKEN not in log


def test_an_unhandled_error_in_an_actor_reaches_sentry_tagged_and_scrubbed(app, admin, client, processes,
                                                                           observed, proxy, ingest):
    # Given a real worker with Sentry on, running a job that has a secret
    job_id = _job_with_secret(client, admin)
    processes.settings = observed
    worker = processes.worker()
    response = client.post(f"/api/v1/jobs/{job_id}/run", headers=admin)
    execution_id = response.json["id"]
    wait_for(lambda: "started" in client.get(f"/api/v1/executions/{execution_id}/log", headers=admin).text,
             timeout=60, message="the script to start")  # (a short line would be held back by the masker)

    # When the database goes away before the run can record its outcome
    proxy.down()

    # Then Sentry receives the actor's error, tagged with the job and the execution, secret scrubbed
    def actor_error():
        return [e for e in ingest.events() if "run_execution" in _functions(e)]
    event = wait_for(actor_error, timeout=60, message=f"a Sentry event from the actor\n{processes.log(worker)}")[0]
    assert event["tags"]["job_id"] == job_id and event["tags"]["execution_id"] == execution_id
    assert event["tags"]["process"] == "worker"
    assert event["exception"]["values"][-1]["type"] == "OperationalError"
    frame = next(f for v in event["exception"]["values"] for f in v["stacktrace"]["frames"]
                 if f["function"] == "run_execution" and f["module"] == "app.services.runs")
    assert frame["vars"]["execution_id"]  # locals are kept (where a secret could hide)...
    raw = b"".join(ingest.envelopes).decode()
    assert SECRET not in raw  # ...but never the secret, nor Jobplane's own key (the app's config is a local)
    assert observed["SECRET_KEY"] not in raw
    proxy.up()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:  # not listening yet, or still booting
        return False


def _functions(event: dict) -> set[str]:
    return {frame["function"] for value in event.get("exception", {}).get("values", [])
            for frame in (value.get("stacktrace") or {}).get("frames", [])}
