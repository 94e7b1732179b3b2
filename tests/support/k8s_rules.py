"""Two Kubernetes admission/network rules, evaluated on manifests without a cluster (the test machines have
no Kubernetes), so tests can check what a cluster would enforce:

* ``restricted_violations``: the Pod Security Standards' "restricted" profile (every control of the
  baseline and restricted levels that a pod spec can break), as the API server's admission applies it to
  a pod template, plus two rules of this project: a read-only root filesystem and no service-account token;
* ``NetworkModel.allowed``: whether NetworkPolicies let a connection through, with the API's semantics:
  a pod selected by a policy of a direction is isolated in that direction, and a connection passes only
  when the source's egress and the destination's ingress both allow it (rules are unions; an empty ``from``
  /``to`` or ``ports`` matches everything; ``podSelector`` alone means the policy's namespace).

Only ``matchLabels`` selectors are understood; a manifest using anything else fails loudly, never passes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (restricted, "Volume Types")
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
    }
)
_SECCOMP_OK = ("RuntimeDefault", "Localhost")


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """Why this pod spec would be refused by a namespace enforcing "restricted" (or breaks the project's
    read-only-root / no-token rules); empty when it would be admitted."""
    problems: list[str] = []
    pod_ctx = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"pod: {flag}")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("pod: automountServiceAccountToken is not false")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds)}")
    for sysctl in pod_ctx.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"pod: sysctl {sysctl['name']}")
    if pod_ctx.get("runAsUser") == 0 or pod_ctx.get("runAsGroup") == 0:
        problems.append("pod: runs as uid/gid 0")
    containers = [
        *pod.get("initContainers", []),
        *pod.get("containers", []),
        *pod.get("ephemeralContainers", []),
    ]
    for container in containers:
        problems += [f"container {container['name']}: {p}" for p in _container_violations(container, pod_ctx)]
    return problems


def _container_violations(container: Mapping[str, Any], pod_ctx: Mapping[str, Any]) -> Iterable[str]:
    ctx = container.get("securityContext") or {}
    if ctx.get("privileged"):
        yield "privileged"
    if ctx.get("allowPrivilegeEscalation") is not False:
        yield "allowPrivilegeEscalation is not false"
    capabilities = ctx.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        yield "capabilities do not drop ALL"
    if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
        yield f"adds capabilities {capabilities['add']}"
    if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
        yield "runAsNonRoot is not true"
    if ctx.get("runAsUser") == 0:
        yield "runs as uid 0"
    seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
    if seccomp not in _SECCOMP_OK:
        yield f"seccompProfile {seccomp!r}"
    if ctx.get("procMount", "Default") != "Default":
        yield "procMount"
    if (ctx.get("seLinuxOptions") or {}).get("type") not in (None, "", "container_t", "container_init_t"):
        yield "seLinuxOptions type"
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            yield f"hostPort {port['hostPort']}"
    if ctx.get("readOnlyRootFilesystem") is not True:
        yield "readOnlyRootFilesystem is not true"


# ---------------------------------------------------------------------------------------- NetworkPolicy
@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (namespace, its labels, its namespace's labels, its IP) or an address
    outside the cluster (``namespace=None``)."""

    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)


def _selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    selector = selector or {}
    unknown = set(selector) - {"matchLabels"}
    if unknown:
        raise NotImplementedError(f"selector keys {sorted(unknown)} are not evaluated here")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _in_block(block: Mapping[str, Any], ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    network = ipaddress.ip_network(block["cidr"])
    if address.version != network.version or address not in network:
        return False
    return not any(
        address in ipaddress.ip_network(e)
        for e in block.get("except") or []
        if ipaddress.ip_network(e).version == address.version
    )


def _peer_matches(rule_peer: Mapping[str, Any], peer: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        return _in_block(rule_peer["ipBlock"], peer.ip)
    if peer.namespace is None:
        return False  # pod and namespace selectors only ever match pods
    if "namespaceSelector" in rule_peer:
        if not _selects(rule_peer["namespaceSelector"], peer.namespace_labels):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return _selects(rule_peer.get("podSelector"), peer.labels)


def _port_matches(ports: list[Mapping[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for item in ports:
        if item.get("protocol", "TCP") != protocol:
            continue
        first, last = item.get("port"), item.get("endPort", item.get("port"))
        if isinstance(first, str):
            raise NotImplementedError("named ports are not evaluated here")
        if first is None or first <= port <= last:
            return True
    return False


@dataclass
class NetworkModel:
    """NetworkPolicies of one or more namespaces."""

    policies: list[Mapping[str, Any]]

    def _selecting(self, pod: Peer, direction: str) -> list[Mapping[str, Any]]:
        if pod.namespace is None:
            return []  # outside the cluster: no policy of ours applies
        found = []
        for policy in self.policies:
            spec = policy["spec"]
            types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]
            in_scope = policy["metadata"]["namespace"] == pod.namespace and _selects(
                spec["podSelector"], pod.labels
            )
            if in_scope and direction in types:
                found.append(policy)
        return found

    def _direction_allows(self, pod: Peer, other: Peer, port: int, protocol: str, direction: str) -> bool:
        if pod.namespace is None:
            return True  # an address outside the cluster: its own network is not ours to model
        policies = self._selecting(pod, direction)
        if not policies:
            return True  # not isolated in this direction
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in policies:
            for rule in policy["spec"].get(key) or []:
                peers = rule.get(peers_key)
                peer_ok = not peers or any(
                    _peer_matches(p, other, policy["metadata"]["namespace"]) for p in peers
                )
                if peer_ok and _port_matches(rule.get("ports"), port, protocol):
                    return True
        return False

    def allowed(self, source: Peer, destination: Peer, port: int, protocol: str = "TCP") -> bool:
        return self._direction_allows(
            source, destination, port, protocol, "Egress"
        ) and self._direction_allows(destination, source, port, protocol, "Ingress")
