"""JSON Schemas of the custom resources the Helm chart renders (KEDA's ScaledObject and TriggerAuthentication,
the Prometheus operator's ServiceMonitor), for ``jsonschema``.

Written here by hand from the resources' documented API, because the upstream CRDs cannot be fetched on the
test machines and kubernetes-validate ships only the core API: they hold what the chart relies on (kinds and
API versions, required fields, field types, the closed sets of fields at each level the chart writes — a
misspelt field is refused as the API server's strict field validation would) and are a subset of the real
CRDs, not a copy of them. Fields of the real CRDs that the chart does not use are simply absent, so a chart
change that starts using one must add it here, with its documented type.
"""

from __future__ import annotations

from typing import Any, Final

INT32: Final = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
DURATION: Final = {"type": "string", "pattern": r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$"}
LABELS: Final = {"type": "object", "additionalProperties": {"type": "string"}}
NAME: Final = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": NAME,
                    "namespace": NAME,
                    "labels": LABELS,
                    "annotations": LABELS,
                },
            },
            "spec": spec,
        },
    }


SCALED_OBJECT: Final = _resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    {
        "type": "object",
        "required": ["scaleTargetRef", "triggers"],
        "additionalProperties": False,
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "name": NAME,
                    "envSourceContainerName": {"type": "string"},
                },
            },
            "pollingInterval": INT32,
            "cooldownPeriod": INT32,
            "idleReplicaCount": INT32,
            "minReplicaCount": INT32,
            "maxReplicaCount": INT32,
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["type", "metadata"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"type": "string", "minLength": 1},
                        "name": {"type": "string"},
                        # every metadata value is a string in the CRD (a YAML number or boolean is refused)
                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        "authenticationRef": {
                            "type": "object",
                            "required": ["name"],
                            "additionalProperties": False,
                            "properties": {
                                "name": NAME,
                                "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                            },
                        },
                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                    },
                },
            },
        },
    },
)

TRIGGER_AUTHENTICATION: Final = _resource(
    "keda.sh/v1alpha1",
    "TriggerAuthentication",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "secretTargetRef": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["parameter", "name", "key"],
                    "additionalProperties": False,
                    "properties": {
                        "parameter": {"type": "string", "minLength": 1},
                        "name": NAME,
                        "key": {"type": "string", "minLength": 1},
                    },
                },
            },
        },
    },
)

SERVICE_MONITOR: Final = _resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector"],
        "additionalProperties": False,
        "properties": {
            "selector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"matchLabels": LABELS, "matchExpressions": {"type": "array"}},
            },
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                },
            },
            "jobLabel": {"type": "string"},
            "endpoints": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "targetPort": {"type": ["string", "integer"]},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                    },
                },
            },
        },
    },
)

# (apiVersion, kind) -> schema
SCHEMAS: Final = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
}
