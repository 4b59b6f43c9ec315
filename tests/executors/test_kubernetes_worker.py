"""Kubernetes jobs through the whole run path: real Dramatiq worker processes running the
kubernetes executor against ``FakeKubernetes`` (standing for the Kubernetes API server, with a
kubelet, ``ScriptKubelet``, that runs each pod's script as a local process)."""

from __future__ import annotations

import signal

import pytest
from sqlalchemy import select

from app.executors.kubernetes import API_CALLS
from app.extensions import db
from app.models import Execution, ExecutionLogChunk
from tests.executors.fake_kube_api import FakeKubernetes, ScriptKubelet
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(180)

SECRET = "k8s-secret-Zq81x"
#: quick heartbeats and sweeps, so that a dead worker is noticed within the test (stale after 6 s:
#: a worker's first Kubernetes run loads the client, seconds on a busy machine)
FAST_RECOVERY = {"HEARTBEAT_SECONDS": 0.5, "HEARTBEAT_STALE_SECONDS": 6, "SWEEP_INTERVAL_SECONDS": 0.5,
                 "REQUEUE_AFTER_SECONDS": 2}


@pytest.fixture
def kube(tmp_path):
    fake = FakeKubernetes(allowed=API_CALLS).start()
    fake.on_pod_created = ScriptKubelet(fake)
    fake.kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    yield fake
    fake.close()


def worker_settings(kube) -> dict:
    return {"K8S_KUBECONFIG": str(kube.kubeconfig), "K8S_WATCH_SECONDS": 1, **FAST_RECOVERY}


def execution(app, execution_id) -> Execution:
    with app.app_context():
        row = db.session.get(Execution, execution_id)
        db.session.expunge(row)
        return row


def stored_log(app, execution_id) -> list[tuple[str, str]]:
    with app.app_context():
        return [(c.stream, c.data) for c in db.session.scalars(
            select(ExecutionLogChunk).where(ExecutionLogChunk.execution_id == execution_id)
            .order_by(ExecutionLogChunk.seq))]


def test_a_kubernetes_job_runs_through_a_worker_with_its_secret_masked(app, client, admin, processes, kube):
    # Given a worker whose cluster default is local, and a job that asks for kubernetes
    processes.worker(**worker_settings(kube))
    response = client.post("/api/v1/jobs", headers=admin, json={
        "name": "k8s", "job_type": "bash", "executor": "kubernetes",
        "script": 'echo "token is $API_KEY"; echo "in $HOME"; exit 0'})
    assert response.status_code == 201, response.json
    assert response.json["executor"] == "kubernetes"
    job_id = response.json["id"]
    assert client.put(f"/api/v1/jobs/{job_id}/secrets/API_KEY", headers=admin,
                      json={"value": SECRET}).status_code in (200, 201)
    # When it runs
    execution_id = client.post(f"/api/v1/jobs/{job_id}/run", headers=admin).json["id"]
    wait_for(lambda: execution(app, execution_id).status not in ("queued", "running"), timeout=60,
             message="the run\n" + processes.logs())
    # Then it ran as a Kubernetes Job and its log, masked, is stored
    row = execution(app, execution_id)
    assert (row.status, row.exit_code, row.executor) == ("success", 0, "kubernetes"), processes.logs()
    text = "".join(data for _, data in stored_log(app, execution_id))
    assert "token is ********" in text and "in /" in text
    assert SECRET not in text
    job = kube.get("jobs", f"jobplane-run-{execution_id}")
    assert job["metadata"]["labels"]["jobplane.io/job-id"] == job_id
    assert SECRET not in str(job)
    assert kube.refused == []


def test_a_worker_killed_mid_run_is_replaced_by_one_that_reattaches_to_the_pod(app, client, admin, processes,
                                                                                kube):
    # Given a scheduler (its sweeper) and a worker following a Kubernetes run
    processes.scheduler(**FAST_RECOVERY)
    worker = processes.worker(**worker_settings(kube))
    job_id = client.post("/api/v1/jobs", headers=admin, json={
        "name": "long", "job_type": "bash", "executor": "kubernetes",
        "script": "echo first; sleep 4; echo second"}).json["id"]
    execution_id = client.post(f"/api/v1/jobs/{job_id}/run", headers=admin).json["id"]
    wait_for(lambda: any("first" in data for _, data in stored_log(app, execution_id)), timeout=60,
             message="the first line\n" + processes.logs())
    # When its worker is SIGKILLed (the pod runs on)
    processes.kill(worker, signal.SIGKILL)
    processes.worker(**worker_settings(kube))
    # Then another worker takes the run over and follows the same pod to its end (what the pod printed
    # while no worker followed it is read back from the dead worker's last heartbeat on)
    wait_for(lambda: execution(app, execution_id).status not in ("queued", "running"), timeout=90,
             message="the run's end\n" + processes.logs())
    row = execution(app, execution_id)
    assert (row.status, row.exit_code, row.reattach_count) == ("success", 0, 1), processes.logs()
    log = stored_log(app, execution_id)
    text = "".join(data for _, data in log)
    assert text.count("first") == 1 and text.count("second") == 1, text
    assert any(stream == "system" and "takes over" in data for stream, data in log)
    assert kube.names("jobs") == [f"jobplane-run-{execution_id}"]  # the same Job: nothing ran twice
    assert kube.calls.count(("create", "batch", "jobs")) == 2  # the second create found it (409)
    assert row.duration_seconds is not None and row.duration_seconds >= 4  # from the first start
