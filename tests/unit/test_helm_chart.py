"""Static checks of the Helm chart k8s/helm/aoetl (no Kubernetes on the test machines): ``helm lint`` and
``helm template`` with the default values and the production values (three brokers over SASL_SSL, KEDA on,
the ServiceMonitor on) render; every rendered resource validates (kubernetes-validate for the core API,
tests/support/crd_schemas.py for KEDA's and the Prometheus operator's resources); every service runs
hardened with probes and resources; the lag autoscalers watch the groups and topics the services really
consume and never go beyond their partitions; every variable the chart sets is one the services' settings
read; no secret value is in the chart or its output; and the plain manifests of k8s/ are its rendering.

Helm comes from scripts/bootstrap-helm.sh (built from its Go module), run by ``k8s.render.helm`` if needed.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from aoetl.devstack import SERVICE_NAMES
from k8s import render
from shared.avro.factory import SerdeSettings
from shared.kafka.topics import TENANT_NAME, TOPICS
from shared.policy.connections import default_connections
from shared.policy.settings import PolicySettings
from shared.settings import KafkaSettings, ProcessorSettings, ServiceSettings
from tests.support.crd_schemas import SCHEMAS
from tests.support.k8s_rules import restricted_violations

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ("Deployment", "StatefulSet")
PARTITIONS = {spec.name: spec.partitions for spec in TOPICS}
SECRET_NAME = re.compile(r"(PASSWORD|SECRETS?|TOKEN|DSN|CREDENTIALS?|API_KEY|SALT|WEBHOOKS)$")
URL_PASSWORD = re.compile(r"://[^/\s:@]+:[^@\s]+@")
# A values file with SASL and a CA but KEDA off: the HPA fallback with the Kafka credentials' wiring.
SASL_HPA = ("kafka.securityProtocol=SASL_SSL", "kafka.caSecret.name=aoetl-kafka-ca")


# ------------------------------------------------------------------------------------ rendering
@cache
def _rendered(values: str = "", sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    files = [ROOT / values] if values else []
    return render.documents(render.template(*files, sets=sets))


def _default() -> list[dict[str, Any]]:
    return _rendered()


def _production() -> list[dict[str, Any]]:
    return _rendered("k8s/helm/values-production.yaml")


RENDERINGS = {
    "default": _default,
    "production": _production,
    "sasl-hpa": lambda: _rendered("", SASL_HPA),
    "plain": lambda: _rendered("k8s/helm/values-plain.yaml"),
}


def _of_kind(docs: Iterable[dict[str, Any]], *kinds: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] in kinds}


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _env(docs: list[dict[str, Any]], workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every variable the container gets, the ConfigMaps of envFrom included: name -> env entry."""
    container = _container(workload)
    config_maps = _of_kind(docs, "ConfigMap")
    env: dict[str, dict[str, Any]] = {}
    for source in container.get("envFrom") or []:
        data = config_maps[source["configMapRef"]["name"]]["data"]
        env |= {name: {"name": name, "value": value} for name, value in data.items()}
    return env | {item["name"]: item for item in container.get("env") or []}


def test_helm_lint_passes_with_the_default_and_the_production_values() -> None:
    for values in ([], ["--values", str(render.PRODUCTION_VALUES)], ["--values", str(render.PLAIN_VALUES)]):
        lint = ["lint", str(render.CHART), "--strict", "--namespace", "aoetl"]
        out = render.run_helm(*lint, "--kube-version", render.KUBE_VERSION, *values)
        assert "0 chart(s) failed" in out, out


