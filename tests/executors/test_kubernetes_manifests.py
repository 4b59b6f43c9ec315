"""Every Job, ConfigMap and Secret the kubernetes executor generates is valid against the
Kubernetes schemas (kubernetes-validate, strict: no unknown fields) for 1.29, the oldest version
Jobplane supports, and for the newest the validator ships."""

from __future__ import annotations

import pytest
import kubernetes_validate

from app.executors import k8s_manifests as manifests
from app.executors.base import ResourceLimits, RunSpec

VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())

CLUSTER = manifests.ClusterSettings(
    namespace="jobplane-jobs", image="ghcr.io/jobplane/runner:1.0", service_account="jobplane-run",
    image_pull_secrets=("registry-credentials",), node_selector={"pool": "jobs"},
    tolerations=({"key": "jobs", "operator": "Exists", "effect": "NoSchedule"},), ttl_seconds=600)

SPECS = {
    "inline bash with secrets": RunSpec(execution_id="5b0f8a52-0c1e-4c35-9f8e-3f0c2f1f9d11", job_type="bash",
                                        script="echo hi", timeout_seconds=90.5, job_id="a1", attempt=2,
                                        env={"A": "1"}, secret_env={"TOKEN": "s3cret"},
                                        limits=ResourceLimits(cpus=4, memory_mb=8192)),
    "python without network or secrets": RunSpec(execution_id="e2", job_type="python", script="print(1)",
                                                 timeout_seconds=3600, network=False, image="python:3.12-slim"),
    "git script": RunSpec(execution_id="e3", job_type="python", script_url="https://git.example.com/ops.git",
                          script_ref="main", script_path="jobs/report.py", timeout_seconds=60,
                          secret_env={"DB_PASSWORD": "pw"}),
}


def generated(run: RunSpec) -> list[dict]:
    owner_uid = "0d5b9d7e-7f0f-4c4b-8f3c-3f1f5c7d9e21"
    return [doc for doc in (manifests.job_manifest(run, CLUSTER), manifests.config_map_manifest(run, CLUSTER, owner_uid),
                            manifests.secret_manifest(run, CLUSTER, owner_uid)) if doc is not None]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_generated_objects_validate_against_the_kubernetes_schemas(name, version):
    for document in generated(SPECS[name]):
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_refuses_a_broken_job():
    """The check itself can fail: a Job with a misspelled field is refused."""
    job = manifests.job_manifest(SPECS["git script"], CLUSTER)
    job["spec"]["backofLimit"] = job["spec"].pop("backoffLimit")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[0], strict=True)


def test_secret_values_appear_only_in_the_secret():
    run = SPECS["inline bash with secrets"]
    job, config_map, secret = generated(run)
    assert "s3cret" not in repr(job) and "s3cret" not in repr(config_map)
    assert secret["data"] == {"TOKEN": "czNjcmV0"}
    assert job["spec"]["activeDeadlineSeconds"] == 91 and job["spec"]["ttlSecondsAfterFinished"] == 600
    assert job["spec"]["template"]["metadata"]["labels"]["jobplane.io/attempt"] == "2"
