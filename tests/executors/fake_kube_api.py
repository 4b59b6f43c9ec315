"""A protocol peer that stands for a Kubernetes API server (with its Job controller, garbage
collector and a kubelet the test drives).

``FakeKubernetes`` is a threaded HTTP server speaking the REST paths the kubernetes executor
uses, through the real ``kubernetes`` client: create/get/delete Jobs, create ConfigMaps and
Secrets, list and watch pods (newline-delimited JSON events, chunked, from a resourceVersion,
ended after ``timeoutSeconds``), and read a pod's log (``follow`` as a chunked stream that ends
when the container does; ``timestamps`` and ``sinceSeconds``).  Its objects look like a real
server's: ``metadata.uid``, ``resourceVersion``, ``creationTimestamp``, ``ownerReferences``,
``status.conditions``, ``containerStatuses`` with ``terminated.reason``/``exitCode``; a duplicate
create answers 409 AlreadyExists; a Job deleted with ``propagationPolicy`` takes its pods,
ConfigMaps and Secrets (owner references) with it; an object whose owner does not exist is
collected at once, as the garbage collector would.

Like RBAC, it refuses (403) any call outside ``allowed``, and records every (verb, group,
resource) it answered in ``calls``.  The test plays the kubelet: ``start``, ``write_log``,
``terminate``, ``fail_image_pull``, ``unschedulable``, ``evict``; or ``ScriptKubelet`` runs the
ConfigMap's script as a local process with the Secret's values in its environment.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

TOKEN = "fake-cluster-token"

_PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[a-z.]+)/v1)/namespaces/(?P<ns>[^/]+)/(?P<resource>[a-z]+)"
                   r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>log))?$")
_KINDS = {"jobs": ("batch/v1", "Job"), "configmaps": ("v1", "ConfigMap"), "secrets": ("v1", "Secret"),
          "pods": ("v1", "Pod")}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKubernetes:
    """Stands for a Kubernetes API server; see the module docstring."""

    def __init__(self, *, allowed: frozenset[tuple[str, str, str]]):
        self.allowed = allowed
        self.cond = threading.Condition()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (resource, namespace, name)
        self.version = 1000
        self.pod_events: list[tuple[int, str, dict[str, Any]]] = []  # (resourceVersion, type, pod)
        self.logs: dict[str, list[tuple[datetime, bytes]]] = {}  # pod name → written pieces
        self.log_closed: set[str] = set()
        self.calls: list[tuple[str, str, str]] = []
        self.refused: list[tuple[str, str, str]] = []
        self.deletions: list[tuple[str, str | None]] = []  # (job name, propagationPolicy)
        self.creations: list[tuple[str, str]] = []  # (resource, name) of every create answered
        self.on_pod_created: Callable[[dict[str, Any]], None] | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="fake-kubernetes", daemon=True)

    # -- life ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeKubernetes":
        self.thread.start()
        return self

    def close(self) -> None:
        with self.cond:
            self.log_closed.update(self.logs)
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def write_kubeconfig(self, path: Path, namespace: str = "jobplane-jobs") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}]}))
        return path

    # -- what the test reads -------------------------------------------------------------------
    def get(self, resource: str, name: str, namespace: str = "jobplane-jobs") -> dict[str, Any] | None:
        with self.cond:
            found = self.objects.get((resource, namespace, name))
            return json.loads(json.dumps(found)) if found else None

    def names(self, resource: str) -> list[str]:
        with self.cond:
            return sorted(name for kind, _, name in self.objects if kind == resource)

    def wait_for_pod(self, execution_id: str, timeout: float = 10.0) -> str:
        """The name of the run's pod, once the Job controller made it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for (kind, _, name), pod in self.objects.items():
                    if kind == "pods" and pod["metadata"]["labels"].get("jobplane.io/execution-id") == execution_id:
                        return name
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no pod for execution {execution_id}; objects: {list(self.objects)}")
                self.cond.wait(remaining)

    # -- the kubelet, driven by the test --------------------------------------------------------
    def start_container(self, pod: str) -> None:
        self._set_status(pod, phase="Running", conditions=_conditions(scheduled=True, ready=True),
                         state={"running": {"startedAt": _now()}}, ready=True)

    def write_log(self, pod: str, text: str, *, at: datetime | None = None) -> None:
        with self.cond:
            self.logs.setdefault(pod, []).append((at or datetime.now(timezone.utc), text.encode()))
            self.cond.notify_all()

    def terminate(self, pod: str, exit_code: int, reason: str | None = None, message: str | None = None) -> None:
        """The container ends: the log closes, the pod and its Job finish."""
        reason = reason or ("Completed" if exit_code == 0 else "Error")
        terminated = {"exitCode": exit_code, "reason": reason, "startedAt": _now(), "finishedAt": _now()}
        if message:
            terminated["message"] = message
        with self.cond:
            self.log_closed.add(pod)
            self.logs.setdefault(pod, [])
        phase = "Succeeded" if exit_code == 0 else "Failed"
        self._set_status(pod, phase=phase, conditions=_conditions(scheduled=True, ready=False),
                         state={"terminated": terminated}, ready=False)
        self._finish_job(pod, succeeded=exit_code == 0,
                         reason="Completed" if exit_code == 0 else "BackoffLimitExceeded",
                         message="Reached expected number of succeeded pods" if exit_code == 0
                         else "Job has reached the specified backoff limit")

    def fail_image_pull(self, pod: str, reason: str = "ImagePullBackOff") -> None:
        with self.cond:
            image = self.objects[("pods", "jobplane-jobs", pod)]["spec"]["containers"][0]["image"]
        self._set_status(pod, phase="Pending", conditions=_conditions(scheduled=True, ready=False),
                         state={"waiting": {"reason": reason,
                                            "message": f'Back-off pulling image "{image}": not found'}}, ready=False)

    def unschedulable(self, pod: str) -> None:
        conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                       "lastTransitionTime": _now(),
                       "message": "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are "
                                  "available: 3 No preemption victims found for incoming pod."}]
        self._set_status(pod, phase="Pending", conditions=conditions, state=None, ready=False)

    def evict(self, pod: str) -> None:
        with self.cond:
            self.log_closed.add(pod)
            self.logs.setdefault(pod, [])
            self.cond.notify_all()
        self._set_status(pod, phase="Failed", conditions=_conditions(scheduled=True, ready=False),
                         state={"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                               "startedAt": _now(), "finishedAt": _now()}},
                         ready=False, reason="Evicted",
                         message="The node was low on resource: memory. Threshold quantity: 100Mi, available: 20Mi.")

    def exceed_deadline(self, job_name: str) -> None:
        """The Job controller at ``activeDeadlineSeconds``: the Job fails, its pods are deleted."""
        with self.cond:
            job = self.objects[("jobs", "jobplane-jobs", job_name)]
            job["status"] = {"startTime": job["status"].get("startTime", _now()), "failed": 1, "active": 0,
                             "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                             "message": "Job was active longer than specified deadline",
                                             "lastProbeTime": _now(), "lastTransitionTime": _now()}]}
            job["metadata"]["resourceVersion"] = self._next_version()
            for key, obj in list(self.objects.items()):
                if key[0] == "pods" and obj["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]:
                    del self.objects[key]
                    self.log_closed.add(key[2])
                    self._changed("DELETED", obj)

    # -- the server's state -------------------------------------------------------------------
    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    def _set_status(self, pod: str, *, phase: str, conditions: list, state: dict | None, ready: bool,
                    reason: str | None = None, message: str | None = None) -> None:
        with self.cond:
            obj = self.objects[("pods", "jobplane-jobs", pod)]
            container = obj["spec"]["containers"][0]
            status: dict[str, Any] = {"phase": phase, "conditions": conditions, "hostIP": "10.0.0.7",
                                      "podIP": "10.244.1.23", "startTime": obj["status"].get("startTime", _now()),
                                      "qosClass": "Guaranteed"}
            if state is not None:
                status["containerStatuses"] = [{"name": container["name"], "image": container["image"],
                                                "imageID": "", "ready": ready, "restartCount": 0,
                                                "started": "running" in state, "state": state}]
            if reason:
                status["reason"], status["message"] = reason, message
            obj["status"] = status
            self._changed("MODIFIED", obj)

    def _finish_job(self, pod: str, *, succeeded: bool, reason: str, message: str) -> None:
        with self.cond:
            owner = self.objects[("pods", "jobplane-jobs", pod)]["metadata"]["ownerReferences"][0]["name"]
            job = self.objects.get(("jobs", "jobplane-jobs", owner))
            if job is None:
                return
            kind = "Complete" if succeeded else "Failed"
            job["status"] = {"startTime": job["status"].get("startTime", _now()), "completionTime": _now(),
                             "succeeded" if succeeded else "failed": 1, "active": 0,
                             "conditions": [{"type": kind, "status": "True", "reason": reason, "message": message,
                                             "lastProbeTime": _now(), "lastTransitionTime": _now()}]}
            job["metadata"]["resourceVersion"] = self._next_version()

    def _changed(self, event_type: str, pod: dict[str, Any]) -> None:
        pod["metadata"]["resourceVersion"] = self._next_version()
        self.pod_events.append((int(pod["metadata"]["resourceVersion"]), event_type, json.loads(json.dumps(pod))))
        self.cond.notify_all()

    def create(self, resource: str, namespace: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body["metadata"]["name"]
        api_version, kind = _KINDS[resource]
        with self.cond:
            if (resource, namespace, name) in self.objects:
                qualified = "jobs.batch" if resource == "jobs" else resource
                return 409, _status(409, "AlreadyExists", f'{qualified} "{name}" already exists')
            obj = {**body, "apiVersion": api_version, "kind": kind}
            obj["metadata"] = {**body["metadata"], "namespace": namespace, "uid": str(uuid.uuid4()),
                               "resourceVersion": self._next_version(), "creationTimestamp": _now(), "generation": 1}
            owners = obj["metadata"].get("ownerReferences") or []
            job_uids = {o["metadata"]["uid"] for (k, _, _), o in self.objects.items() if k == "jobs"}
            self.creations.append((resource, name))
            if owners and not any(owner["uid"] in job_uids for owner in owners):
                return 201, obj  # its owner is gone: the garbage collector deletes it at once
            if resource == "jobs":
                obj["status"] = {"startTime": _now(), "active": 1}
                obj["spec"]["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": obj["metadata"]["uid"]}}
            self.objects[(resource, namespace, name)] = obj
            created_pod = self._create_pod(obj) if resource == "jobs" else None
        if created_pod is not None and self.on_pod_created is not None:
            self.on_pod_created(created_pod)
        return 201, obj

    def _create_pod(self, job: dict[str, Any]) -> dict[str, Any]:
        """The Job controller: one pod from the template, owned by the Job."""
        template = json.loads(json.dumps(job["spec"]["template"]))
        name = f"{job['metadata']['name']}-{uuid.uuid4().hex[:5]}"
        labels = {**template["metadata"].get("labels", {}), "job-name": job["metadata"]["name"],
                  "batch.kubernetes.io/job-name": job["metadata"]["name"],
                  "batch.kubernetes.io/controller-uid": job["metadata"]["uid"],
                  "controller-uid": job["metadata"]["uid"]}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": job["metadata"]["namespace"], "uid": str(uuid.uuid4()),
                            "creationTimestamp": _now(), "labels": labels,
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                                                 "uid": job["metadata"]["uid"], "controller": True,
                                                 "blockOwnerDeletion": True}]},
               "spec": {**template["spec"], "nodeName": "node-1"},
               "status": {"phase": "Pending", "qosClass": "Guaranteed", "startTime": _now(),
                          "conditions": _conditions(scheduled=True, ready=False)}}
        self.objects[("pods", job["metadata"]["namespace"], name)] = pod
        self._changed("ADDED", pod)
        return json.loads(json.dumps(pod))

    def delete_job(self, namespace: str, name: str, policy: str | None) -> tuple[int, dict[str, Any]]:
        with self.cond:
            job = self.objects.pop(("jobs", namespace, name), None)
            if job is None:
                return 404, _status(404, "NotFound", f'jobs.batch "{name}" not found')
            self.deletions.append((name, policy))
            uid = job["metadata"]["uid"]
            for key, obj in list(self.objects.items()):
                if any(owner["uid"] == uid for owner in obj["metadata"].get("ownerReferences") or []):
                    del self.objects[key]
                    if key[0] == "pods":
                        self.log_closed.add(key[2])
                        self._changed("DELETED", obj)
            self.cond.notify_all()
            return 200, job

    def list_pods(self, namespace: str, selector: str) -> dict[str, Any]:
        with self.cond:
            items = [json.loads(json.dumps(obj)) for (kind, ns, _), obj in self.objects.items()
                     if kind == "pods" and ns == namespace and _matches(obj, selector)]
            return {"apiVersion": "v1", "kind": "PodList", "items": items,
                    "metadata": {"resourceVersion": str(self.version)}}


