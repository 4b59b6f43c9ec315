"""The Kubernetes objects of one run: its Job, the ConfigMap holding its script, the Secret
holding its secret values.

Every name derives from the execution id, so creating the same run twice is seen (409
AlreadyExists) rather than done twice.  The ConfigMap and the Secret are owned by the Job
(``ownerReferences``): deleting the Job, or its TTL after it finished, deletes them too.
Secret values appear only in the Secret; the Job references it with ``envFrom``.
"""

from __future__ import annotations

import base64
import math
import posixpath
from dataclasses import dataclass, field
from typing import Any

from app.executors.base import RunSpec

#: Labels linking pod → Job → execution (and job); ``app.kubernetes.io/managed-by`` finds them all.
MANAGED_BY = "app.kubernetes.io/managed-by"
EXECUTION_LABEL = "jobplane.io/execution-id"
JOB_LABEL = "jobplane.io/job-id"
ATTEMPT_LABEL = "jobplane.io/attempt"
#: ``"off"`` on the pods of jobs without network access: a NetworkPolicy selecting it denies egress.
NETWORK_LABEL = "jobplane.io/network"
#: The run's container (the Git clone is the init container ``fetch-script``).
CONTAINER = "run"
#: Where the script is mounted (ConfigMap) or cloned (Git), and the run's writable home.
SCRIPT_DIR = "/jobplane"
WORK_DIR = "/work"
SCRIPT_FILES = {"python": "script.py", "bash": "script.sh"}
INTERPRETERS = {"python": ["python3", "-u"], "bash": ["bash"]}

#: The init container's clone: shallow, at the job's ref, with no prompt.
_CLONE = ('set -eu; git init -q "$REPO"; '
          'git -C "$REPO" fetch -q --depth 1 "$JOBPLANE_SCRIPT_URL" "$JOBPLANE_SCRIPT_REF"; '
          'git -C "$REPO" checkout -q FETCH_HEAD')


@dataclass(frozen=True)
class ClusterSettings:
    """Where and how runs are placed (from the JOBPLANE_K8S_* settings)."""

    namespace: str = "jobplane-jobs"
    image: str = "ghcr.io/jobplane/runner:latest"
    git_image: str = "alpine/git:2.47.2"
    service_account: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    ttl_seconds: int = 3600


class ManifestError(ValueError):
    """The run cannot be expressed as a Kubernetes Job; the message says which field to fix."""


def job_name(execution_id: str) -> str:
    """The Job's name: one per execution, so a repeated create collides instead of duplicating."""
    return f"jobplane-run-{execution_id}"


def config_map_name(execution_id: str) -> str:
    return f"{job_name(execution_id)}-script"


def secret_name(execution_id: str) -> str:
    return f"{job_name(execution_id)}-env"


def labels(spec: RunSpec) -> dict[str, str]:
    found = {MANAGED_BY: "jobplane", EXECUTION_LABEL: spec.execution_id, ATTEMPT_LABEL: str(spec.attempt)}
    if spec.job_id:
        found[JOB_LABEL] = spec.job_id
    return found


def execution_selector(execution_id: str) -> str:
    return f"{EXECUTION_LABEL}={execution_id}"


