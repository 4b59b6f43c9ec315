"""The kubernetes executor: a run is a Kubernetes Job, followed until its pod is done.

The worker creates the Job first, then its ConfigMap (the script) and Secret (the secret
values), both owned by the Job; if either fails, the Job is deleted, and with it whatever was
created.  The pod cannot start before both exist (the kubelet waits for its volumes and its
``envFrom``), so the order costs nothing.  A create that finds the Job already there (a repeated
delivery, or a new worker taking over a run whose worker died) follows the existing Job instead.

While the run lasts the worker watches the pod, streams its log (``follow``) into the same
masking log writer as the local executor, enforces the timeout and notices cancels; both
delete the Job with foreground propagation.  ``API_CALLS`` lists every call made, and the
executor's RBAC Role (``k8s/base/executor-rbac.yaml``) grants exactly those.
"""

from __future__ import annotations

import codecs
import functools
import json
import logging
import queue
import threading
import time
from datetime import datetime, timezone
from typing import Any, Mapping

from kubernetes import client, config as kube_config, watch
from kubernetes.client.exceptions import ApiException

from app.executors import k8s_manifests as manifests
from app.executors import k8s_status
from app.executors.base import OutputSink, RunResult, RunSpec, Tick

logger = logging.getLogger(__name__)

#: Every (verb, API group, resource) this executor calls: the RBAC Role grants these and no more.
API_CALLS = frozenset({
    ("create", "batch", "jobs"), ("get", "batch", "jobs"), ("delete", "batch", "jobs"),
    ("create", "", "configmaps"), ("create", "", "secrets"),
    ("list", "", "pods"), ("watch", "", "pods"), ("get", "", "pods/log"),
})

#: How long the coordinating loop waits for an event before checking the deadline and the claim.
_POLL_SECONDS = 0.25
#: How often the Job's own conditions are read (Kubernetes' deadline, a pod lost with its node).
_JOB_CHECK_SECONDS = 5.0
#: After the container ended, how long to wait for the rest of its log.
_DRAIN_SECONDS = 5.0


class KubernetesExecutor:
    """Runs scripts as Kubernetes Jobs.

    Parameters:
      api_client: a configured ``kubernetes.client.ApiClient``.
      cluster: namespace, images and pod placement of the runs.
      kill_grace_seconds: after a timeout or cancel, how long to wait for the pod to go.
      pending_timeout_seconds: a pod that cannot be scheduled or started this long fails the run.
      watch_seconds: length of each pod watch request.
    """

    sandboxed = True  # a container of its own, with its own limits

    def __init__(self, *, api_client: client.ApiClient, cluster: manifests.ClusterSettings,
                 kill_grace_seconds: float = 10.0, pending_timeout_seconds: float = 300.0,
                 watch_seconds: float = 5.0, job_check_seconds: float = _JOB_CHECK_SECONDS):
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.cluster = cluster
        self.kill_grace_seconds = kill_grace_seconds
        self.pending_timeout_seconds = pending_timeout_seconds
        self.watch_seconds = watch_seconds
        self.job_check_seconds = job_check_seconds

    def run(self, spec: RunSpec, *, output: OutputSink, tick: Tick) -> RunResult:
        """Run ``spec`` as a Job (or follow its existing Job) to its end, its timeout, or a cancel."""
        started = datetime.now(timezone.utc)
        name = manifests.job_name(spec.execution_id)
        try:
            manifest = manifests.job_manifest(spec, self.cluster)
        except manifests.ManifestError as exc:
            return _failed(str(exc), started=None)
        try:
            job, existed = self._create_or_find_job(manifest)
        except ApiException as exc:
            return _failed(f"could not create the Kubernetes Job {name}: {_api_error(exc)}", started=None)
        if existed:
            output("system", f"[jobplane] Kubernetes Job {name} already exists: following it\n")
        tick()  # a heartbeat between API calls: a slow API server must not make the run look dead
        try:
            self._create_owned(spec, job.metadata.uid)
        except ApiException as exc:
            self.delete_job(name)
            return _failed(f"could not create the script or secrets of Kubernetes Job {name}: {_api_error(exc)}; "
                           "the Job was deleted", started=None)
        return _Follower(self, spec, output, tick, started).wait()

    def delete_job(self, name: str) -> bool:
        """Delete a Job and (foreground) its pod, ConfigMap and Secret. False if it was gone already."""
        try:
            self.batch.delete_namespaced_job(
                name, self.cluster.namespace, body=client.V1DeleteOptions(propagation_policy="Foreground"))
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _create_or_find_job(self, manifest: dict[str, Any]) -> tuple[Any, bool]:
        try:
            # the manifest as it is: the client serializes a dict body unchanged (what the tests validate)
            return self.batch.create_namespaced_job(self.cluster.namespace, manifest), False
        except ApiException as exc:
            if exc.status != 409:
                raise
        return self.batch.read_namespaced_job(manifest["metadata"]["name"], self.cluster.namespace), True

    def _create_owned(self, spec: RunSpec, owner_uid: str) -> None:
        """The ConfigMap and the Secret, each once: one left by an earlier worker is kept."""
        config_map = manifests.config_map_manifest(spec, self.cluster, owner_uid)
        secret = manifests.secret_manifest(spec, self.cluster, owner_uid)
        for create, body in ((self.core.create_namespaced_config_map, config_map),
                             (self.core.create_namespaced_secret, secret)):
            if body is None:
                continue
            try:
                create(self.cluster.namespace, body)
            except ApiException as exc:
                if exc.status != 409:
                    raise