def _conditions(*, scheduled: bool, ready: bool) -> list[dict[str, Any]]:
    return [{"type": "PodScheduled", "status": "True" if scheduled else "False", "lastTransitionTime": _now()},
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": _now()}]


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _matches(obj: dict[str, Any], selector: str) -> bool:
    labels = obj["metadata"].get("labels") or {}
    pairs = [part.split("=", 1) for part in selector.split(",") if part]
    return all(labels.get(key) == value for key, value in pairs)


def _handler(cluster: FakeKubernetes):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def do_DELETE(self):
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null") if length else None
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._json(401, _status(401, "Unauthorized", "Unauthorized"))
            match = _PATH.match(url.path)
            if not match:
                return self._json(404, _status(404, "NotFound", f"the server could not find {url.path}"))
            group, namespace, resource = match["group"] or "", match["ns"], match["resource"]
            name, sub = match["name"], match["sub"]
            if sub:
                resource = f"{resource}/{sub}"
            verb = {"POST": "create", "DELETE": "delete"}.get(method) or (
                "get" if name else ("watch" if _parse_bool(query.get("watch")) else "list"))
            call = (verb, group, resource)
            with cluster.cond:
                if call not in cluster.allowed:
                    cluster.refused.append(call)
                    return self._json(403, _status(403, "Forbidden", f'{resource} is forbidden: User '
                                                   f'"system:serviceaccount:jobplane:jobplane-executor" cannot {verb} '
                                                   f'resource "{resource}" in API group "{group}" in the namespace '
                                                   f'"{namespace}"'))
                cluster.calls.append(call)
            if verb == "create":
                return self._json(*cluster.create(resource, namespace, body))
            if verb == "delete":
                policy = (body or {}).get("propagationPolicy") or query.get("propagationPolicy")
                return self._json(*cluster.delete_job(namespace, name, policy))
            if resource == "pods/log":
                return self._log(name, query)
            if verb == "get":
                found = cluster.get(resource, name, namespace)
                if found is None:
                    return self._json(404, _status(404, "NotFound", f'{resource} "{name}" not found'))
                return self._json(200, found)
            if verb == "list":
                return self._json(200, cluster.list_pods(namespace, query.get("labelSelector", "")))
            return self._watch(namespace, query)

        def _json(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _start_chunked(self, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _watch(self, namespace: str, query: dict[str, str]) -> None:
            since = int(query.get("resourceVersion") or 0)
            deadline = time.monotonic() + float(query.get("timeoutSeconds") or 30)
            selector = query.get("labelSelector", "")
            self._start_chunked("application/json")
            try:
                while True:
                    with cluster.cond:
                        fresh = [(version, kind, pod) for version, kind, pod in cluster.pod_events
                                 if version > since and pod["metadata"]["namespace"] == namespace
                                 and _matches(pod, selector)]
                        if not fresh:
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                break
                            cluster.cond.wait(min(remaining, 0.5))
                            continue
                    for version, kind, pod in fresh:
                        self._chunk(json.dumps({"type": kind, "object": pod}).encode() + b"\n")
                        since = version
                self._chunk(b"")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _log(self, pod: str, query: dict[str, str]) -> None:
            with cluster.cond:
                if ("pods", "jobplane-jobs", pod) not in cluster.objects:
                    return self._json(404, _status(404, "NotFound", f'pods "{pod}" not found'))
            follow = _parse_bool(query.get("follow"))
            stamps = _parse_bool(query.get("timestamps"))
            since = (datetime.now(timezone.utc) - timedelta(seconds=int(query["sinceSeconds"]))
                     if query.get("sinceSeconds") else None)
            self._start_chunked("text/plain")
            sent = 0
            try:
                while True:
                    with cluster.cond:
                        pieces = cluster.logs.get(pod, [])[sent:]
                        closed = pod in cluster.log_closed
                        if not pieces and not closed and follow:
                            cluster.cond.wait(0.5)
                            continue
                    for written, data in pieces:
                        sent += 1
                        if since and written < since:
                            continue
                        if stamps:
                            stamp = written.strftime("%Y-%m-%dT%H:%M:%S.%f000Z").encode()
                            data = b"".join(stamp + b" " + line for line in data.splitlines(keepends=True))
                        self._chunk(data)
                    if closed or not follow:
                        break
                self._chunk(b"")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler


class ScriptKubelet:
    """Plays the kubelet for whole runs: once the pod's ConfigMap (and Secret, if it uses one)
    exist, it runs the script locally with bash or python3, the container's env and the Secret's
    values, streams its output as the pod's log, and terminates the container with its exit code."""

    def __init__(self, cluster: FakeKubernetes):
        self.cluster = cluster
        self.threads: list[threading.Thread] = []

    def __call__(self, pod: dict[str, Any]) -> None:
        thread = threading.Thread(target=self._run, args=(pod,), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _run(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        env = {"PATH": "/usr/bin:/bin"}
        env.update({item["name"]: item["value"] for item in container.get("env", [])})
        files = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the kubelet waits for the volumes and envFrom sources
            config_maps = [v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v]
            secrets = [source["secretRef"]["name"] for source in container.get("envFrom", [])]
            found_maps = [self.cluster.get("configmaps", n) for n in config_maps]
            found_secrets = [self.cluster.get("secrets", n) for n in secrets]
            if all(found_maps) and all(found_secrets):
                for config_map in found_maps:
                    files.update(config_map["data"])
                for secret in found_secrets:
                    env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
                break
            time.sleep(0.05)
        else:
            return
        with tempfile.TemporaryDirectory() as workdir:
            for file_name, content in files.items():
                Path(workdir, file_name).write_text(content)
            command = [part.replace("/jobplane/", workdir + "/") for part in container["command"]]
            env["HOME"] = workdir
            self.cluster.start_container(name)
            with subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) as process:
                for line in iter(process.stdout.readline, b""):
                    self.cluster.write_log(name, line.decode())
                code = process.wait()
        if ("pods", "jobplane-jobs", name) in self.cluster.objects:
            self.cluster.terminate(name, code)


def run_in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``target`` in a thread; its return value (or exception) lands in the dict."""
    box: dict[str, Any] = {}

    def body():
        try:
            box["result"] = target()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, box


def _parse_bool(value: str | None) -> bool:
    """A boolean query parameter as the API server reads it (Go's strconv.ParseBool): the Python
    client sends ``watch=True``, kubectl ``watch=true``."""
    return value in ("1", "t", "T", "TRUE", "true", "True")
