"""Log lines: JSON with the run's ids from real scheduler and worker processes, the request's id on
the web, text for standalone, and never a secret."""

from __future__ import annotations

import io
import json
import logging

import pytest

from app.observability import logs
from app.services.masking import SecretMasker
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_worker_and_scheduler_lines_are_json_with_the_run_ids(app, admin, client, processes):
    # Given a real scheduler and worker (JSON is their default)
    scheduler = processes.scheduler(SCHEDULER_METRICS_PORT=0)
    worker = processes.worker(WORKER_METRICS_PORT=0, HEARTBEAT_SECONDS=0.5, KILL_GRACE_SECONDS=1)
    job = client.post("/api/v1/jobs", headers=admin, json={"name": "cancelled", "job_type": "bash",
                                                           "script": "sleep 30"}).json["id"]
    execution = client.post(f"/api/v1/jobs/{job}/run", headers=admin).json["id"]
    wait_for(lambda: client.get(f"/api/v1/executions/{execution}", headers=admin).json["status"] == "running",
             timeout=60, message="the run to start")

    # When its run is cancelled (the worker logs that the claim was revoked)
    assert client.post(f"/api/v1/executions/{execution}/cancel", headers=admin).status_code == 200

    # Then that line is JSON and carries the job and the execution
    def revoked():
        return [entry for entry in _json_lines(processes.log(worker)) if "claim was revoked" in entry["message"]]
    [line] = wait_for(revoked, timeout=30, message=f"the revoked line\n{processes.log(worker)}")
    assert line["job_id"] == job and line["execution_id"] == execution
    assert line["level"] == "WARNING" and line["process"] == "worker" and line["time"].endswith("+00:00")
    # And the scheduler's own lines are JSON too, every one of them
    wait_for(lambda: "became the scheduler leader" in processes.log(scheduler), timeout=30, message="leader")
    scheduler_lines = processes.log(scheduler).splitlines()
    assert scheduler_lines and all(json.loads(line)["process"] == "scheduler" for line in scheduler_lines
                                   if line.strip()), scheduler_lines


def test_a_request_id_is_kept_or_made_and_sent_back(app, admin, client):
    # When a request brings a sane X-Request-ID / Then it is sent back; an absurd one is replaced
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/health", headers={"X-Request-ID": "<script>" * 30}).headers["X-Request-ID"]
    assert len(made) == 32 and "<" not in made
    # And the audit row of a change made in that request carries the same id
    response = client.post("/api/v1/jobs", headers={**admin, "X-Request-ID": "req-audit-7"},
                           json={"name": "audited", "job_type": "bash", "script": "true"})
    assert response.headers["X-Request-ID"] == "req-audit-7"
    audit = client.get("/api/v1/audit-logs?action=job_created", headers=admin).json
    assert [row["request_id"] for row in audit] == ["req-audit-7"]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_secret_reaches_a_log_line(log_format):
    # Given a thread working on a run whose secret is known, and logging in either format
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("worker") if log_format == "json" else logs.TextFormatter())
    logger = logging.getLogger("tests.observability.secrets")
    logger.addHandler(handler)
    logger.propagate = False
    logs.bind_run(job_id="job-1", execution_id="exec-1", masker=SecretMasker(["pa55-w0rd-of-the-job"]))
    try:
        # When lines carry the secret, a bearer token, an API token and a URL with a password
        logger.warning("script said pa55-w0rd-of-the-job (base64 cGE1NS13MHJkLW9mLXRoZS1qb2I=)")
        logger.warning("header Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig from %s", "10.0.0.1")
        logger.warning("token jp_abcdefghijklmnop used; database postgresql://jobplane:hunter22@db:5432/x")
        try:
            raise RuntimeError("failed with pa55-w0rd-of-the-job")
        except RuntimeError:
            logger.exception("run failed")
    finally:
        logs.clear_run()
        logger.removeHandler(handler)
    out = stream.getvalue()
    # Then none of them is in the log, the ids are
    for leaked in ("pa55-w0rd-of-the-job", "cGE1NS13MHJkLW9mLXRoZS1qb2I", "eyJhbGciOiJSUzI1NiJ9", "jp_abcdefghijklmnop",
                   "hunter22"):
        assert leaked not in out
    assert out.count("********") >= 5
    if log_format == "json":
        entries = [json.loads(line) for line in out.splitlines()]
        assert len(entries) == 4 and all(e["job_id"] == "job-1" and e["execution_id"] == "exec-1" for e in entries)
        assert "RuntimeError" in entries[-1]["exception"]
    else:
        assert "[job=job-1 execution=exec-1]" in out and not out.lstrip().startswith("{")