def job_manifest(spec: RunSpec, cluster: ClusterSettings) -> dict[str, Any]:
    """The Job running ``spec``: no retries (Jobplane owns them), the timeout as its deadline.

    Raises:
      ManifestError: a Git script path that leaves the repository.
    """
    name = job_name(spec.execution_id)
    pod_labels = {**labels(spec), NETWORK_LABEL: "on" if spec.network else "off"}
    volumes: list[dict[str, Any]] = [{"name": "work", "emptyDir": {}}]
    mounts = [{"name": "work", "mountPath": WORK_DIR}]
    init_containers = []
    if spec.script_url:
        script = posixpath.join(WORK_DIR, "repo", _repository_path(spec.script_path or ""))
        init_containers.append({
            "name": "fetch-script", "image": cluster.git_image, "command": ["sh", "-c", _CLONE],
            "env": [{"name": "REPO", "value": f"{WORK_DIR}/repo"}, {"name": "HOME", "value": WORK_DIR},
                    {"name": "GIT_TERMINAL_PROMPT", "value": "0"},
                    {"name": "JOBPLANE_SCRIPT_URL", "value": spec.script_url},
                    {"name": "JOBPLANE_SCRIPT_REF", "value": spec.script_ref or "HEAD"}],
            "volumeMounts": mounts, "resources": _resources(1, 256), "securityContext": _container_security()})
    else:
        script = posixpath.join(SCRIPT_DIR, SCRIPT_FILES[spec.job_type])
        volumes.append({"name": "script", "configMap": {"name": config_map_name(spec.execution_id)}})
        mounts = mounts + [{"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True}]
    plain = {"HOME": WORK_DIR, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", **spec.env}
    # a secret wins over a plain variable of the same name (as in the local executor): env would
    # override envFrom, so the plain one is left out
    env = [{"name": key, "value": value} for key, value in plain.items() if key not in spec.secret_env]
    container: dict[str, Any] = {
        "name": CONTAINER, "image": spec.image or cluster.image,
        "command": INTERPRETERS[spec.job_type] + [script], "workingDir": WORK_DIR, "env": env,
        "resources": _resources(spec.limits.cpus, spec.limits.memory_mb), "volumeMounts": mounts,
        "securityContext": _container_security()}
    if spec.secret_env:
        container["envFrom"] = [{"secretRef": {"name": secret_name(spec.execution_id)}}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container], "volumes": volumes}
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if cluster.service_account:
        pod_spec["serviceAccountName"] = cluster.service_account
    if cluster.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": secret} for secret in cluster.image_pull_secrets]
    if cluster.node_selector:
        pod_spec["nodeSelector"] = dict(cluster.node_selector)
    if cluster.tolerations:
        pod_spec["tolerations"] = [dict(toleration) for toleration in cluster.tolerations]
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": cluster.namespace, "labels": labels(spec)},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": max(1, math.ceil(spec.timeout_seconds)),
                 "ttlSecondsAfterFinished": cluster.ttl_seconds,
                 "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec}}}


def config_map_manifest(spec: RunSpec, cluster: ClusterSettings, owner_uid: str) -> dict[str, Any] | None:
    """The ConfigMap holding an inline script (None for a Git script)."""
    if spec.script_url:
        return None
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _owned_metadata(spec, cluster, config_map_name(spec.execution_id), owner_uid),
            "data": {SCRIPT_FILES[spec.job_type]: spec.script or ""}}


def secret_manifest(spec: RunSpec, cluster: ClusterSettings, owner_uid: str) -> dict[str, Any] | None:
    """The Secret holding the run's secret values (None when the job has none)."""
    if not spec.secret_env:
        return None
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
            "metadata": _owned_metadata(spec, cluster, secret_name(spec.execution_id), owner_uid),
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in spec.secret_env.items()}}


def _owned_metadata(spec: RunSpec, cluster: ClusterSettings, name: str, owner_uid: str) -> dict[str, Any]:
    return {"name": name, "namespace": cluster.namespace, "labels": labels(spec),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name(spec.execution_id),
                                 "uid": owner_uid}]}


def _resources(cpus: int, memory_mb: int) -> dict[str, Any]:
    amount = {"cpu": str(cpus), "memory": f"{memory_mb}Mi"}
    return {"requests": dict(amount), "limits": dict(amount)}


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _repository_path(path: str) -> str:
    normalized = posixpath.normpath(path)
    if not path or path.startswith("/") or normalized == ".." or normalized.startswith("../"):
        raise ManifestError(f"script_path {path!r} must be a relative path inside the repository")
    return normalized
