"""Static checks that the bundled example runs in containers on object storage (no Docker on the test
machines): compose ships an S3-compatible server (S3Proxy, the version the tests run) whose volume
holds the example's objects, the services declare the s3 connection to it and allow its endpoint, and the
example spec passes the policy the services read from compose's environment."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from aoetl.devstack import SERVICE_NAMES
from compose.generate_env import env_lines
from shared.policy import check_spec, load_policy
from shared.spec import load_spec
from tests.support.s3_server import S3PROXY_VERSION

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "orders" / "pipeline-s3.yaml"
REQUIRED = re.compile(r"\$\{(?P<name>[A-Z0-9_]+):\?[^}]+\}")


def _compose_text() -> str:
    return (ROOT / "compose" / "docker-compose.yml").read_text()


def _services() -> dict[str, Any]:
    return yaml.safe_load(_compose_text())["services"]


def _env_of(service: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in (service.get("environment") or {}).items()}


def test_compose_ships_the_object_store_the_tests_run() -> None:
    s3 = _services()["s3"]
    assert s3["image"] == f"andrewgaul/s3proxy:{S3PROXY_VERSION}"
    env = _env_of(s3)
    assert env["JCLOUDS_PROVIDER"] == "filesystem" and env["S3PROXY_AUTHORIZATION"] == "aws-v2-or-v4"
    assert REQUIRED.fullmatch(env["S3PROXY_IDENTITY"]) and REQUIRED.fullmatch(env["S3PROXY_CREDENTIAL"])
    port = urlsplit(env["S3PROXY_ENDPOINT"]).port
    assert port is not None and port >= 1024  # no capability to bind a privileged port
    assert f"s3-data:{env['JCLOUDS_FILESYSTEM_BASEDIR']}" in s3["volumes"]


def test_the_seed_writes_the_examples_objects_into_the_stores_volume_first() -> None:
    services = _services()
    seed, s3 = services["s3-seed"], services["s3"]
    assert s3["depends_on"]["s3-seed"]["condition"] == "service_completed_successfully"
    basedir = _env_of(s3)["JCLOUDS_FILESYSTEM_BASEDIR"]
    assert f"s3-data:{basedir}" in seed["volumes"]
    out = seed["command"][seed["command"].index("--out") + 1]
    bucket_and_prefix = Path(out).relative_to(basedir).as_posix()  # the filesystem backend: bucket/key
    source = load_spec(EXAMPLE).source
    assert getattr(source, "path", "").startswith(f"s3://{bucket_and_prefix}/")
    dockerfile = (ROOT / "compose" / "Dockerfile").read_text()
    assert "examples/orders/generate.py" in dockerfile  # the module the seed runs is in the image
    assert f"chown 10001:10001 {basedir}" in dockerfile  # the volume takes this owner: the non-root user


def test_every_service_may_use_the_store_and_the_example_passes_their_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _services()
    env = _env_of(yaml.safe_load(_compose_text())["x-service"])  # the environment every service shares
    for name in SERVICE_NAMES:
        assert env.items() <= _env_of(services[name]).items(), name
        assert services[name]["depends_on"]["s3"]["condition"] == "service_started"
    for key in ("AOETL_POLICY_CONNECTIONS", "AOETL_POLICY_HTTP_EGRESS_ALLOW"):
        monkeypatch.setenv(key, env[key])
    policy = load_policy()
    lake = policy.connections["lake"]
    assert lake.env == "AOETL_LAKE_S3_CREDENTIALS" and REQUIRED.fullmatch(env["AOETL_LAKE_S3_CREDENTIALS"])
    endpoint = urlsplit(lake.endpoint or "")
    assert endpoint.hostname == "s3"
    assert endpoint.port == urlsplit(_env_of(services["s3"])["S3PROXY_ENDPOINT"]).port
    assert check_spec(load_spec(EXAMPLE), policy) == []  # accepted: connection, roots, endpoint allowed


def test_the_generated_env_sets_every_variable_compose_requires() -> None:
    required = set(REQUIRED.findall(_compose_text()))
    lines = dict(line.split("=", 1) for line in env_lines())
    assert required == set(lines)
    access, secret = lines["AOETL_S3_CREDENTIALS"].split(":")
    assert (access, secret) == (lines["AOETL_S3_ACCESS_KEY"], lines["AOETL_S3_SECRET_KEY"])
    assert env_lines() != env_lines()  # fresh secrets every time


def test_the_plain_object_store_manifest_validates_and_seeds_the_example() -> None:
    import kubernetes_validate

    from k8s.render import KUBE_VERSION

    docs = [d for d in yaml.safe_load_all((ROOT / "k8s" / "object-store.yaml").read_text()) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    (store,) = [d for d in docs if d["kind"] == "StatefulSet"]
    pod = store["spec"]["template"]["spec"]
    (seed,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert server["image"] == f"andrewgaul/s3proxy:{S3PROXY_VERSION}"
    env = {e["name"]: e for e in server["env"]}
    out = Path(seed["command"][seed["command"].index("--out") + 1])
    bucket_and_prefix = out.relative_to(env["JCLOUDS_FILESYSTEM_BASEDIR"]["value"]).as_posix()
    assert getattr(load_spec(EXAMPLE).source, "path", "").startswith(f"s3://{bucket_and_prefix}/")
    assert env["S3PROXY_CREDENTIAL"]["valueFrom"]["secretKeyRef"]["name"] == "aoetl-object-store"
