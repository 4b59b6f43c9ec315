"""The executor's RBAC Role (k8s/base/executor-rbac.yaml) grants exactly what the kubernetes
executor calls: its declared ``API_CALLS``, which ``FakeKubernetes`` (standing for the API
server) enforces by refusing anything else, and which one run is seen to use in full."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from app.executors.kubernetes import API_CALLS
from tests.executors.kube_runs import Run, executor_for, spec

RBAC = Path(__file__).resolve().parents[2] / "k8s" / "base" / "executor-rbac.yaml"


def documents() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(RBAC.read_text()) if doc}


def granted(role: dict) -> set[tuple[str, str, str]]:
    return {(verb, group, resource) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_the_role_grants_exactly_the_calls_the_executor_declares():
    role = documents()["Role"]
    assert role["metadata"]["namespace"] == "jobplane-jobs"
    assert granted(role) == set(API_CALLS)
    assert not any("*" in value for rule in role["rules"] for values in rule.values() for value in values)


def test_the_binding_gives_the_role_to_the_workers_service_account():
    docs = documents()
    account, binding = docs["ServiceAccount"], docs["RoleBinding"]
    assert (account["metadata"]["name"], account["metadata"]["namespace"]) == ("jobplane-executor", "jobplane")
    assert binding["metadata"]["namespace"] == "jobplane-jobs"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": docs["Role"]["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "jobplane-executor", "namespace": "jobplane"}]


def test_every_declared_call_is_one_the_executor_makes(cluster):
    """A repeated create (get Job), the Job check, a timeout (delete): every grant is used, so none
    is there for nothing; and the fake refused nothing, so no call is missing from the Role."""
    executor = executor_for(cluster, job_check_seconds=0.2)
    first = Run(executor, spec("e-rbac", timeout_seconds=2))
    pod = cluster.wait_for_pod("e-rbac")
    cluster.start_container(pod)
    cluster.write_log(pod, "x\n")
    second = Run(executor, spec("e-rbac", timeout_seconds=2))
    time.sleep(0.5)
    assert first.result().status == "timed_out"
    second.result()
    assert set(cluster.calls) == set(API_CALLS)
    assert cluster.refused == []