@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_every_rendered_resource_validates_against_its_schema(rendering: str) -> None:
    docs = RENDERINGS[rendering]()
    kinds = {doc["kind"] for doc in docs}
    assert {"ConfigMap", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    for doc in docs:
        custom = SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if custom is not None:
            jsonschema.validate(doc, custom)
        else:  # the core API: SchemaNotFoundError for an unknown apiVersion/kind fails the test too
            kubernetes_validate.validate(doc, render.KUBE_VERSION, strict=True)


def test_the_custom_resource_schemas_refuse_what_the_crds_refuse() -> None:
    (scaled,) = [d for d in _production() if d["kind"] == "ScaledObject"][:1]
    broken = json.loads(json.dumps(scaled))
    broken["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 10  # a number: the CRD wants strings
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")])
    broken = json.loads(json.dumps(scaled))
    broken["spec"]["maxReplicas"] = 3  # the HPA's spelling, not KEDA's
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")])


# ------------------------------------------------------------------------------------ the services
@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_every_service_runs_hardened_with_probes_and_resources(rendering: str) -> None:
    docs = RENDERINGS[rendering]()
    workloads = _of_kind(docs, *WORKLOADS)
    assert set(workloads) == set(SERVICE_NAMES)
    services = _of_kind(docs, "Service")
    for name, workload in workloads.items():
        pod = workload["spec"]["template"]["spec"]
        container = _container(workload)
        assert container["command"] == ["python", "-m", f"services.{name}"]
        http = next(p for p in container["ports"] if p["name"] == "http")
        assert _env(docs, workload)["AOETL_HTTP_PORT"]["value"] == str(http["containerPort"])
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], name
        assert restricted_violations(pod) == [], name  # non-root, read-only root, no token, ...
        assert pod["securityContext"]["runAsUser"] != 0
        assert {p["name"] for p in services[name]["spec"]["ports"]} >= {"http"}
        assert services[name]["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]


def test_services_with_transactional_ids_are_statefulsets_named_by_their_pod() -> None:
    """A processor's transactional id is built from AOETL_INSTANCE_ID: a StatefulSet's pod name (extract-0)
    survives a restart, so the new pod fences its predecessor's open transaction at once."""
    for rendering in RENDERINGS.values():
        workloads = _of_kind(rendering(), *WORKLOADS)
        for name, workload in workloads.items():
            instance = next(e for e in _container(workload)["env"] if e["name"] == "AOETL_INSTANCE_ID")
            assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", name
            if issubclass(_settings_class(name), ProcessorSettings):
                assert workload["kind"] == "StatefulSet", name
                assert workload["spec"]["serviceName"] == name


def test_every_service_but_a_single_replica_has_a_disruption_budget() -> None:
    for rendering in RENDERINGS.values():
        docs = rendering()
        budgets = _of_kind(docs, "PodDisruptionBudget")
        for name, workload in _of_kind(docs, *WORKLOADS).items():
            if workload["spec"].get("replicas", 2) > 1:
                assert budgets[name]["spec"]["selector"] == workload["spec"]["selector"], name


# ------------------------------------------------------------------------------------ autoscaling
def _service_class(name: str) -> Any:
    module = importlib.import_module(f"services.{name}.service")
    (cls,) = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if c.__module__ == module.__name__ and getattr(c, "name", None) == name
    ]
    return cls


def _consumption(name: str, suffix: str = "") -> set[tuple[str, str]]:
    """(group id, topic) pairs the service consumes, from its own settings and input topics."""
    settings = _settings_class(name)(topic_suffix=suffix)
    topics = _service_class(name).input_types(SimpleNamespace(settings=settings))
    return {(settings.group_id, topic) for topic in topics}


def test_keda_scales_extract_transform_load_on_the_lag_of_what_they_consume() -> None:
    docs = _production()
    scaled = _of_kind(docs, "ScaledObject")
    assert set(scaled) == {"extract", "transform", "load"}
    assert not _of_kind(docs, "HorizontalPodAutoscaler")  # KEDA makes its own
    workloads = _of_kind(docs, *WORKLOADS)
    for name, obj in scaled.items():
        target = obj["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == (workloads[name]["kind"], name)
        assert "replicas" not in workloads[name]["spec"]  # the autoscaler owns the count
        triggers = obj["spec"]["triggers"]
        assert {t["type"] for t in triggers} == {"kafka"}
        watched = {(t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in triggers}
        assert watched == _consumption(name), name
        assert all(topic in PARTITIONS for _, topic in watched)
        fewest = min(PARTITIONS[topic] for _, topic in watched)
        assert 1 <= obj["spec"]["minReplicaCount"] <= obj["spec"]["maxReplicaCount"] <= fewest, name
        for trigger in triggers:  # SASL_SSL: the scaler authenticates through the TriggerAuthentication
            assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"
            assert trigger["authenticationRef"]["name"] == "aoetl-kafka"
    (auth,) = _of_kind(docs, "TriggerAuthentication").values()
    assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {"username", "password", "ca"}


def test_with_a_topic_suffix_the_triggers_watch_the_suffixed_topics() -> None:
    sets = ("keda.enabled=true", "topicSuffix=.blue", "topicInit.enabled=false")
    docs = _rendered("", sets)
    (config,) = _of_kind(docs, "ConfigMap").values()
    assert config["data"]["AOETL_TOPIC_SUFFIX"] == ".blue"
    for name, obj in _of_kind(docs, "ScaledObject").items():
        watched = {(t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in obj["spec"]["triggers"]}
        assert watched == _consumption(name, ".blue"), name
    with pytest.raises(render.HelmError, match="without a suffix"):  # it would create unsuffixed topics
        render.template(sets=("topicSuffix=.blue",))


def test_without_keda_a_cpu_hpa_scales_them_within_the_partitions() -> None:
    for docs in (_default(), _rendered("", SASL_HPA)):
        hpas = _of_kind(docs, "HorizontalPodAutoscaler")
        assert set(hpas) == {"extract", "transform", "load"} and not _of_kind(docs, "ScaledObject")
        for name, hpa in hpas.items():
            fewest = min(PARTITIONS[topic] for _, topic in _consumption(name))
            assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= fewest
            (metric,) = hpa["spec"]["metrics"]
            assert metric["resource"]["name"] == "cpu"
            assert hpa["spec"]["scaleTargetRef"]["name"] == name


def test_the_values_name_each_services_real_group_topics_and_partitions() -> None:
    values = yaml.safe_load((render.CHART / "values.yaml").read_text())
    for name, service in values["services"].items():
        if "consumer" not in service:
            continue
        consumer = service["consumer"]
        assert {(consumer["group"], t["name"]) for t in consumer["topics"]} == _consumption(name)
        assert {t["name"]: t["partitions"] for t in consumer["topics"]} == {
            t["name"]: PARTITIONS[t["name"]] for t in consumer["topics"]
        }


def test_the_chart_refuses_more_replicas_than_partitions() -> None:
    for keda in ("false", "true"):
        with pytest.raises(render.HelmError, match="exceeds the 6 partitions"):
            render.template(sets=(f"keda.enabled={keda}", "services.extract.autoscaling.maxReplicas=7"))


# ------------------------------------------------------------------------------------ settings
def _settings_class(name: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"services.{name}.configuration")
    (cls,) = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if c.__module__ == module.__name__ and issubclass(c, ServiceSettings)
    ]
    return cls


def _env_names(cls: type[BaseSettings]) -> set[str]:
    """The variables a settings class reads: its prefix + field names, or the field's aliases, and those of
    nested settings classes (which read their own prefix)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c for c in alias.choices if isinstance(c, str) and c.isupper()}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{field_name}".upper())
        for annotation in (field.annotation, *get_args(field.annotation)):
            if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
                names |= _env_names(annotation)
    return names


def _known_env(name: str, declared: dict[str, Any] | None = None) -> set[str]:
    """What the service reads: its settings, plus what every service's shared code reads (the serde, the
    spec policy and the secrets of the policy's connections: the default ones, or those ``declared`` by
    the rendered AOETL_POLICY_CONNECTIONS)."""
    shared = _env_names(SerdeSettings) | _env_names(PolicySettings)
    connections = {connection.env for connection in default_connections().values() if connection.env}
    connections |= {c["env"] for c in (declared or {}).values() if c.get("env")}
    return _env_names(_settings_class(name)) | shared | connections


def _unknown_env(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    found = {}
    for name, workload in _of_kind(docs, *WORKLOADS).items():
        env = _env(docs, workload)
        declared = json.loads(env.get("AOETL_POLICY_CONNECTIONS", {}).get("value") or "{}")
        unknown = set(env) - _known_env(name, declared)
        if unknown:
            found[name] = unknown
    return found


def test_every_variable_the_chart_sets_is_one_the_services_read() -> None:
    for rendering, docs in RENDERINGS.items():
        assert _unknown_env(docs()) == {}, rendering
    for rendering in ("default", "production"):  # python -m shared.kafka.admin reads KafkaSettings only
        docs = RENDERINGS[rendering]()
        (job,) = _of_kind(docs, "Job").values()
        assert set(_env(docs, job)) <= _env_names(KafkaSettings), rendering


def test_a_misspelt_variable_is_caught() -> None:
    docs = _rendered("", ("services.load.env.AOETL_MAX_BACTH=5",))
    assert _unknown_env(docs) == {"load": {"AOETL_MAX_BACTH"}}


# ------------------------------------------------------------------------------------ secrets
@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_no_secret_value_is_rendered_only_references(rendering: str) -> None:
    docs = RENDERINGS[rendering]()
    assert not _of_kind(docs, "Secret")
    for name, workload in _of_kind(docs, *WORKLOADS, "Job").items():
        for var, entry in _env(docs, workload).items():
            if SECRET_NAME.search(var):
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{name}: {var} is not from a Secret"
    for doc in docs:
        assert not URL_PASSWORD.search(yaml.safe_dump(doc)), doc["metadata"]["name"]


def test_the_values_schema_refuses_a_literal_secret() -> None:
    for attempt in (
        "services.transform.env.AOETL_MASK_SALT=not-a-reference",
        "commonEnv.AOETL_KAFKA_SASL_PASSWORD=hunter2",
        "services.gateway.env.AOETL_WEBHOOKS={}",
    ):
        with pytest.raises(render.HelmError, match="values don't meet the specifications"):
            render.template(sets=(attempt,))


def test_the_values_schema_refuses_variables_the_chart_sets_itself() -> None:
    for attempt in ("commonEnv.AOETL_TOPIC_SUFFIX=.x", "services.extract.env.AOETL_INSTANCE_ID=fixed"):
        with pytest.raises(render.HelmError, match="values don't meet the specifications"):
            render.template(sets=(attempt,))


def test_the_values_schema_knows_the_tenant_names_of_the_topic_list() -> None:
    schema = json.loads((render.CHART / "values.schema.json").read_text())
    tenants = schema["properties"]["topicInit"]["properties"]["tenants"]["items"]["pattern"]
    assert tenants == f"^{TENANT_NAME}$"


# ------------------------------------------------------------------------------------ ServiceMonitor
def test_the_service_monitor_scrapes_every_service_when_enabled() -> None:
    assert not _of_kind(_default(), "ServiceMonitor")
    docs = _production()
    (monitor,) = _of_kind(docs, "ServiceMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    scraped = {
        name
        for name, svc in _of_kind(docs, "Service").items()
        if selector.items() <= svc["metadata"]["labels"].items()
        and endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    }
    assert scraped == set(SERVICE_NAMES)


# ------------------------------------------------------------------------------------ plain manifests
def test_the_plain_manifests_are_the_charts_rendering() -> None:
    for name, text in render.plain_manifests().items():
        assert (ROOT / "k8s" / name).read_text() == text, (
            f"k8s/{name} is out of date: run `make k8s-render` (python -m k8s.render)"
        )


# ------------------------------------------------------------------------------------ object storage
def test_the_object_store_is_one_declared_connection_its_secret_a_reference() -> None:
    """The plain values point the services at k8s/object-store.yaml: every service declares the s3
    connection (validation), those that read or write objects get its secret from the Secret, the endpoint
    is allow-listed for the egress policy and reachable through the NetworkPolicies, and the bundled
    example's s3 spec passes the policy the services read."""
    docs = _rendered("k8s/helm/values-plain.yaml")
    workloads = _of_kind(docs, *WORKLOADS)
    for name in ("gateway", "orchestrator", "extract", "transform", "load", "monitor"):
        env = _env(docs, workloads[name])
        connections = json.loads(env["AOETL_POLICY_CONNECTIONS"]["value"])
        assert connections["lake"]["endpoint"] == "http://s3.aoetl.svc.cluster.local:9000"
        assert env["AOETL_POLICY_HTTP_EGRESS_ALLOW"]["value"] == "s3.aoetl.svc.cluster.local:9000"
        secret = env.get("AOETL_OBJECT_STORE_CREDENTIALS")
        if name in ("orchestrator", "extract", "load"):
            assert secret is not None
            assert secret["valueFrom"]["secretKeyRef"] == {"name": "aoetl-object-store", "key": "credentials"}
            assert workloads[name]["spec"]["template"]["metadata"]["labels"]["aoetl.io/uses-object-store"]
        else:
            assert secret is None  # no pod holds a secret it does not use
    policies = _of_kind(docs, "NetworkPolicy")
    assert policies["to-object-store"]["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 9000}]
    default = _rendered()
    assert "to-object-store" not in _of_kind(default, "NetworkPolicy")  # off unless configured
    assert "AOETL_POLICY_CONNECTIONS" not in _env(default, _of_kind(default, *WORKLOADS)["load"])


def test_the_plain_object_store_example_passes_the_services_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.policy import check_spec, load_policy
    from shared.spec import load_spec

    docs = _rendered("k8s/helm/values-plain.yaml")
    env = _env(docs, _of_kind(docs, *WORKLOADS)["orchestrator"])
    for key in ("AOETL_POLICY_CONNECTIONS", "AOETL_POLICY_HTTP_EGRESS_ALLOW"):
        monkeypatch.setenv(key, env[key]["value"])
    spec = load_spec(ROOT / "examples" / "orders" / "pipeline-s3.yaml")
    assert check_spec(spec, load_policy()) == []


def test_the_values_schema_refuses_an_object_store_without_roots() -> None:
    with pytest.raises(render.HelmError, match="/objectStore/roots"):
        _rendered("", ("objectStore.enabled=true",))
