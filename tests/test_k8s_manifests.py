"""The Kubernetes manifests (k8s/), the images (Dockerfile, deploy/runner/Dockerfile) and the
examples in docs/kubernetes.md.

Every resource is validated in strict mode against the Kubernetes 1.29 schemas that
kubernetes-validate ships (and against its newest ones); the custom resources (KEDA, Prometheus
Operator), which those schemas do not cover, against structural schemas written from their
published field names (tests/k8s_crd_schemas.py). The kustomizations are rendered by the test's
kustomize subset (tests/kustomize_subset.py), which refuses anything it does not implement.

The images cannot be built here (no container engine): their Dockerfiles are parsed and checked.

k8s/base/executor-rbac.yaml belongs to the kubernetes executor's branch; these tests require it.
"""

from __future__ import annotations

import configparser
import copy
import fnmatch
import json
import re
import uuid
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import redis
import yaml
from dramatiq.brokers.redis import RedisBroker

from app.config import SETTINGS, load_settings
from app.executors.base import RunSpec
from app.executors.k8s_manifests import ClusterSettings, job_manifest
from app.migrate import MIGRATIONS_DIR
from app.observability.collector import QUEUES
from app.tasks.dispatch import (EXECUTIONS_BULK_QUEUE, EXECUTIONS_QUEUE, RUN_EXECUTION, RUN_EXECUTION_BULK, RUN_QUEUES,
                                send)
from tests.conftest import REDIS_URL
from tests.k8s_crd_schemas import SCHEMAS
from tests.kustomize_subset import (Unsupported, build, identity, load_documents, pod_spec, referenced_files,
                                    split_image)

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
SECRET_EXAMPLE = OVERLAY / "secret.example.yaml"
#: Files under k8s/ that no kustomization names, on purpose: the README, and the Secrets whose
#: placeholders must never be applied over real ones.
STANDALONE_FILES = {K8S / "README.md", SECRET_EXAMPLE}
#: The oldest Kubernetes Jobplane supports, and the newest schemas kubernetes-validate has.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
IMAGE = "ghcr.io/jobplane/jobplane"
RUNNER_IMAGE = "ghcr.io/jobplane/runner"
KNOWN_SETTINGS = {setting.env_name for setting in SETTINGS}
#: Environment variables of the Secret that are not Jobplane's: azure-identity's service principal.
AZURE_CREDENTIALS = {"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"}


@cache
def rendered(directory: Path = OVERLAY) -> tuple[dict, ...]:
    return tuple(build(directory))


def objects(kind: str, directory: Path = OVERLAY) -> list[dict]:
    return [obj for obj in rendered(directory) if obj["kind"] == kind]


def one(kind: str, name: str, directory: Path = OVERLAY) -> dict:
    (found,) = [obj for obj in objects(kind, directory) if obj["metadata"]["name"] == name]
    return found


def workloads() -> list[dict]:
    return [obj for obj in rendered() if pod_spec(obj) is not None]


def config_data() -> dict[str, str]:
    return one("ConfigMap", "jobplane-config")["data"]


def example_secrets() -> dict[str, dict[str, str]]:
    return {doc["metadata"]["name"]: doc["stringData"] for doc in load_documents(SECRET_EXAMPLE)}


def validate(document: dict, version: str) -> None:
    """Kubernetes' schema (strict: an unknown field fails), or the custom resource's structure."""
    schema = SCHEMAS.get((document["apiVersion"], document["kind"]))
    if schema is None:
        kubernetes_validate.validate(document, version, strict=True)
        return
    jsonschema.validate(document, schema)
    # what the custom resources embed from Kubernetes' own types, against Kubernetes' schemas
    if document["kind"] == "ScaledObject":
        behavior = document["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        if behavior is not None:
            kubernetes_validate.validate(_hpa_with(behavior), version, strict=True)
    if document["kind"] == "ServiceMonitor":
        kubernetes_validate.validate({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                      "metadata": {"name": "selector-check"},
                                      "spec": {"selector": document["spec"]["selector"]}}, version, strict=True)


def _hpa_with(behavior: dict) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "behavior-check"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
                     "maxReplicas": 1, "behavior": behavior}}


def docs_examples() -> list[dict]:
    """The Kubernetes resources shown in docs/kubernetes.md's YAML blocks."""
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    documents = []
    for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S):
        documents += [doc for doc in yaml.safe_load_all(block) if isinstance(doc, dict) and "kind" in doc]
    return documents


