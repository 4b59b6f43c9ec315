"""The kubernetes executor through the real ``kubernetes`` client, against ``FakeKubernetes``
(a local HTTP server that stands for the Kubernetes API server, its Job controller and garbage
collector; the test plays the kubelet)."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from app.executors import k8s_manifests
from app.executors.kubernetes import API_CALLS
from tests.executors.fake_kube_api import FakeKubernetes
from tests.executors.kube_runs import SECRET, Run, executor_for, following, spec
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)

def test_a_successful_run_streams_its_log_and_keeps_secrets_out_of_the_manifest(cluster):
    run = Run(executor_for(cluster), spec("e-success"))
    pod = cluster.wait_for_pod("e-success")
    cluster.start_container(pod)
    cluster.write_log(pod, "line one\n")
    cluster.write_log(pod, "line two\n")
    time.sleep(0.3)
    cluster.terminate(pod, 0)
    result = run.result()
    assert (result.status, result.exit_code, result.error_message) == ("success", 0, None)
    assert run.text("stdout") == "line one\nline two\n"

    job = cluster.get("jobs", "jobplane-run-e-success")
    secret = cluster.get("secrets", "jobplane-run-e-success-env")
    config_map = cluster.get("configmaps", "jobplane-run-e-success-script")
    assert SECRET not in json.dumps(job) and SECRET not in json.dumps(config_map)
    assert base64.b64decode(secret["data"]["API_TOKEN"]).decode() == SECRET
    for owned in (secret, config_map):  # deleted with the Job
        assert owned["metadata"]["ownerReferences"] == [
            {"apiVersion": "batch/v1", "kind": "Job", "name": "jobplane-run-e-success", "uid": job["metadata"]["uid"]}]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "jobplane-run-e-success-env"}}]
    assert {"name": "GREETING", "value": "hi"} in container["env"]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "512Mi"},
                                      "limits": {"cpu": "2", "memory": "512Mi"}}
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 30
    assert config_map["data"] == {"script.sh": "echo hello"}
    labels = cluster.get("pods", pod)["metadata"]["labels"]
    assert labels["jobplane.io/execution-id"] == "e-success" and labels["jobplane.io/job-id"] == "job-1"
    assert labels["job-name"] == "jobplane-run-e-success"


def test_a_failing_run_reports_its_exit_code(cluster):
    run = Run(executor_for(cluster), spec("e-fail"))
    pod = cluster.wait_for_pod("e-fail")
    cluster.start_container(pod)
    cluster.write_log(pod, "something broke\n")
    cluster.terminate(pod, 3)
    result = run.result()
    assert (result.status, result.exit_code, result.error_message) == ("failed", 3, "exited with code 3")
    assert "something broke" in run.text()


def test_an_out_of_memory_kill_says_so(cluster):
    run = Run(executor_for(cluster), spec("e-oom"))
    pod = cluster.wait_for_pod("e-oom")
    cluster.start_container(pod)
    cluster.terminate(pod, 137, reason="OOMKilled")
    result = run.result()
    assert (result.status, result.exit_code) == ("failed", 137)
    assert "out of memory" in result.error_message and "512 MiB" in result.error_message


def test_an_image_that_cannot_be_pulled_fails_the_run_and_deletes_its_job(cluster):
    run = Run(executor_for(cluster), spec("e-pull", image="registry.example.com/nope:1"))
    pod = cluster.wait_for_pod("e-pull")
    cluster.fail_image_pull(pod)
    result = run.result()
    assert result.status == "failed"
    assert "could not pull the image 'registry.example.com/nope:1'" in result.error_message
    assert "ImagePullBackOff" in result.error_message
    assert cluster.deletions == [("jobplane-run-e-pull", "Foreground")]
    assert cluster.names("jobs") == cluster.names("pods") == cluster.names("secrets") == []


def test_a_pod_unschedulable_past_the_pending_timeout_fails_with_the_schedulers_reason(cluster):
    run = Run(executor_for(cluster, pending_timeout_seconds=1.0), spec("e-unsched"))
    pod = cluster.wait_for_pod("e-unsched")
    cluster.unschedulable(pod)
    result = run.result()
    assert result.status == "failed"
    assert "could not be scheduled: Unschedulable: 0/3 nodes are available: 3 Insufficient memory" \
        in result.error_message
    assert "still pending after 1 s" in result.error_message
    assert cluster.deletions == [("jobplane-run-e-unsched", "Foreground")]


def test_an_evicted_pod_fails_the_run_with_the_eviction_message(cluster):
    run = Run(executor_for(cluster), spec("e-evict"))
    pod = cluster.wait_for_pod("e-evict")
    cluster.start_container(pod)
    cluster.evict(pod)
    result = run.result()
    assert result.status == "failed"
    assert "evicted by Kubernetes: The node was low on resource: memory" in result.error_message


def test_a_timeout_deletes_the_job_in_the_foreground(cluster):
    run = Run(executor_for(cluster), spec("e-timeout", timeout_seconds=1))
    pod = cluster.wait_for_pod("e-timeout")
    cluster.start_container(pod)
    cluster.write_log(pod, "working\n")
    result = run.result()
    assert result.status == "timed_out"
    assert result.error_message == "timed out after 1 s; the Kubernetes Job was deleted"
    assert cluster.deletions == [("jobplane-run-e-timeout", "Foreground")]
    assert cluster.names("jobs") == cluster.names("pods") == cluster.names("configmaps") == []
    assert "working" in run.text() and "timeout reached: deleting Kubernetes Job" in run.text("system")


def test_a_job_stopped_by_kubernetes_at_its_deadline_is_timed_out(cluster):
    run = Run(executor_for(cluster, job_check_seconds=30), spec("e-deadline"))
    pod = cluster.wait_for_pod("e-deadline")
    cluster.start_container(pod)
    following(cluster)
    cluster.exceed_deadline("jobplane-run-e-deadline")
    result = run.result()
    assert (result.status, result.error_message) == (
        "timed_out", "Kubernetes stopped the Job at its activeDeadlineSeconds")


def test_a_pod_deleted_under_the_run_fails_it(cluster):
    run = Run(executor_for(cluster, job_check_seconds=30), spec("e-gone"))
    pod = cluster.wait_for_pod("e-gone")
    cluster.start_container(pod)
    following(cluster)
    cluster.delete_job("jobplane-jobs", "jobplane-run-e-gone", "Background")  # kubectl delete job
    result = run.result()
    assert result.status == "failed" and "the pod was deleted before its container finished" in result.error_message


def test_a_cancel_deletes_the_job(cluster):
    run = Run(executor_for(cluster), spec("e-cancel"))
    pod = cluster.wait_for_pod("e-cancel")
    cluster.start_container(pod)
    run.keep_going = False  # the claim is revoked (cancelled from the UI, or replaced)
    result = run.result()
    assert result.status == "cancelled"
    assert cluster.deletions == [("jobplane-run-e-cancel", "Foreground")]
    assert cluster.names("jobs") == cluster.names("secrets") == []


def test_a_repeated_create_follows_the_existing_job_instead_of_making_a_second(cluster):
    executor = executor_for(cluster)
    first = Run(executor, spec("e-dup"))
    pod = cluster.wait_for_pod("e-dup")
    cluster.start_container(pod)
    second = Run(executor, spec("e-dup"))  # the same execution again (a repeated delivery)
    time.sleep(0.5)
    cluster.write_log(pod, "only once\n")
    cluster.terminate(pod, 0)
    assert first.result().status == second.result().status == "success"
    assert cluster.calls.count(("create", "batch", "jobs")) == 2  # the second create got 409 AlreadyExists
    assert cluster.names("jobs") == ["jobplane-run-e-dup"] and cluster.names("pods") == [pod]
    assert "already exists: following it" in second.text("system")
    assert "only once" in second.text("stdout")


def test_a_new_worker_reattaches_to_the_running_pod_and_continues_its_log(cluster):
    """The worker died after storing 'before'; the sweeper handed the run to a new worker, which
    follows the same pod from the dead worker's last heartbeat on."""
    first = Run(executor_for(cluster), spec("e-reattach"))
    pod = cluster.wait_for_pod("e-reattach")
    cluster.start_container(pod)
    stored_until = datetime.now(timezone.utc)
    cluster.write_log(pod, "before the crash\n", at=stored_until - timedelta(seconds=1))
    cluster.write_log(pod, "after the crash\n", at=stored_until + timedelta(milliseconds=500))
    # the new worker's executor: a fresh client, as in a restarted process
    second = Run(executor_for(cluster), spec("e-reattach", resume_log_after=stored_until))
    time.sleep(0.5)
    cluster.write_log(pod, "still running\n")
    cluster.terminate(pod, 0)
    assert second.result().status == "success"
    assert second.text("stdout") == "after the crash\nstill running\n"
    assert cluster.names("jobs") == ["jobplane-run-e-reattach"]
    first.result()


