"""Reading a run's outcome from its pod and its Job, with an error message that says why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.executors.k8s_manifests import CONTAINER

#: Waiting reasons meaning the image will not come (the kubelet already tried at least once).
IMAGE_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")


@dataclass(frozen=True)
class Verdict:
    status: str  # success, failed, timed_out
    exit_code: int | None
    message: str | None


def finished(pod: Any, *, memory_mb: int) -> Verdict | None:
    """The outcome of a pod that is done (its container terminated, or the pod failed), else None."""
    status = pod.status
    if status is None:
        return None
    if status.phase == "Failed" and status.reason == "Evicted":
        return Verdict("failed", None, f"the pod was evicted by Kubernetes: {status.message or 'no reason given'} "
                                       "(node pressure; the run may be retried)")
    init_failure = _failed_init(pod)
    if init_failure:
        return init_failure
    terminated = _run_state(pod, "terminated")
    if terminated is not None:
        code = terminated.exit_code
        if terminated.reason == "OOMKilled":
            return Verdict("failed", code, f"killed: out of memory (the run's limit is {memory_mb} MiB; raise "
                                           "memory_limit_mb if it needs more)")
        if code == 0:
            return Verdict("success", 0, None)
        detail = f" ({terminated.message.strip()})" if terminated.message and terminated.message.strip() else ""
        return Verdict("failed", code, f"exited with code {code}{detail}")
    if status.phase == "Failed":
        if status.reason == "DeadlineExceeded":
            return Verdict("timed_out", None, "Kubernetes stopped the Job at its deadline")
        return Verdict("failed", None, f"the pod failed: {status.reason or 'Failed'}: {status.message or ''}".strip())
    return None


def image_pull_failure(pod: Any) -> str | None:
    """Why the image of a container cannot be pulled, if that is what holds the pod back."""
    for container in _statuses(pod):
        waiting = container.state.waiting if container.state else None
        if waiting is not None and waiting.reason in IMAGE_PULL_FAILURES:
            return (f"could not pull the image {container.image!r}: {waiting.reason}: "
                    f"{waiting.message or 'no detail'} (check the image name and JOBPLANE_K8S_IMAGE_PULL_SECRETS)")
    return None


def pending_reason(pod: Any) -> str | None:
    """Why a pod has not started its container yet (unschedulable, a config error), if Kubernetes says."""
    status = pod.status
    if status is None:
        return None
    for condition in status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return f"the pod could not be scheduled: {condition.reason}: {condition.message or ''}".strip()
    for container in _statuses(pod):
        waiting = container.state.waiting if container.state else None
        if waiting is not None and waiting.reason not in (None, "ContainerCreating", "PodInitializing"):
            return f"the container could not start: {waiting.reason}: {waiting.message or ''}".strip()
    return None


def started(pod: Any) -> bool:
    """Whether the run's container has started (running or already done): its log can be read."""
    return _run_state(pod, "running") is not None or _run_state(pod, "terminated") is not None


def job_failure(job: Any) -> Verdict | None:
    """A Job that Kubernetes itself failed (its deadline, a lost pod), from its conditions."""
    status = job.status
    for condition in (status.conditions or []) if status else []:
        if condition.type == "Failed" and condition.status == "True":
            if condition.reason == "DeadlineExceeded":
                return Verdict("timed_out", None, "Kubernetes stopped the Job at its activeDeadlineSeconds")
            return Verdict("failed", None, f"the Kubernetes Job failed: {condition.reason}: {condition.message or ''}"
                           .strip())
    return None


def _failed_init(pod: Any) -> Verdict | None:
    for container in pod.status.init_container_statuses or []:
        terminated = container.state.terminated if container.state else None
        if terminated is not None and terminated.exit_code != 0:
            return Verdict("failed", None, f"could not fetch the script from Git (init container {container.name} "
                                           f"exited with code {terminated.exit_code}); check script_url and "
                                           "script_ref")
    return None


def _run_state(pod: Any, state: str) -> Any:
    for container in (pod.status.container_statuses or []) if pod.status else []:
        if container.name == CONTAINER and container.state is not None:
            return getattr(container.state, state)
    return None


def _statuses(pod: Any) -> list[Any]:
    if pod.status is None:
        return []
    return list(pod.status.init_container_statuses or []) + list(pod.status.container_statuses or [])