# --- schemas -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("directory", "version"), [(BASE, KUBERNETES_VERSIONS[0]), (OVERLAY, KUBERNETES_VERSIONS[0]),
                                                   (OVERLAY, KUBERNETES_VERSIONS[1])],
                         ids=["base-oldest", "overlay-oldest", "overlay-newest"])
def test_every_rendered_resource_validates(directory, version):
    # Given the kustomization rendered, When each resource is validated, Then none fails
    documents = rendered(directory)
    assert len(documents) >= 25
    for document in documents:
        validate(document, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_example_secrets_and_the_documented_resources_validate(version):
    documents = load_documents(SECRET_EXAMPLE) + docs_examples()
    assert {doc["kind"] for doc in documents} >= {"Secret", "HorizontalPodAutoscaler"}
    for document in documents:
        validate(document, version)


def test_validation_is_strict_about_field_names():
    # Given a Deployment, a ScaledObject and a Redis trigger with one misspelt field each
    deployment = copy.deepcopy(one("Deployment", "jobplane-web"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    scaled = copy.deepcopy(one("ScaledObject", "jobplane-worker"))
    scaled["spec"]["maxReplicas"] = 3
    misnamed = copy.deepcopy(one("ScaledObject", "jobplane-worker"))
    misnamed["spec"]["triggers"][0]["metadata"]["listname"] = misnamed["spec"]["triggers"][0]["metadata"].pop("listName")
    # Then validation fails for each
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, "1.29.0")
    for document in (scaled, misnamed):
        with pytest.raises(jsonschema.ValidationError):
            validate(document, "1.29.0")


def test_every_file_under_k8s_is_in_a_kustomization_and_every_named_file_exists():
    named: set[Path] = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        named |= referenced_files(kustomization.parent)
    missing = sorted(str(path) for path in named if not path.is_file())
    assert not missing, f"named by a kustomization but missing: {missing}"
    files = {path.resolve() for path in K8S.rglob("*") if path.is_file()}
    unnamed = sorted(str(path) for path in files - named - {p.resolve() for p in STANDALONE_FILES})
    assert not unnamed, f"in no kustomization: {unnamed}"
    assert (BASE / "executor-rbac.yaml").resolve() in named


def test_the_kustomize_subset_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\nnamespace: elsewhere\n")
    with pytest.raises(Unsupported, match="namespace"):
        build(tmp_path)
    (tmp_path / "patch.yaml").write_text("- {op: replace, path: /data/x, value: y}\n")
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\npatches: [{path: patch.yaml, target: {kind: ConfigMap, name: b}}]\n")
    with pytest.raises(ValueError, match="no resource matches"):
        build(tmp_path)


# --- the processes -------------------------------------------------------------------------------

def test_web_scheduler_worker_and_the_migration_run_the_jobplane_image_with_their_command():
    commands = {obj["metadata"]["name"]: pod_spec(obj)["containers"][0] for obj in workloads()}
    assert {name: container["args"] for name, container in commands.items()} == {
        "jobplane-web": ["web"], "jobplane-scheduler": ["scheduler"], "jobplane-worker": ["worker"],
        "jobplane-migrate": ["db", "upgrade"]}
    for container in commands.values():
        assert "command" not in container  # the image's ENTRYPOINT, `jobplane`
        name, tag, digest = split_image(container["image"])
        assert name == IMAGE and (digest or (tag and tag != "latest")), container["image"]


def test_replicas_web_two_or_more_by_its_autoscaler_scheduler_exactly_two_and_never_autoscaled():
    assert one("HorizontalPodAutoscaler", "jobplane-web")["spec"]["minReplicas"] >= 2
    assert one("ScaledObject", "jobplane-worker")["spec"]["minReplicaCount"] >= 1
    assert one("Deployment", "jobplane-scheduler")["spec"]["replicas"] == 2
    scaled = {obj["spec"]["scaleTargetRef"]["name"] for obj in objects("HorizontalPodAutoscaler")
              + objects("ScaledObject")}
    assert scaled == {"jobplane-web", "jobplane-worker"}
    for name in scaled:  # the autoscaler owns the count: a `replicas` would reset it at every apply
        assert "replicas" not in one("Deployment", name)["spec"]


def test_probes_use_health_for_liveness_and_ready_for_readiness_on_each_process_port():
    ports = {"jobplane-web": "JOBPLANE_PORT", "jobplane-scheduler": "JOBPLANE_SCHEDULER_METRICS_PORT",
             "jobplane-worker": "JOBPLANE_WORKER_METRICS_PORT"}
    for name, setting in ports.items():
        container = pod_spec(one("Deployment", name))["containers"][0]
        (port,) = container["ports"]
        assert port["containerPort"] == int(config_data()[setting])
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
        # readiness is "can do its work", the same for a scheduler standby as for the leader, so
        # a rolling update with maxUnavailable 0 never waits on a standby that cannot become ready
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
        strategy = one("Deployment", name)["spec"]["strategy"]["rollingUpdate"]
        assert strategy["maxUnavailable"] == 0
    # after a migration the old web pods turn unready at once: the new ones start together
    assert one("Deployment", "jobplane-web")["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == "100%"
    assert config_data()["JOBPLANE_METRICS_HOST"] == "0.0.0.0"  # else the kubelet cannot reach 9101/9102
    assert config_data()["JOBPLANE_HOST"] == "0.0.0.0"


def test_every_container_has_requests_and_limits_and_runs_locked_down():
    documented = [doc for doc in docs_examples() if pod_spec(doc) is not None]
    assert documented  # the downgrade Job of docs/kubernetes.md is held to the same rules
    for obj in workloads() + documented:
        spec = pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == image_user(ROOT / "Dockerfile")
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"] + spec.get("initContainers", []):
            assert set(container["resources"]) == {"requests", "limits"}
            for section in ("requests", "limits"):
                assert set(container["resources"][section]) == {"cpu", "memory"}, (obj["metadata"]["name"], section)
            assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                    "capabilities": {"drop": ["ALL"]}}
            mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
            volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
            assert all("emptyDir" in volumes[name] for name in mounts.values())
    for obj in workloads():
        assert "/tmp" in {mount["mountPath"] for mount in pod_spec(obj)["containers"][0]["volumeMounts"]}


def test_what_the_processes_write_is_on_an_emptydir():
    # the root filesystem is read-only: the metrics directory and run directories must be mounts
    for name in ("jobplane-web", "jobplane-worker"):
        container = pod_spec(one("Deployment", name))["containers"][0]
        mounted = [mount["mountPath"] for mount in container["volumeMounts"]]
        for setting in ("JOBPLANE_METRICS_DIR", "JOBPLANE_RUN_DIR"):
            path = config_data()[setting]
            assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounted), (name, setting)


def test_services_ingress_budgets_and_monitors_point_at_pods_and_ports_that_exist():
    pods = {obj["metadata"]["name"]: obj["spec"]["template"] for obj in objects("Deployment")}

    def selected(selector: dict) -> list[str]:
        return [name for name, template in pods.items()
                if selector.items() <= template["metadata"]["labels"].items()]

    port_names = {name: {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
                  for name, template in pods.items()}
    services = {obj["metadata"]["name"]: obj for obj in objects("Service")}
    for name, service in services.items():
        assert selected(service["spec"]["selector"]) == [name]
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names[name]
    for budget in objects("PodDisruptionBudget"):
        assert selected(budget["spec"]["selector"]["matchLabels"]) == [budget["metadata"]["name"]]
    backend = one("Ingress", "jobplane-web")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["port"]["name"] in {port["name"] for port in services[backend["name"]]["spec"]["ports"]}
    (monitor,) = objects("ServiceMonitor")
    monitored = [name for name, service in services.items()
                 if monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()]
    assert sorted(monitored) == ["jobplane-scheduler", "jobplane-web", "jobplane-worker"]  # the alert rules' jobs
    service_ports = {port["name"] for name in monitored for port in services[name]["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} == service_ports


def test_network_policies_deny_by_default_and_each_selects_pods():
    policies = objects("NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and p["metadata"]["namespace"] == "jobplane"]
    assert deny and not deny[0]["spec"].get("ingress") and not deny[0]["spec"].get("egress")
    assert set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    labels = [obj["spec"]["template"]["metadata"]["labels"] for obj in workloads()]
    for policy in policies:
        selector = policy["spec"]["podSelector"]
        if selector and policy["metadata"]["namespace"] == "jobplane":
            assert any(_matches(selector, pod_labels) for pod_labels in labels), policy["metadata"]["name"]
    in_jobs = [p for p in policies if p["metadata"]["namespace"] == "jobplane-jobs"]
    assert not any(p["spec"].get("ingress") for p in in_jobs)  # nothing reaches a run's pod
    blocks = [peer["ipBlock"] for p in in_jobs for rule in p["spec"].get("egress", [])
              for peer in rule["to"] if "ipBlock" in peer]
    assert blocks and all("169.254.169.254/32" in block["except"] for block in blocks)  # no node credentials


@pytest.mark.parametrize("network", [True, False])
def test_a_run_pod_has_egress_exactly_when_its_job_has_network(network):
    # The pod labels as the executor writes them (policies add up: a pod has egress if any policy
    # selecting it allows some, and is isolated for egress once any policy selects it for Egress)
    spec = RunSpec(execution_id="e1", job_type="bash", timeout_seconds=60, script="true", network=network)
    pod_labels = job_manifest(spec, ClusterSettings())["spec"]["template"]["metadata"]["labels"]
    selecting = [p for p in objects("NetworkPolicy") if p["metadata"]["namespace"] == "jobplane-jobs"
                 and _matches(p["spec"]["podSelector"], pod_labels)]
    assert any("Egress" in p["spec"]["policyTypes"] for p in selecting)
    assert any(p["spec"].get("egress") for p in selecting) is network


def _matches(selector: dict, labels: dict) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] in ("In", "NotIn")
        if (labels.get(expression["key"]) in expression["values"]) != (expression["operator"] == "In"):
            return False
    return True


# --- settings and secrets ------------------------------------------------------------------------

def test_the_settings_in_the_configmap_and_the_example_secret_are_jobplane_settings_that_load():
    environ = {**config_data(), **example_secrets()["jobplane-secrets"]}
    jobplane = {name for name in environ if name.startswith("JOBPLANE_")}
    assert set(environ) - jobplane <= AZURE_CREDENTIALS
    assert jobplane <= KNOWN_SETTINGS, "an unknown JOBPLANE_* name stops start-up"
    settings = load_settings({k: v for k, v in environ.items() if k in KNOWN_SETTINGS})
    assert settings["EXECUTOR_DEFAULT"] == "kubernetes" and settings["K8S_NAMESPACE"] == "jobplane-jobs"
    assert settings["ENV"] == "production" and settings["BEHIND_PROXY"] is True
    assert config_data()["JOBPLANE_EXECUTOR_DEFAULT"] == "kubernetes"
    # no bubblewrap in a restricted pod: a `local` run must fail, not run beside the worker's secrets
    assert settings["SANDBOX"] == "bubblewrap"


def test_secret_values_come_from_the_secret_not_the_configmap():
    secret_settings = {"JOBPLANE_DATABASE_URL", "JOBPLANE_REDIS_URL", "JOBPLANE_SECRET_KEY",
                       "JOBPLANE_OIDC_CLIENT_SECRET", "JOBPLANE_SMTP_PASSWORD", "JOBPLANE_SENTRY_DSN"}
    assert not secret_settings & set(config_data())
    assert {"JOBPLANE_DATABASE_URL", "JOBPLANE_REDIS_URL", "JOBPLANE_SECRET_KEY"} <= set(
        example_secrets()["jobplane-secrets"])
    for obj in workloads():
        env_from = pod_spec(obj)["containers"][0]["envFrom"]
        assert env_from == [{"configMapRef": {"name": "jobplane-config"}},
                            {"secretRef": {"name": "jobplane-secrets"}}]
        assert "env" not in pod_spec(obj)["containers"][0]
    values = [v for secret in example_secrets().values() for v in secret.values()]
    assert all("CHANGE-ME" in v or "example" in v or v == "jobplane" for v in values)  # placeholders only


# --- the migration Job ---------------------------------------------------------------------------

def test_the_migration_job_and_what_it_needs_carry_the_migrate_phase_label():
    job = one("Job", "jobplane-migrate")
    phase = {identity(obj) for obj in rendered()
             if obj["metadata"].get("labels", {}).get("jobplane.io/phase") == "migrate"}
    spec = pod_spec(job)
    needs = {("Job", "jobplane", "jobplane-migrate"), ("Namespace", "", "jobplane"),
             ("ServiceAccount", "jobplane", spec["serviceAccountName"]),
             ("ConfigMap", "jobplane", spec["containers"][0]["envFrom"][0]["configMapRef"]["name"])}
    assert needs <= phase
    # the policies that let its pod reach DNS and the database come with it, the deny-all first
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    egress = [obj for obj in objects("NetworkPolicy") if obj["metadata"]["namespace"] == job["metadata"]["namespace"]
              and _matches(obj["spec"]["podSelector"], job_labels) and "Egress" in obj["spec"]["policyTypes"]]
    assert {identity(obj) for obj in egress} <= phase
    assert any(5432 in {p["port"] for p in rule.get("ports", [])} for obj in egress for rule in obj["spec"].get("egress", []))
    # no Deployment is in the phase: they come after the Job completed
    assert not [kind for kind, _, _ in phase if kind == "Deployment"]
    assert spec["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] <= 3
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"


# --- the executor ---------------------------------------------------------------------------------

def test_the_worker_runs_as_the_executor_account_bound_in_the_jobs_namespace():
    worker = pod_spec(one("Deployment", "jobplane-worker"))
    assert worker["serviceAccountName"] == "jobplane-executor" and worker["automountServiceAccountToken"] is True
    assert one("ServiceAccount", "jobplane-executor")["metadata"]["namespace"] == "jobplane"
    (binding,) = objects("RoleBinding")
    assert binding["metadata"]["namespace"] == config_data()["JOBPLANE_K8S_NAMESPACE"] == "jobplane-jobs"
    assert {"kind": "ServiceAccount", "name": "jobplane-executor", "namespace": "jobplane"} in binding["subjects"]
    role = one("Role", binding["roleRef"]["name"])
    assert role["metadata"]["namespace"] == "jobplane-jobs"
    granted = {resource for rule in role["rules"] for resource in rule["resources"]}
    assert granted <= {"jobs", "pods", "pods/log", "configmaps", "secrets"}
    assert not objects("ClusterRole") and not objects("ClusterRoleBinding")
    # every other pod has no Kubernetes API token
    for obj in workloads():
        if obj["metadata"]["name"] != "jobplane-worker":
            assert pod_spec(obj)["automountServiceAccountToken"] is False
    name, tag, _ = split_image(config_data()["JOBPLANE_K8S_IMAGE"])
    assert name == RUNNER_IMAGE and tag and tag != "latest"


# --- autoscaling on the queue --------------------------------------------------------------------

def test_keda_watches_the_redis_lists_dramatiq_keeps_the_run_queues_in():
    # Given a Dramatiq Redis broker with a namespace of its own on the test Redis
    namespace = f"k8s-test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    broker = RedisBroker(client=client, namespace=namespace)  # its close() leaves a client it made open
    try:
        for queue_name, actor_name in ((EXECUTIONS_QUEUE, RUN_EXECUTION), (EXECUTIONS_BULK_QUEUE, RUN_EXECUTION_BULK)):
            # When one run is sent now and one with a delay (a retry waiting for its backoff)
            broker.declare_queue(queue_name)
            send(broker, queue_name, actor_name, str(uuid.uuid4()))
            send(broker, queue_name, actor_name, str(uuid.uuid4()), delay_seconds=3600)
            # Then the runnable one is in <namespace>:<queue> (bodies in .msgs), the delayed one is not
            assert client.llen(f"{namespace}:{queue_name}") == 1
            assert client.hlen(f"{namespace}:{queue_name}.msgs") == 1
            assert client.llen(f"{namespace}:{queue_name}.DQ") == 1
    finally:
        client.delete(*client.keys(f"{namespace}:*") or ["-"])
        client.close()
    # And the ScaledObject watches both lanes' lists under the namespace the deployment uses
    queue_namespace = config_data().get("JOBPLANE_QUEUE_NAMESPACE",
                                        next(s.default for s in SETTINGS if s.key == "QUEUE_NAMESPACE"))
    scaled = one("ScaledObject", "jobplane-worker")
    triggers = scaled["spec"]["triggers"]
    assert [t["type"] for t in triggers] == ["redis"] * len(RUN_QUEUES)
    assert [t["metadata"]["listName"] for t in triggers] == [f"{queue_namespace}:{name}" for name in RUN_QUEUES]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "jobplane-worker"
    # And it reaches the same Redis as Jobplane's URL says, with credentials the Secret holds
    url = urlsplit(example_secrets()["jobplane-secrets"]["JOBPLANE_REDIS_URL"])
    for trigger in triggers:
        assert trigger["metadata"]["databaseIndex"] == (url.path.strip("/") or "0")
    (auth_name,) = {trigger["authenticationRef"]["name"] for trigger in triggers}
    auth = one("TriggerAuthentication", auth_name)
    keda_secret = {ref["parameter"]: example_secrets()[ref["name"]][ref["key"]]
                   for ref in auth["spec"]["secretTargetRef"]}
    assert keda_secret["address"] == f"{url.hostname}:{url.port}"
    assert "password" in keda_secret


def test_the_documented_hpa_alternative_scales_the_worker_on_the_queue_depth_metric():
    (hpa,) = [doc for doc in docs_examples() if doc["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "jobplane-worker"
    metrics = hpa["spec"]["metrics"]
    assert [metric["type"] for metric in metrics] == ["External"] * len(RUN_QUEUES)
    assert {metric["external"]["metric"]["name"] for metric in metrics} == {"jobplane_queue_depth"}
    # one per run queue: the bulk lane's waiting runs count too
    assert [metric["external"]["metric"]["selector"]["matchLabels"] for metric in metrics] == [
        {"queue": name, "state": "ready"} for name in RUN_QUEUES]
    exposed = (ROOT / "app" / "observability" / "collector.py").read_text()
    assert '"jobplane_queue_depth"' in exposed
    assert set(RUN_QUEUES) <= set(QUEUES)


# --- the images -----------------------------------------------------------------------------------

def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        lines.append(current.strip())
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def image_user(path: Path) -> int:
    user = [args for instruction, args in dockerfile(path) if instruction == "USER"][-1]
    return int(user.split(":")[0])


def env_names(instructions: list[tuple[str, str]]) -> set[str]:
    return {name for instruction, args in instructions if instruction == "ENV"
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args)}


@pytest.mark.parametrize("path", [ROOT / "Dockerfile", ROOT / "deploy" / "runner" / "Dockerfile"],
                         ids=["jobplane", "runner"])
def test_images_have_a_pinned_base_a_non_root_user_and_no_secrets(path):
    instructions = dockerfile(path)
    bases = [args for instruction, args in instructions if instruction == "FROM"]
    assert bases
    for base in bases:
        _, tag, digest = split_image(base.split()[0])
        assert digest or re.fullmatch(r"\d+\.\d+\.\d+-slim-\w+", tag or ""), f"unpinned base {base}"
    assert image_user(path) >= 1000  # numeric, so runAsNonRoot can verify it
    names = env_names(instructions)
    assert not [n for n in names if re.search(r"SECRET|PASSWORD|TOKEN|_KEY$|DSN|DATABASE_URL|REDIS_URL", n)]
    assert {n for n in names if n.startswith("JOBPLANE_")} <= KNOWN_SETTINGS
    assert not [args for instruction, args in instructions if instruction in {"ARG"} and "SECRET" in args.upper()]


def test_the_jobplane_image_starts_the_console_script_and_holds_what_it_reads():
    instructions = dockerfile(ROOT / "Dockerfile")
    (entrypoint,) = [json.loads(args) for instruction, args in instructions if instruction == "ENTRYPOINT"]
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    scripts = {line.split("=")[0].strip() for line in setup["options.entry_points"]["console_scripts"].splitlines()
               if line.strip()}
    assert entrypoint == ["jobplane"] and "jobplane" in scripts
    copied = {source for instruction, args in instructions if instruction == "COPY" for source in args.split()[:-1]}
    # the Alembic scripts (for `jobplane db upgrade` and /ready) sit next to the app package
    assert MIGRATIONS_DIR.name in copied and "app" in copied and "setup.cfg" in copied
    for source in copied:
        assert (ROOT / source).exists(), source
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert {".git", ".venv", ".test-services.env"} <= set(ignored)
    assert not [s for s in copied for pattern in ignored if fnmatch.fnmatch(s, pattern)], "COPY of an ignored path"


def test_the_runner_image_has_a_writable_workdir_for_its_user():
    instructions = dockerfile(ROOT / "deploy" / "runner" / "Dockerfile")
    (workdir,) = [args for instruction, args in instructions if instruction == "WORKDIR"]
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert f"--uid {image_user(ROOT / 'deploy' / 'runner' / 'Dockerfile')}" in runs
    assert f"chown runner:runner {workdir}" in runs
    base = [args for instruction, args in instructions if instruction == "FROM"][0]
    assert base.startswith("python:3.")  # Python 3, and Debian's bash
