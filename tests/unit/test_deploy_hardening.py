"""Static checks of the hardening of compose/ and k8s/ (no Docker or Kubernetes on the test machines):
no committed password, non-root containers with read-only root filesystems, Pod Security "restricted"
enforced and met by every pod, service-account tokens not mounted, and NetworkPolicies that let each
workload reach what it needs and nothing else (evaluated by ``tests.support.k8s_rules``)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from aoetl.devstack import SERVICE_NAMES
from tests.support.k8s_rules import NetworkModel, Peer, restricted_violations

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "aoetl"
WORKLOADS = ("Deployment", "StatefulSet", "Job")
# variables that hold a secret (AOETL_WEBHOOKS holds the webhook secrets; AOETL_AUTH_API_KEYS is a switch)
SECRET_NAME = re.compile(r"(PASSWORD|SECRETS?|TOKEN|DSN|CREDENTIALS?|API_KEY|WEBHOOKS)$")
URL_PASSWORD = re.compile(r"://[^/\s:@]+:(?P<password>\$\{[^}]*\}|[^@\s]+)@")
REFERENCE = re.compile(r"^\$\{[A-Z0-9_]+:\?[^}]+\}$")  # compose: a variable that must be set
INTERNET = "93.184.216.34"
PROMETHEUS = Peer("10.8.0.9", "monitoring", {"app": "prometheus"}, {"aoetl.io/scrapes-metrics": "true"})
KUBE_DNS = Peer(
    "10.96.0.10", "kube-system", {"k8s-app": "kube-dns"}, {"kubernetes.io/metadata.name": "kube-system"}
)


def _k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "k8s").glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _workloads() -> dict[str, dict[str, Any]]:
    """Pod templates by workload name."""
    return {
        doc["metadata"]["name"]: doc["spec"]["template"] for doc in _k8s_docs() if doc["kind"] in WORKLOADS
    }


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())


# ------------------------------------------------------------------------------------ committed secrets
def test_k8s_commits_no_secret_and_takes_every_credential_from_a_secret_reference() -> None:
    docs = _k8s_docs()
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"] == [], "a committed Secret"
    for name, template in _workloads().items():
        for container in template["spec"]["containers"]:
            for env in container.get("env") or []:
                if SECRET_NAME.search(env["name"]):
                    assert "value" not in env, f"{name}: {env['name']} is a literal"
                    assert "secretKeyRef" in env["valueFrom"], f"{name}: {env['name']} is not from a Secret"
    for doc in docs:
        assert not URL_PASSWORD.search(yaml.safe_dump(doc)), (
            f"a password in a URL in {doc['metadata']['name']}"
        )


def test_compose_commits_no_password_and_refuses_to_start_without_the_generated_one() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            if SECRET_NAME.search(key) and not URL_PASSWORD.search(value):
                assert REFERENCE.match(value), f"{name}: {key} is not a required ${{VARIABLE}}"
            for match in URL_PASSWORD.finditer(value):
                assert REFERENCE.match(match["password"]), f"{name}: {key} has a literal password"
    # the generated file stays out of the repository
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "compose/.env"], cwd=ROOT, check=False, capture_output=True
    )
    assert ignored.returncode == 0, "compose/.env (the generated password) is not git-ignored"


def test_the_old_committed_passwords_are_gone_everywhere() -> None:
    text = "\n".join(
        p.read_text() for p in [*(ROOT / "k8s").glob("*.yaml"), ROOT / "compose" / "docker-compose.yml"]
    )
    for known in ("change-me", "postgres:postgres@", "POSTGRES_PASSWORD: postgres"):
        assert known not in text


# ------------------------------------------------------------------------------------ containers
def test_compose_runs_every_container_non_root_read_only_without_capabilities() -> None:
    for name, service in _compose()["services"].items():
        user = str(service.get("user", "root"))
        assert user.split(":")[0] not in ("", "0", "root"), f"{name} runs as root"
        assert service.get("read_only") is True, f"{name} has a writable root filesystem"
        assert service.get("cap_drop") == ["ALL"], f"{name} keeps capabilities"
        assert "no-new-privileges:true" in service.get("security_opt", []), f"{name} may gain privileges"


def test_compose_publishes_only_the_gateway_api_beyond_this_host() -> None:
    for name, service in _compose()["services"].items():
        for mapping in service.get("ports", []):
            if (name, mapping) == ("gateway", "8000:8000"):
                continue  # webhooks come from the internet
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping} on every interface"


def test_the_image_runs_as_the_numeric_non_root_user_the_manifests_name() -> None:
    dockerfile = (ROOT / "compose" / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user.isdigit() and int(user) != 0  # numeric, so the kubelet can verify runAsNonRoot
    assert _compose()["x-service"]["user"].split(":")[0] == user
    for name in SERVICE_NAMES:
        assert _workloads()[name]["spec"]["securityContext"]["runAsUser"] == int(user)


# ------------------------------------------------------------------------------------ Pod Security
def test_the_namespace_enforces_pod_security_restricted() -> None:
    (namespace,) = [d for d in _k8s_docs() if d["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels.get("pod-security.kubernetes.io/enforce-version", "latest") == "latest"


def test_every_pod_meets_restricted_with_a_read_only_root_and_no_token() -> None:
    workloads = _workloads()
    assert set(SERVICE_NAMES) | {"kafka", "postgres", "topic-init"} <= set(workloads)
    for name, template in workloads.items():
        spec = template["spec"]
        assert restricted_violations(spec) == [], name
        declared = {v["name"] for v in spec.get("volumes") or []}
        declared |= {c["metadata"]["name"] for c in template.get("volumeClaimTemplates", [])}
        for container in spec["containers"]:
            for mount in container.get("volumeMounts") or []:
                assert mount["name"] in declared or mount["name"] == "data", (name, mount)


@pytest.mark.parametrize(
    ("change", "violation"),
    [
        (lambda c, p: c.pop("capabilities"), "capabilities do not drop ALL"),
        (lambda c, p: c.update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
        (
            lambda c, p: c.pop("seccompProfile") and p["securityContext"].pop("seccompProfile"),
            "seccompProfile",
        ),
        (lambda c, p: c.update(runAsNonRoot=False), "runAsNonRoot"),
        (lambda c, p: c.pop("readOnlyRootFilesystem"), "readOnlyRootFilesystem"),
        (lambda c, p: p.pop("automountServiceAccountToken"), "automountServiceAccountToken"),
        (lambda c, p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda c, p: p.update(hostNetwork=True), "hostNetwork"),
    ],
    ids=[
        "capabilities",
        "escalation",
        "seccomp",
        "root",
        "writable-root",
        "token",
        "host-path",
        "host-network",
    ],
)
def test_the_pod_security_check_refuses_what_restricted_refuses(change: Any, violation: str) -> None:
    spec = _workloads()["gateway"]["spec"]
    (container,) = spec["containers"]
    change(container["securityContext"], spec)
    assert any(violation in problem for problem in restricted_violations(spec))


# ------------------------------------------------------------------------------------ NetworkPolicies
def _network() -> tuple[NetworkModel, dict[str, Peer]]:
    (namespace,) = [d for d in _k8s_docs() if d["kind"] == "Namespace"]
    ns_labels = {**namespace["metadata"]["labels"], "kubernetes.io/metadata.name": NAMESPACE}
    pods = {
        name: Peer(f"10.244.0.{i}", NAMESPACE, template["metadata"]["labels"], ns_labels)
        for i, (name, template) in enumerate(sorted(_workloads().items()), 10)
    }
    return NetworkModel([d for d in _k8s_docs() if d["kind"] == "NetworkPolicy"]), pods


def test_every_pod_is_isolated_by_a_default_deny_both_ways() -> None:
    model, pods = _network()
    deny = [
        p
        for p in model.policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny, "no default-deny policy"
    stranger = Peer("10.244.9.9", NAMESPACE, {"app": "intruder"}, pods["gateway"].namespace_labels)
    for name, pod in pods.items():
        assert not model.allowed(stranger, pod, 8080), f"an unlabelled pod reaches {name}"


def test_each_workload_reaches_what_it_needs() -> None:
    model, pods = _network()
    for name, pod in pods.items():
        assert model.allowed(pod, KUBE_DNS, 53, "UDP") and model.allowed(pod, KUBE_DNS, 53, "TCP"), name
        if name not in ("kafka", "postgres", "s3"):
            assert model.allowed(pod, pods["kafka"], 9092), f"{name} cannot reach Kafka"
    assert model.allowed(pods["kafka"], pods["kafka"], 9093)  # the KRaft controller
    for name in ("orchestrator", "extract", "load"):
        assert model.allowed(pods[name], pods["postgres"], 5432), f"{name} cannot reach PostgreSQL"
    for name in ("orchestrator", "extract", "load"):  # s3:// sources (planned, read) and destinations
        assert model.allowed(pods[name], pods["s3"], 9000), f"{name} cannot reach the object store"
    for name in ("orchestrator", "extract"):  # http sources, the LLM endpoint
        assert model.allowed(pods[name], Peer(INTERNET), 443)
        assert model.allowed(pods[name], Peer("2606:2800:220:1::1"), 443)
    assert model.allowed(Peer(INTERNET), pods["gateway"], 8000)  # webhooks
    for name in SERVICE_NAMES:
        assert model.allowed(PROMETHEUS, pods[name], 8080), f"metrics of {name} cannot be scraped"


def test_nothing_else_gets_through() -> None:
    model, pods = _network()
    services = [pods[name] for name in SERVICE_NAMES]
    for name, pod in pods.items():
        # from outside only the webhook API; the broker and database never
        for port in (8080, 9092, 9093, 5432):
            assert not model.allowed(Peer(INTERNET), pod, port), f"the internet reaches {name}:{port}"
        assert not model.allowed(PROMETHEUS, pod, 9092)
        if name != "kafka":
            assert not model.allowed(pod, pods["kafka"], 9093), f"{name} reaches the controller"
        for other in services:
            assert not model.allowed(pod, other, 8080) or pod is other, f"{name} reaches a service directly"
    for name in ("gateway", "transform", "monitor", "kafka", "topic-init"):
        assert not model.allowed(pods[name], pods["postgres"], 5432), f"{name} reaches PostgreSQL"
    for name in ("gateway", "transform", "load", "monitor", "kafka", "postgres", "topic-init"):
        assert not model.allowed(pods[name], Peer(INTERNET), 443), f"{name} reaches the internet"
    for name in ("orchestrator", "extract"):
        for private in (
            "169.254.169.254",
            "10.0.0.5",
            "172.16.3.4",
            "192.168.1.1",
            "127.0.0.1",
            "fd00:ec2::254",
        ):
            assert not model.allowed(pods[name], Peer(private), 80), f"{name} reaches {private}"
    assert not model.allowed(pods["postgres"], pods["kafka"], 9092)
    for name in ("gateway", "transform", "monitor", "kafka", "postgres", "topic-init"):
        assert not model.allowed(pods[name], pods["s3"], 9000), f"{name} reaches the object store"
    for target in ("kafka", "postgres"):  # the store reaches nothing
        assert not model.allowed(pods["s3"], pods[target], 9092 if target == "kafka" else 5432)
    assert not model.allowed(pods["s3"], Peer(INTERNET), 443)
    assert not model.allowed(Peer(INTERNET), pods["s3"], 9000)
