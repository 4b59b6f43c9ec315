"""Structural schemas of the custom resources k8s/ uses, which kubernetes-validate does not know:
KEDA's ScaledObject and TriggerAuthentication (keda.sh/v1alpha1, field names from KEDA's
ScaledObject specification and the Redis Lists scaler's parameter list, keda.sh/docs) and the
Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1).

They are written by hand from those published field names and close every object they describe
(``additionalProperties: false``), so a misspelt field fails; values nested from Kubernetes' own
types (the HPA behaviour, label selectors) are checked against Kubernetes' schemas by the test.
"""

from __future__ import annotations

from typing import Any


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT = {"type": "object"}  # a Kubernetes type, checked against Kubernetes' schema elsewhere


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _closed({"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": _METADATA,
                    "spec": spec}, required=("apiVersion", "kind", "metadata", "spec"))


_METADATA = _closed({"name": _STRING, "namespace": _STRING, "labels": _STRING_MAP, "annotations": _STRING_MAP},
                    required=("name", "namespace"))

#: The Redis Lists scaler's parameters (every value is a string).
REDIS_SCALER_METADATA = _closed({key: _STRING for key in (
    "address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "username", "usernameFromEnv",
    "password", "passwordFromEnv", "listName", "listLength", "activationListLength", "databaseIndex",
    "enableTLS", "unsafeSsl")}, required=("listName", "listLength"))

SCALED_OBJECT = _resource("keda.sh/v1alpha1", "ScaledObject", _closed({
    "scaleTargetRef": _closed({"apiVersion": _STRING, "kind": _STRING, "name": _STRING,
                               "envSourceContainerName": _STRING}, required=("name",)),
    "pollingInterval": _INTEGER,
    "cooldownPeriod": _INTEGER,
    "initialCooldownPeriod": _INTEGER,
    "idleReplicaCount": _INTEGER,
    "minReplicaCount": _INTEGER,
    "maxReplicaCount": _INTEGER,
    "fallback": _closed({"failureThreshold": _INTEGER, "replicas": _INTEGER, "behavior": _STRING}),
    "advanced": _closed({
        "restoreToOriginalReplicaCount": {"type": "boolean"},
        "horizontalPodAutoscalerConfig": _closed({"name": _STRING, "behavior": _OBJECT}),
        "scalingModifiers": _OBJECT,
    }),
    "triggers": {"type": "array", "minItems": 1, "items": _closed({
        "type": _STRING,
        "name": _STRING,
        "metadata": _STRING_MAP,
        "authenticationRef": _closed({"name": _STRING, "kind": {"enum": ["TriggerAuthentication",
                                                                          "ClusterTriggerAuthentication"]}},
                                     required=("name",)),
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "useCachedMetrics": {"type": "boolean"},
    }, required=("type", "metadata")) | {
        # a redis trigger's parameters are the Redis Lists scaler's
        "if": {"properties": {"type": {"const": "redis"}}},
        "then": {"properties": {"metadata": REDIS_SCALER_METADATA}}}},
}, required=("scaleTargetRef", "triggers")))

TRIGGER_AUTHENTICATION = _resource("keda.sh/v1alpha1", "TriggerAuthentication", _closed({
    "secretTargetRef": {"type": "array", "items": _closed(
        {"parameter": _STRING, "name": _STRING, "key": _STRING}, required=("parameter", "name", "key"))},
    "env": {"type": "array", "items": _closed(
        {"parameter": _STRING, "name": _STRING, "containerName": _STRING}, required=("parameter", "name"))},
    "podIdentity": _OBJECT,
    "hashiCorpVault": _OBJECT,
    "azureKeyVault": _OBJECT,
    "awsSecretManager": _OBJECT,
    "gcpSecretManager": _OBJECT,
    "configMapTargetRef": {"type": "array"},
}))

SERVICE_MONITOR = _resource("monitoring.coreos.com/v1", "ServiceMonitor", _closed({
    "selector": _OBJECT,
    "namespaceSelector": _closed({"any": {"type": "boolean"}, "matchNames": {"type": "array",
                                                                            "items": _STRING}}),
    "jobLabel": _STRING,
    "targetLabels": {"type": "array", "items": _STRING},
    "podTargetLabels": {"type": "array", "items": _STRING},
    "sampleLimit": _INTEGER,
    "endpoints": {"type": "array", "minItems": 1, "items": _closed({
        "port": _STRING, "targetPort": {"type": ["string", "integer"]}, "path": _STRING,
        "scheme": {"enum": ["http", "https"]}, "interval": _STRING, "scrapeTimeout": _STRING,
        "honorLabels": {"type": "boolean"}, "honorTimestamps": {"type": "boolean"},
        "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"},
        "tlsConfig": _OBJECT, "bearerTokenSecret": _OBJECT, "params": _OBJECT,
    })},
}, required=("selector", "endpoints")))

#: By (apiVersion, kind).
SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
}
