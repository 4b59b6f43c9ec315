"""Running the kubernetes executor in a test: against ``FakeKubernetes`` (which stands for the
Kubernetes API server), in a thread, with what it printed kept."""

from __future__ import annotations

from app.executors.base import ResourceLimits, RunSpec
from app.executors.k8s_manifests import ClusterSettings
from app.executors.kubernetes import KubernetesExecutor, _api_client
from tests.executors.fake_kube_api import run_in_thread
from tests.helpers import wait_for

SECRET = "hunter2-very-secret"


def executor_for(cluster, **overrides) -> KubernetesExecutor:
    options = {"kill_grace_seconds": 0.5, "pending_timeout_seconds": 30, "watch_seconds": 1,
               "job_check_seconds": 0.5, **overrides}
    return KubernetesExecutor(api_client=_api_client(str(cluster.kubeconfig)), cluster=ClusterSettings(),
                              **options)


def spec(execution_id: str, **fields) -> RunSpec:
    values = {"job_type": "bash", "script": "echo hello", "timeout_seconds": 30, "job_id": "job-1",
              "env": {"GREETING": "hi"}, "secret_env": {"API_TOKEN": SECRET},
              "limits": ResourceLimits(cpus=2, memory_mb=512), **fields}
    return RunSpec(execution_id=execution_id, **values)


class Run:
    """An executor run in a thread, with what it printed and whether it should stop."""

    def __init__(self, executor: KubernetesExecutor, run_spec: RunSpec):
        self.output: list[tuple[str, str]] = []
        self.keep_going = True
        self.thread, self.box = run_in_thread(lambda: executor.run(
            run_spec, output=lambda stream, text: self.output.append((stream, text)), tick=lambda: self.keep_going))

    def result(self, timeout: float = 20):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the run did not end; output: {self.output}"
        if "error" in self.box:
            raise self.box["error"]
        return self.box["result"]

    def text(self, stream: str | None = None) -> str:
        return "".join(text for s, text in self.output if stream is None or s == stream)


def following(cluster) -> None:
    """Wait until the executor saw the container start (it asked for its log)."""
    wait_for(lambda: ("get", "", "pods/log") in cluster.calls, timeout=10, message="the log follow")
