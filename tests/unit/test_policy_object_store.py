"""Object storage in the spec policy: ``s3://`` URL parsing, the roots of an ``s3`` connection, the tenant,
the endpoint through the egress policy, and credentials that never reach an error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from shared.errors import ConfigurationError
from shared.policy import check_spec, load_policy
from shared.policy.connections import Connection, ConnectionUse
from shared.policy.errors import PolicyViolation
from shared.policy.s3_urls import S3Url, confine_s3, parse_s3_url
from shared.redaction import forget_all_secrets, redact
from shared.spec import parse_spec

pytestmark = pytest.mark.unit

CONNECTIONS = {
    "default": {"env": "AOETL_POSTGRES_DSN", "tenants": ["*"]},
    "lake": {
        "kind": "s3",
        "env": "AOETL_TEST_LAKE",
        "endpoint": "https://s3.example.com",
        "roots": ["s3://lake-bucket/raw", "s3://other-bucket"],
        "tenants": ["acme", "default"],
    },
    "local": {
        "kind": "s3",
        "env": "AOETL_TEST_LAKE",
        "endpoint": "http://127.0.0.1:9000",
        "roots": ["s3://bk1"],
    },
    "imds": {
        "kind": "s3",
        "env": "AOETL_TEST_LAKE",
        "endpoint": "http://169.254.169.254",
        "roots": ["s3://bk1"],
    },
}


@pytest.fixture
def policy(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AOETL_POLICY_CONNECTIONS", json.dumps(CONNECTIONS))
    return load_policy()


@pytest.fixture(autouse=True)
def no_known_secrets() -> Any:
    forget_all_secrets()
    yield
    forget_all_secrets()


def issues(policy: Any, source: dict[str, Any], destination: dict[str, Any] | None = None, **kw: Any) -> Any:
    spec = parse_spec(
        {"name": "s3", "source": source, "destination": destination or {"type": "postgres", "table": "t"}}
    )
    return [(i.path, i.reason) for i in check_spec(spec, policy, **kw)]


# ------------------------------------------------------------------------------------------------ URLs
def test_urls_parse_into_bucket_and_key() -> None:
    assert parse_s3_url("s3://my-bucket/a/b.csv") == S3Url("my-bucket", "a/b.csv")
    assert parse_s3_url("S3://my-bucket") == S3Url("my-bucket", "")
    assert parse_s3_url("s3://my-bucket/logs/*.jsonl").glob_base() == "logs"
    assert str(parse_s3_url("s3://my-bucket/a/b.csv")) == "s3://my-bucket/a/b.csv"


@pytest.mark.parametrize(
    "url",
    [
        "s3://key:secret@bucket/a.csv",  # credentials belong in a connection
        "s3://bucket:9000/a.csv",
        "s3://bucket/a.csv?versionId=1",
        "s3://bucket/a.csv#frag",
        "s3://Bucket/a.csv",  # not a bucket name
        "s3://10.0.0.1/a.csv",
        "s3://bucket/raw/../secret.csv",
        "s3://bucket/raw//a.csv",
        "s3://bucket/./a.csv",
        "s3://bucket/a\\b.csv",
        "s3://bucket/a\nb.csv",
        "http://bucket/a.csv",
    ],
)
def test_ambiguous_or_foreign_urls_are_refused(url: str) -> None:
    with pytest.raises(PolicyViolation):
        parse_s3_url(url)


def test_a_root_prefix_is_a_directory_not_a_string_prefix() -> None:
    roots = ["s3://bk1/data"]
    assert confine_s3("s3://bk1/data/x.csv", roots, connection="c").key == "data/x.csv"
    assert confine_s3("s3://bk1/data", roots, connection="c").key == "data"
    assert confine_s3("s3://bk1/data/**/*.csv", roots, connection="c").is_glob()
    for outside in (
        "s3://bk1/database.csv",
        "s3://bk1/other/x.csv",
        "s3://bk2/data/x.csv",
        "s3://bk1/da*/x.csv",
    ):
        with pytest.raises(PolicyViolation, match="outside the roots"):
            confine_s3(outside, roots, connection="c")


# ---------------------------------------------------------------------------------------- declarations
def test_an_s3_connection_needs_valid_roots() -> None:
    with pytest.raises(ValidationError, match="roots"):
        Connection.model_validate({"kind": "s3", "env": "X"})
    with pytest.raises(ValidationError, match="not a valid S3 bucket"):
        Connection.model_validate({"kind": "s3", "env": "X", "roots": ["s3://Bad_Bucket"]})


# ---------------------------------------------------------------------------------------------- rule
def test_an_object_inside_the_roots_through_a_declared_connection_is_allowed(policy: Any) -> None:
    assert (
        issues(policy, {"type": "csv", "path": "s3://lake-bucket/raw/2024/*.csv", "connection": "lake"}) == []
    )
    assert (
        issues(policy, {"type": "parquet", "path": "s3://other-bucket/t.parquet", "connection": "lake"}) == []
    )
    assert (
        issues(policy, {"type": "jsonl", "path": "s3://lake-bucket/raw/e.jsonl", "connection": "lake"}) == []
    )


def test_refusals_name_the_field(policy: Any) -> None:
    assert issues(policy, {"type": "csv", "path": "s3://lake-bucket/raw/a.csv"}) == [
        ("source.csv.connection", "an s3:// path needs 'connection': a declared s3 connection")
    ]
    [(field, reason)] = issues(
        policy, {"type": "csv", "path": "s3://lake-bucket/private/a.csv", "connection": "lake"}
    )
    assert field == "source.csv.path" and "outside the roots of connection 'lake'" in reason
    [(field, reason)] = issues(
        policy, {"type": "csv", "path": "s3://lake-bucket/raw/a.csv", "connection": "default"}
    )
    assert field == "source.csv.connection" and "no s3 connection named 'default'" in reason
    found = issues(policy, {"type": "csv", "path": "/data/a.csv", "connection": "lake"})
    assert ("source.csv.connection", "'connection' is for s3:// paths only") in found


def test_the_tenant_must_be_allowed(policy: Any) -> None:
    source = {"type": "csv", "path": "s3://lake-bucket/raw/a.csv", "connection": "lake"}
    assert issues(policy, source, tenant="acme") == []
    [(field, reason)] = issues(policy, source, tenant="globex")
    assert field == "source.csv.connection" and "tenant 'globex' may not use connection 'lake'" in reason


def test_the_endpoint_goes_through_the_egress_policy(policy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    [(field, reason)] = issues(policy, {"type": "csv", "path": "s3://bk1/a.csv", "connection": "imds"})
    assert field == "source.csv.connection" and "169.254.169.254" in reason
    [(_, reason)] = issues(policy, {"type": "csv", "path": "s3://bk1/a.csv", "connection": "local"})
    # the reason names the endpoint, its connection, what is wrong and the exact fix, and nothing of http
    assert reason == (
        "the endpoint http://127.0.0.1:9000 of s3 connection 'local' is refused: 127.0.0.1 is a loopback"
        " address; s3 connection endpoints reach public addresses only unless allow-listed: to allow it,"
        " add '127.0.0.1:9000' to AOETL_POLICY_HTTP_EGRESS_ALLOW in the services' environment"
    )
    monkeypatch.setenv("AOETL_POLICY_HTTP_EGRESS_ALLOW", "127.0.0.1:9000")
    assert issues(load_policy(), {"type": "csv", "path": "s3://bk1/a.csv", "connection": "local"}) == []


def test_where_the_connector_acts_the_same_reason_is_raised(
    policy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.connectors.object_store import filesystem

    monkeypatch.setenv("AOETL_TEST_LAKE", "AKIAX:secret")
    with pytest.raises(PolicyViolation) as refused:
        filesystem("s3://bk1/a.csv", "imds", policy)
    assert str(refused.value).startswith(
        "the endpoint http://169.254.169.254 of s3 connection 'imds' is refused: 169.254.169.254 is a"
        " cloud metadata address; s3 connection endpoints reach public addresses only"
    )
    assert "add '169.254.169.254:80' to AOETL_POLICY_HTTP_EGRESS_ALLOW" in str(refused.value)


def test_a_duckdb_destination_on_s3_is_refused(policy: Any) -> None:
    source = {"type": "csv", "path": "s3://lake-bucket/raw/a.csv", "connection": "lake"}
    found = issues(policy, source, {"type": "duckdb", "path": "s3://lake-bucket/raw/x.duckdb", "table": "t"})
    assert ("destination.duckdb.path", "a DuckDB destination is a local file, not s3://") in found


# --------------------------------------------------------------------------------------------- secrets
def test_both_halves_of_the_secret_are_redacted(policy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.connectors.object_store import _credentials

    monkeypatch.setenv("AOETL_TEST_LAKE", "AKIAPLANTED123:Planted/Secret+Key9")
    use = ConnectionUse("lake", policy.connections["lake"], "connection")
    assert _credentials(use) == ("AKIAPLANTED123", "Planted/Secret+Key9")
    text = redact("signature for AKIAPLANTED123 with Planted/Secret+Key9 failed")
    assert "AKIAPLANTED123" not in text and "Planted/Secret+Key9" not in text


def test_a_malformed_secret_is_refused_without_echoing_it(
    policy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.connectors.object_store import _credentials

    monkeypatch.setenv("AOETL_TEST_LAKE", "Planted-No-Colon-Secret")
    with pytest.raises(ConfigurationError) as refused:
        _credentials(ConnectionUse("lake", policy.connections["lake"], "connection"))
    assert "Planted-No-Colon-Secret" not in str(refused.value)
    assert "'<access key id>:<secret access key>'" in str(refused.value)