def test_a_secret_that_cannot_be_created_leaves_nothing_behind(tmp_path):
    """An RBAC Role without ``create secrets``: the Job was created first, so it is deleted, and
    the garbage collector takes its ConfigMap."""
    fake = FakeKubernetes(allowed=API_CALLS - {("create", "", "secrets")}).start()
    try:
        fake.kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        result = Run(executor_for(fake), spec("e-nosecret")).result()
        assert result.status == "failed"
        assert "could not create the script or secrets of Kubernetes Job jobplane-run-e-nosecret: 403 Forbidden" \
            in result.error_message
        assert fake.names("jobs") == fake.names("configmaps") == fake.names("secrets") == fake.names("pods") == []
    finally:
        fake.close()


def test_a_job_left_without_its_secret_by_a_dead_worker_gets_it_from_the_next(cluster):
    """A worker died between creating the Job and its Secret: the pod waits (the kubelet needs its
    envFrom source); the worker taking the run over creates what is missing, owned by that Job."""
    run_spec = spec("e-half")
    manifest = k8s_manifests.job_manifest(run_spec, k8s_manifests.ClusterSettings())
    status, job = cluster.create("jobs", "jobplane-jobs", manifest)
    assert status == 201 and cluster.names("secrets") == []
    run = Run(executor_for(cluster), run_spec)
    wait_for(lambda: cluster.names("secrets") == ["jobplane-run-e-half-env"], timeout=10, message="the secret")
    pod = cluster.wait_for_pod("e-half")
    cluster.start_container(pod)
    cluster.terminate(pod, 0)
    assert run.result().status == "success"
    assert cluster.get("secrets", "jobplane-run-e-half-env")["metadata"]["ownerReferences"][0]["uid"] == \
        job["metadata"]["uid"]
    assert cluster.names("jobs") == ["jobplane-run-e-half"]


def test_a_git_script_is_cloned_by_an_init_container_and_a_path_outside_it_is_refused(cluster):
    run = Run(executor_for(cluster), spec("e-git", script=None, script_url="https://git.example.com/ops.git",
                                          script_ref="v1", script_path="jobs/report.py", job_type="python"))
    pod = cluster.wait_for_pod("e-git")
    cluster.start_container(pod)
    cluster.terminate(pod, 0)
    assert run.result().status == "success"
    template = cluster.get("jobs", "jobplane-run-e-git")["spec"]["template"]["spec"]
    assert template["initContainers"][0]["name"] == "fetch-script"
    assert template["containers"][0]["command"] == ["python3", "-u", "/work/repo/jobs/report.py"]
    assert cluster.names("configmaps") == []

    refused = Run(executor_for(cluster), spec("e-git-bad", script=None, script_url="https://git.example.com/ops.git",
                                              script_path="../../etc/passwd")).result()
    assert refused.status == "failed" and "must be a relative path inside the repository" in refused.error_message
    assert "jobplane-run-e-git-bad" not in cluster.names("jobs")