class _Follower:
    """Follows one run's pod: watch and log threads feed a queue this loop consumes, so that only
    this thread calls ``output`` and ``tick`` (the log writer is not thread-safe)."""

    def __init__(self, executor: KubernetesExecutor, spec: RunSpec, output: OutputSink, tick: Tick,
                 started: datetime):
        self.executor = executor
        self.spec = spec
        self.output = output
        self.tick = tick
        self.started = started
        self.name = manifests.job_name(spec.execution_id)
        self.events: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.pod: Any = None
        self.pod_gone = False
        self.log_thread: threading.Thread | None = None
        self.log_done = False
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.reason: str | None = None  # timed_out / cancelled, once we stop it
        self.problem: str | None = None  # an error that ends the run (image pull, unschedulable)

    def wait(self) -> RunResult:
        watcher = threading.Thread(target=self._watch_pods, name=f"k8s-watch-{self.name}", daemon=True)
        watcher.start()
        now = time.monotonic()
        deadline = now + self.spec.timeout_seconds
        pending_until = now + self.executor.pending_timeout_seconds
        next_job_check = now + self.executor.job_check_seconds
        stop_until = ended_at = None
        try:
            while True:
                self._drain(_POLL_SECONDS)
                now = time.monotonic()
                if self.reason is not None:
                    self.tick()  # keep flushing the log and heartbeating while the pod goes
                    if self.pod_gone or (self.log_done and self._verdict()) or now >= stop_until:
                        return self._stopped_result()
                    continue
                verdict = self._verdict()
                if verdict is not None:
                    self.tick()  # the log's last lines are still coming: keep flushing them
                    ended_at = ended_at or now
                    if self.log_done or self.log_thread is None or now - ended_at >= _DRAIN_SECONDS:
                        return self._result(verdict)
                    continue
                problem = self._fatal_problem(now >= pending_until)
                if problem:
                    self.output("system", f"\n[jobplane] {problem}; deleting the Job\n")
                    self.executor.delete_job(self.name)
                    return _failed(problem, started=self.started)
                if self.pod_gone and self.pod is not None:
                    # the Job controller deletes the pod at activeDeadlineSeconds: its condition says so
                    failure = self._job_failure()
                    if failure is not None and failure.status == "timed_out":
                        return self._result(failure)
                    return _failed("the pod was deleted before its container finished (someone deleted it, or "
                                   "its node went away)", started=self.started)
                if now >= deadline:
                    stop_until = self._stop("timed_out")
                elif not self.tick():
                    stop_until = self._stop("cancelled")
                elif now >= next_job_check:
                    next_job_check = now + self.executor.job_check_seconds
                    failure = self._job_failure()
                    if failure is not None:
                        return self._result(failure)
        finally:
            self.stop.set()
            self._drain(0)

    # -- the events --------------------------------------------------------------------------
    def _drain(self, wait: float) -> None:
        try:
            item = self.events.get(timeout=wait) if wait else self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(*item)
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                return

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "pod":
            event_type, pod = payload
            if event_type == "DELETED":
                self.pod_gone = True
            self.pod = pod
            if self.log_thread is None and k8s_status.started(pod):
                self.log_thread = threading.Thread(target=self._follow_log, args=(pod.metadata.name,),
                                                   name=f"k8s-log-{self.name}", daemon=True)
                self.log_thread.start()
        elif kind == "log":
            text = self.decoder.decode(payload)
            if text:
                self.output("stdout", text)
        elif kind == "log_end":
            rest = self.decoder.decode(b"", final=True)
            if rest:
                self.output("stdout", rest)
            self.log_done = True
        elif kind == "error":
            self.output("system", f"[jobplane] {payload}\n")

    # -- decisions ---------------------------------------------------------------------------
    def _verdict(self) -> k8s_status.Verdict | None:
        if self.pod is None:
            return None
        return k8s_status.finished(self.pod, memory_mb=self.spec.limits.memory_mb)

    def _fatal_problem(self, pending_too_long: bool) -> str | None:
        if self.pod is None:
            return (f"no pod was created for the Job within {self.executor.pending_timeout_seconds:g} s"
                    if pending_too_long else None)
        pull = k8s_status.image_pull_failure(self.pod)
        if pull:
            return pull
        if pending_too_long and not k8s_status.started(self.pod):
            reason = k8s_status.pending_reason(self.pod) or "the pod did not start"
            return f"{reason} (still pending after {self.executor.pending_timeout_seconds:g} s)"
        return None

    def _job_failure(self) -> k8s_status.Verdict | None:
        try:
            job = self.executor.batch.read_namespaced_job(self.name, self.executor.cluster.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return k8s_status.Verdict("failed", None, f"the Kubernetes Job {self.name} was deleted by "
                                                          "someone else")
            logger.warning("execution %s: could not read its Job: %s", self.spec.execution_id, _api_error(exc))
            return None
        return k8s_status.job_failure(job)

    def _stop(self, reason: str) -> float:
        self.reason = reason
        what = "timeout reached" if reason == "timed_out" else "run cancelled"
        self.output("system", f"\n[jobplane] {what}: deleting Kubernetes Job {self.name} (foreground)\n")
        try:
            self.executor.delete_job(self.name)
        except ApiException as exc:
            self.output("system", f"[jobplane] could not delete the Job: {_api_error(exc)}\n")
        return time.monotonic() + self.executor.kill_grace_seconds + _DRAIN_SECONDS

    def _result(self, verdict: k8s_status.Verdict) -> RunResult:
        return RunResult(verdict.status, verdict.exit_code, verdict.message, self.started,
                         datetime.now(timezone.utc), True)

    def _stopped_result(self) -> RunResult:
        if self.reason == "timed_out":
            message = f"timed out after {self.spec.timeout_seconds:g} s; the Kubernetes Job was deleted"
        else:
            message = "run stopped: its claim was revoked or it was cancelled; the Kubernetes Job was deleted"
        verdict = self._verdict()
        return RunResult(self.reason, verdict.exit_code if verdict else None, message, self.started,
                         datetime.now(timezone.utc), True)

    # -- the threads -------------------------------------------------------------------------
    def _watch_pods(self) -> None:
        """List the run's pod, then watch it from that resourceVersion, renewing the watch."""
        core, namespace = self.executor.core, self.executor.cluster.namespace
        selector = manifests.execution_selector(self.spec.execution_id)
        resource_version = None
        watcher = watch.Watch()
        while not self.stop.is_set():
            try:
                if resource_version is None:
                    listed = core.list_namespaced_pod(namespace, label_selector=selector)
                    for pod in listed.items:
                        self.events.put(("pod", ("ADDED", pod)))
                    resource_version = listed.metadata.resource_version
                for event in watcher.stream(core.list_namespaced_pod, namespace, label_selector=selector,
                                            resource_version=resource_version,
                                            timeout_seconds=max(1, int(self.executor.watch_seconds)),
                                            _request_timeout=self.executor.watch_seconds + 10):
                    self.events.put(("pod", (event["type"], event["object"])))
                    resource_version = watcher.resource_version or resource_version
                    if self.stop.is_set():
                        watcher.stop()
                        break
            except ApiException as exc:
                if exc.status == 410:  # expired: list again
                    resource_version = None
                    continue
                self.events.put(("error", f"watching the pod failed: {_api_error(exc)}; retrying"))
                self.stop.wait(1.0)
            except Exception as exc:  # a dropped connection: renew the watch
                logger.warning("execution %s: pod watch interrupted: %s", self.spec.execution_id, exc)
                self.stop.wait(0.5)

    def _follow_log(self, pod_name: str) -> None:
        """Stream the container's log as it is written, until it ends."""
        resume = self.spec.resume_log_after
        kwargs: dict[str, Any] = {"container": manifests.CONTAINER, "follow": True, "_preload_content": False}
        if resume is not None:
            # a new worker taking over: what the last one stored ends at its last heartbeat
            kwargs.update(timestamps=True, since_seconds=max(1, int(
                (datetime.now(timezone.utc) - resume).total_seconds()) + 1))
        try:
            response = self.executor.core.read_namespaced_pod_log(pod_name, self.executor.cluster.namespace,
                                                                  **kwargs)
            lines = _AfterTimestamp(resume) if resume is not None else None
            try:
                for chunk in response.stream(65536, decode_content=False):
                    data = lines.feed(chunk) if lines else chunk
                    if data:
                        self.events.put(("log", data))
                    if self.stop.is_set():
                        break
                if lines:
                    self.events.put(("log", lines.feed(b"", final=True)))
            finally:
                response.release_conn()
        except ApiException as exc:
            self.events.put(("error", f"could not read the pod's log: {_api_error(exc)}"))
        except Exception as exc:
            logger.warning("execution %s: log stream interrupted: %s", self.spec.execution_id, exc)
            self.events.put(("error", "the pod's log stream was interrupted; later output is missing"))
        self.events.put(("log_end", None))


class _AfterTimestamp:
    """Filters a timestamped log (``timestamps=true``) to the lines written after ``after``,
    dropping the timestamps: a taken-over run's log continues where the dead worker stopped."""

    def __init__(self, after: datetime):
        self.after = after
        self.buffer = b""

    def feed(self, data: bytes, final: bool = False) -> bytes:
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()  # an unfinished line waits for its end
        kept = [text + b"\n" for text in map(self._text_after, lines) if text is not None]
        if final and self.buffer:
            last, self.buffer = self._text_after(self.buffer), b""
            if last is not None:
                kept.append(last)
        return b"".join(kept)

    def _text_after(self, line: bytes) -> bytes | None:
        stamp, _, text = line.partition(b" ")
        written = _parse_time(stamp)
        if written is None:
            return line  # not timestamped after all: keep it whole
        return text if written > self.after else None


def _parse_time(stamp: bytes) -> datetime | None:
    text = stamp.decode("ascii", errors="replace").rstrip("Z")
    whole, _, fraction = text.partition(".")
    try:
        parsed = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return parsed.replace(microsecond=int((fraction + "000000")[:6])) if fraction else parsed


def _failed(message: str, *, started: datetime | None) -> RunResult:
    return RunResult("failed", None, message, started, datetime.now(timezone.utc), True)


def _api_error(exc: ApiException) -> str:
    """The API server's message (its Status body), not the whole HTTP exchange."""
    try:
        body = json.loads(exc.body or "")
        return f"{exc.status} {body.get('reason') or exc.reason}: {body.get('message')}"
    except (ValueError, AttributeError):
        return f"{exc.status} {exc.reason}"


@functools.lru_cache(maxsize=4)
def _api_client(kubeconfig: str | None) -> client.ApiClient:
    """One API client per process (and kubeconfig): its connection pool is shared by the threads."""
    configuration = client.Configuration()
    # each run holds up to three connections (watch, log follow, calls); a worker runs many at once
    configuration.connection_pool_maxsize = 64
    if kubeconfig:
        kube_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        kube_config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


def kubernetes_executor_for(config: Mapping[str, Any]) -> KubernetesExecutor:
    """The kubernetes executor configured by the JOBPLANE_K8S_* settings."""
    cluster = manifests.ClusterSettings(
        namespace=config["K8S_NAMESPACE"], image=config["K8S_IMAGE"], git_image=config["K8S_GIT_IMAGE"],
        service_account=config["K8S_SERVICE_ACCOUNT"],
        image_pull_secrets=tuple(config["K8S_IMAGE_PULL_SECRETS"] or ()),
        node_selector=dict(config["K8S_NODE_SELECTOR"] or {}), tolerations=tuple(config["K8S_TOLERATIONS"] or ()),
        ttl_seconds=config["K8S_TTL_SECONDS"])
    return KubernetesExecutor(api_client=_api_client(config["K8S_KUBECONFIG"]), cluster=cluster,
                              kill_grace_seconds=config["KILL_GRACE_SECONDS"],
                              pending_timeout_seconds=config["K8S_PENDING_TIMEOUT_SECONDS"],
                              watch_seconds=config["K8S_WATCH_SECONDS"])
