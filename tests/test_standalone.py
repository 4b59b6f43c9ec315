"""``jobplane standalone``: one process, SQLite, in-memory queue; a restart loses nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from datetime import timedelta

import pytest
import requests

from app import create_app
from app.extensions import db
from app.models import Execution
from app.models.base import utcnow
from tests.helpers import JOBPLANE, wait_for

pytestmark = pytest.mark.timeout(180)
TOKEN = "jp_standalone_test_token_42"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Standalone:
    def __init__(self, directory):
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {TOKEN}"}
        self.process = None
        self.runs = 0

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPLANE_")}
        # the tests poll the API ten times a second, more than the default per-user limit allows
        env.update(JOBPLANE_PORT=str(self.port), JOBPLANE_BOOTSTRAP_ADMIN_TOKEN=TOKEN,
                   JOBPLANE_API_RATE_LIMIT="6000 per minute")
        self.log = self.directory / f"standalone-{self.runs}.log"
        self.runs += 1
        with open(self.log, "wb") as handle:
            # No JOBPLANE_DATA_DIR: the default ./var, in the directory it starts in
            self.process = subprocess.Popen([JOBPLANE, "standalone"], cwd=self.directory, env=env,
                                            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._up, timeout=30, message="standalone to answer")

    def _up(self):
        assert self.process.poll() is None, self.log.read_text()
        try:
            return requests.get(f"{self.url}/health", timeout=3).ok
        except requests.RequestException:  # refused, or accepted before the app answers
            return False

    def stop(self):
        os.killpg(self.process.pid, signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0, self.log.read_text()

    def get(self, path):
        response = requests.get(f"{self.url}{path}", headers=self.headers, timeout=5)
        assert response.ok, response.text
        return response.json()

    def post(self, path, json=None):
        return requests.post(f"{self.url}{path}", headers=self.headers, json=json, timeout=5)


@pytest.fixture
def standalone(tmp_path):
    instance = Standalone(tmp_path)
    yield instance
    if instance.process and instance.process.poll() is None:
        os.killpg(instance.process.pid, signal.SIGKILL)


def test_standalone_runs_jobs_and_keeps_them_across_a_restart(standalone, tmp_path):
    # Given a fresh standalone Jobplane in an empty directory
    standalone.start()
    assert "Jobplane is running at" in standalone.log.read_text()
    assert (tmp_path / "var" / "jobplane.db").exists()
    # When a job firing every second is created with the bootstrap token
    response = standalone.post("/api/v1/jobs", json={
        "name": "tick", "job_type": "python", "schedule": "* * * * * *",
        "script": "import os; print('tick', os.environ['JOBPLANE_SCHEDULED_FOR'])"})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    # Then it runs, with its output stored
    runs = wait_for(lambda: [e for e in standalone.get(f"/api/v1/jobs/{job_id}/executions") if e["status"] == "success"]
                    or None, timeout=30, message="a successful run")
    detail = standalone.get(f"/api/v1/executions/{runs[0]['id']}")
    assert f"tick {detail['scheduled_for']}" in detail["logs"]
    # When it is stopped and started again
    standalone.stop()
    standalone.start()
    # Then the job and its history are still there, and it keeps firing
    assert standalone.get(f"/api/v1/jobs/{job_id}")["name"] == "tick"
    history = standalone.get(f"/api/v1/jobs/{job_id}/executions?page_size=100")
    assert {r["id"] for r in runs} <= {e["id"] for e in history}
    count = len(history)
    wait_for(lambda: len(standalone.get(f"/api/v1/jobs/{job_id}/executions?page_size=100")) > count,
             timeout=20, message="new fires after the restart")
    assert "Admin API token" in (tmp_path / "standalone-0.log").read_text()
    assert "Admin API token" not in standalone.log.read_text()  # the admin was made once
    standalone.stop()


def test_executions_left_queued_run_after_a_restart(standalone, tmp_path):
    # Given a standalone instance with an on-demand job, stopped
    standalone.start()
    job_id = standalone.post("/api/v1/jobs", json={
        "name": "later", "job_type": "bash", "script": "echo 'ran after restart'"}).json()["id"]
    standalone.stop()
    # And an execution queued in its database whose in-memory message died with the process
    app = create_app({"ENV": "standalone", "DATA_DIR": str(tmp_path / "var")})
    with app.app_context():
        then = utcnow() - timedelta(seconds=5)
        execution = Execution(job_id=uuid.UUID(job_id), scheduled_for=then, created_at=then, sent_at=then,
                              triggered_by="manual", status="queued")
        db.session.add(execution)
        db.session.commit()
        execution_id = str(execution.id)
    app.extensions["jobplane_db"].engine.dispose()
    # When it starts again / Then the execution is sent again and runs
    standalone.start()
    result = wait_for(lambda: (lambda e: e if e["status"] == "success" else None)(
        standalone.get(f"/api/v1/executions/{execution_id}")), timeout=30, message="the queued run")
    assert "ran after restart" in result["logs"]
    standalone.stop()


def test_standalone_applies_the_same_scheduling_rules(standalone):
    # Given a standalone instance and a per-second job whose run outlasts a second (forbid overlaps)
    standalone.start()
    job_id = standalone.post("/api/v1/jobs", json={
        "name": "slow", "job_type": "bash", "script": "sleep 1.5", "schedule": "* * * * * *",
        "timezone": "Australia/Sydney"}).json()["id"]
    # Then fires during a run are recorded as skipped, with their reason, as on PostgreSQL
    skipped = wait_for(lambda: standalone.get(f"/api/v1/jobs/{job_id}/executions?status=skipped") or None,
                       timeout=20, message="a skipped fire")
    assert "concurrency policy forbid" in skipped[0]["reason"]
    wait_for(lambda: standalone.get(f"/api/v1/jobs/{job_id}/executions?status=success") or None,
             timeout=20, message="a successful run")
    # And pausing stops the fires
    assert standalone.post(f"/api/v1/jobs/{job_id}/pause").json()["status"] == "disabled"
    time.sleep(1.5)
    count = len(standalone.get(f"/api/v1/jobs/{job_id}/executions?page_size=100"))
    time.sleep(2.5)
    assert len(standalone.get(f"/api/v1/jobs/{job_id}/executions?page_size=100")) == count
    standalone.stop()
