"""Static checks of compose/ and k8s/: every service deployed with probes, topics identical to topics.py."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from aoetl.devstack import SERVICE_NAMES
from shared.kafka.topics import TOPICS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_TOPICS = {spec.name: (spec.partitions, dict(spec.config)) for spec in TOPICS}
_TOPIC_LINE = re.compile(r"^\s*kt --topic (?P<name>\S+) --partitions (?P<partitions>\d+)(?P<rest>.*)$", re.M)


def _topics_in_script(script: str) -> dict[str, tuple[int, dict[str, str]]]:
    found = {}
    for match in _TOPIC_LINE.finditer(script):
        config = dict(item.split("=", 1) for item in re.findall(r"--config (\S+)", match["rest"]))
        found[match["name"]] = (int(match["partitions"]), config)
    return found


def _k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "k8s").glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in _k8s_docs() if doc["kind"] == kind}


def test_compose_runs_kafka_kraft_postgres_topic_init_and_every_service() -> None:
    compose = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())
    services = compose["services"]

    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["postgres"]["image"] == "postgres:16"
    for name in SERVICE_NAMES:
        service = services[name]
        assert service["command"] == ["python", "-m", f"services.{name}"]
        assert service["build"]["dockerfile"] == "compose/Dockerfile"
        assert "/health" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    assert _topics_in_script(services["topic-init"]["command"][0]) == EXPECTED_TOPICS
    assert (ROOT / "compose" / "Dockerfile").exists()


def test_the_image_installs_the_extras_of_every_service_it_runs() -> None:
    """One image (compose, and the Helm chart's `image`) runs every service: it installs each service's
    optional extra; the monitor's holds its lineage (openlineage-python, the `lineage` extra)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    per_service = {name for name in extras if name in SERVICE_NAMES}
    assert extras["monitor"] == extras["lineage"] and extras["monitor"][0].startswith("openlineage-python")
    dockerfile = (ROOT / "compose" / "Dockerfile").read_text()
    (arg,) = re.findall(r"^ARG AOETL_EXTRAS=(\S+)$", dockerfile, re.M)
    assert set(arg.split(",")) == per_service
    (install,) = re.findall(r"^RUN pip install (\S+)", dockerfile, re.M)
    assert install == '".[${AOETL_EXTRAS}]"'
    args = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())["x-service"]["build"]
    assert args.get("args", {}).get("AOETL_EXTRAS", arg) == arg  # compose builds it as the default says


def _service_workloads() -> dict[str, dict[str, Any]]:
    """The services' workloads: a Deployment each, or a StatefulSet where a stable pod name gives the
    replica a stable transactional id (rendered from the Helm chart, tests/unit/test_helm_chart.py)."""
    workloads = {**_by_kind("Deployment"), **_by_kind("StatefulSet")}
    return {
        name: doc
        for name, doc in workloads.items()
        if doc["metadata"]["labels"].get("aoetl.io/component") == "service"
    }


def test_k8s_deploys_every_service_with_probes_and_metrics_annotations() -> None:
    deployments = _service_workloads()
    assert set(deployments) == set(SERVICE_NAMES)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["command"] == ["python", "-m", f"services.{name}"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
        assert deployment["metadata"]["namespace"] == "aoetl"


def test_k8s_kafka_is_a_kraft_statefulset_and_topic_init_creates_every_topic() -> None:
    kafka = _by_kind("StatefulSet")["kafka"]
    (container,) = kafka["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert container["image"] == "apache/kafka:4.1.1"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in env

    (job_container,) = _by_kind("Job")["topic-init"]["spec"]["template"]["spec"]["containers"]
    assert _topics_in_script(job_container["args"][0]) == EXPECTED_TOPICS


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    manifests = {p.name for p in (ROOT / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_gateway_api_is_published_and_listens_on_all_interfaces() -> None:
    """The webhook API is on AOETL_API_PORT (not the probes' port), bound to 127.0.0.1 by default."""
    gateway = _compose()["services"]["gateway"]
    env = gateway["environment"]
    assert env["AOETL_API_HOST"] == "0.0.0.0" and env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["AOETL_AUTH_API_KEYS"] == "true"  # else the exposed gateway refuses to start
    assert f"{env['AOETL_API_PORT']}:{env['AOETL_API_PORT']}" in gateway["ports"]

    (container,) = _by_kind("Deployment")["gateway"]["spec"]["template"]["spec"]["containers"]
    k8s_env = {e["name"]: e.get("value") for e in container["env"]}
    assert k8s_env["AOETL_API_HOST"] == "0.0.0.0" and k8s_env["AOETL_AUTH_API_KEYS"] == "true"
    api = next(p for p in container["ports"] if p["name"] == "api")
    assert str(api["containerPort"]) == k8s_env["AOETL_API_PORT"]
    service_ports = {p["name"]: p["targetPort"] for p in _by_kind("Service")["gateway"]["spec"]["ports"]}
    assert service_ports["api"] == "api"
