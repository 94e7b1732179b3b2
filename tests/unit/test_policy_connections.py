"""Named connections: declarations, resolution for a tenant, the deprecated ``dsn_env``/``auth_env``, the
secret read from an environment variable or a file, and the DSN that never reaches an error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.avro.catalog import SchemaCatalog
from shared.avro.convert import to_datum
from shared.avro.serde import AvroSerde
from shared.contracts import PipelineRequest
from shared.errors import ConfigurationError, is_transient
from shared.policy import check_spec, load_policy
from shared.policy.connections import (
    Connection,
    ConnectionPolicyError,
    ConnectionUse,
    connection_for,
    postgres_dsn,
    register_declared_secrets,
)
from shared.redaction import forget_all_secrets, redact
from shared.spec import parse_spec
from shared.spec.models import HttpSource, PostgresDestination, PostgresSource

pytestmark = pytest.mark.unit

CONNECTIONS = {
    "default": {"env": "AOETL_POSTGRES_DSN"},
    "warehouse": {"env": "AOETL_TEST_WAREHOUSE_DSN", "tenants": ["acme", "default"]},
    "acme-only": {"file": "/run/secrets/acme-dsn", "tenants": ["acme"]},
    "shared-db": {"env": "AOETL_TEST_SHARED_DSN", "tenants": ["*"]},
    "items-api": {"kind": "http", "env": "AOETL_TEST_ITEMS_TOKEN", "hosts": ["api.example.com"]},
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


def spec(source: dict[str, Any], destination: dict[str, Any] | None = None) -> Any:
    return parse_spec(
        {
            "name": "conn",
            "source": source,
            "destination": destination or {"type": "jsonl", "path": "/tmp/out"},
        }
    )


def issues(policy: Any, source: dict[str, Any], destination: dict[str, Any] | None = None, **kw: Any) -> Any:
    return [(i.path, i.reason) for i in check_spec(spec(source, destination), policy, **kw)]


PG = {"type": "postgres", "table": "public.t"}


# ------------------------------------------------------------------------------------------ declarations
def test_the_default_declaration_is_the_dev_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AOETL_POLICY_CONNECTIONS", raising=False)
    assert load_policy().connections == {"default": Connection(env="AOETL_POSTGRES_DSN", tenants=["default"])}


@pytest.mark.parametrize(
    ("declaration", "reason"),
    [
        ({"x": {}}, "exactly one of 'env' or 'file'"),
        ({"x": {"env": "A", "file": "/s"}}, "exactly one of 'env' or 'file'"),
        ({"x": {"kind": "http", "env": "A"}}, "needs 'hosts'"),
        ({"x": {"kind": "http", "env": "A", "hosts": ["a b"]}}, "allow entry"),
        ({"x": {"env": "A", "tenants": []}}, "at least 1"),
        ({"x": {"env": "A", "password": "inline"}}, "Extra inputs"),
        ({"bad name!": {"env": "A"}}, "pattern"),
    ],
)
def test_bad_declarations_stop_the_service(
    monkeypatch: pytest.MonkeyPatch, declaration: dict[str, Any], reason: str
) -> None:
    monkeypatch.setenv("AOETL_POLICY_CONNECTIONS", json.dumps(declaration))
    with pytest.raises(ConfigurationError, match="AOETL_POLICY_CONNECTIONS") as caught:
        load_policy()
    assert reason in str(caught.value)


def test_unparsable_declarations_are_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOETL_POLICY_CONNECTIONS", "{not json")
    with pytest.raises(ConfigurationError, match="connections"):
        load_policy()


# ------------------------------------------------------------------------------------------ the rule
def test_a_postgres_part_without_a_connection_uses_default(policy: Any) -> None:
    assert issues(policy, PG, {"type": "postgres", "table": "public.out"}) == []
    use = connection_for(PostgresSource(table="t"), policy)
    assert use is not None and use.name == "default"


def test_named_connections_per_tenant(policy: Any) -> None:
    warehouse = {**PG, "connection": "warehouse"}
    assert issues(policy, warehouse) == []
    assert issues(policy, warehouse, tenant="acme") == []
    assert issues(policy, warehouse, tenant="globex") == [
        ("source.connection", "tenant 'globex' may not use connection 'warehouse'")
    ]
    assert issues(policy, {**PG, "connection": "acme-only"}, tenant="acme") == []
    assert issues(policy, {**PG, "connection": "acme-only"}) == [
        ("source.connection", "tenant 'default' may not use connection 'acme-only'")
    ]
    assert issues(policy, {**PG, "connection": "shared-db"}, tenant="anyone") == []
    assert issues(policy, PG, tenant="acme") == [
        ("source.connection", "tenant 'acme' may not use connection 'default'")
    ]


def test_unknown_and_wrong_kind_connections(policy: Any) -> None:
    [(path, reason)] = issues(policy, {**PG, "connection": "nope"})
    assert path == "source.connection" and "no postgres connection named 'nope'" in reason
    assert "warehouse" in reason  # says what is declared
    [(path, reason)] = issues(
        policy, {"type": "http", "url": "https://api.example.com", "connection": "warehouse"}
    )
    assert path == "source.connection" and "holds a postgres secret, not a http one" in reason
    [(path, reason)] = issues(policy, {"type": "jsonl", "path": "/tmp/in"}, {**PG, "connection": "items-api"})
    assert path == "destination.connection" and "holds a http secret" in reason


def test_an_http_connection_only_goes_to_its_hosts(policy: Any) -> None:
    good = {"type": "http", "url": "https://api.example.com/items", "connection": "items-api"}
    assert issues(policy, good) == []
    [(path, reason)] = issues(policy, {**good, "url": "https://attacker.example/collect"})
    assert path == "source.connection" and "may not send its credentials" in reason
    assert issues(policy, {"type": "http", "url": "https://attacker.example/"}) == []  # no credentials


def test_dsn_env_is_accepted_only_as_a_declared_connections_variable(policy: Any) -> None:
    """The migration rule for specs written before connections."""
    assert issues(policy, {**PG, "dsn_env": "AOETL_POSTGRES_DSN"}) == []
    assert issues(policy, {**PG, "dsn_env": "AOETL_TEST_WAREHOUSE_DSN"}, tenant="acme") == []
    use = connection_for(PostgresSource(table="t", dsn_env="AOETL_TEST_WAREHOUSE_DSN"), policy)
    assert use is not None and use.name == "warehouse" and use.field == "dsn_env"
    [(path, reason)] = issues(policy, {**PG, "dsn_env": "AOETL_KAFKA_SASL_PASSWORD"})
    assert path == "source.dsn_env" and "no connection reads 'AOETL_KAFKA_SASL_PASSWORD'" in reason
    [(path, reason)] = issues(policy, {"type": "jsonl", "path": "/tmp/in"}, {**PG, "dsn_env": "HOME"})
    assert path == "destination.dsn_env"
    # the variable of a connection the tenant may not use is refused like the connection itself
    assert issues(policy, {**PG, "dsn_env": "AOETL_TEST_WAREHOUSE_DSN"}, tenant="globex") == [
        ("source.dsn_env", "tenant 'globex' may not use connection 'warehouse'")
    ]


def test_auth_env_naming_the_sasl_password_is_refused(policy: Any) -> None:
    source = {"type": "http", "url": "https://api.example.com/items", "auth_env": "AOETL_KAFKA_SASL_PASSWORD"}
    [(path, reason)] = issues(policy, source)
    assert path == "source.auth_env" and "AOETL_KAFKA_SASL_PASSWORD" in reason
    # a postgres connection's variable is no http credential either
    [(path, _)] = issues(policy, {**source, "auth_env": "AOETL_POSTGRES_DSN"})
    assert path == "source.auth_env"
    assert issues(policy, {**source, "auth_env": "AOETL_TEST_ITEMS_TOKEN"}) == []


def test_a_spec_gives_connection_or_the_deprecated_field_not_both() -> None:
    with pytest.raises(ValidationError, match="'dsn_env' is deprecated"):
        PostgresSource(table="t", connection="warehouse", dsn_env="X")
    with pytest.raises(ValidationError, match="'dsn_env' is deprecated"):
        PostgresDestination(table="t", connection="warehouse", dsn_env="X")
    with pytest.raises(ValidationError, match="'auth_env' is deprecated"):
        HttpSource(url="https://a.example", connection="items-api", auth_env="X")
    with pytest.raises(ValidationError, match="pattern"):
        PostgresSource(table="t", connection="no spaces")


def test_an_old_writers_spec_decodes_and_means_the_default_connection(policy: Any) -> None:
    """A PipelineRequest v2 writer always wrote ``dsn_env`` (default AOETL_POSTGRES_DSN): the current
    reader reads it, and the policy accepts it as the ``default`` connection."""
    v2 = SchemaCatalog.default().history(PipelineRequest.avro_name)[1]
    old_writer = AvroSerde(SchemaCatalog([v2]))
    current = AvroSerde()
    request = PipelineRequest(spec=spec(PG, {"type": "postgres", "table": "public.out"}))
    old = to_datum(request)  # then shaped as the v2 schema had it; unions are (type name, record)
    source, destination = old["spec"]["source"][1], old["spec"]["destination"][1]
    for part in (source, destination):
        part.pop("connection")
        part["dsn_env"] = "AOETL_POSTGRES_DSN"
    data = old_writer.encode_record(PipelineRequest.avro_name, old)
    assert data[2:10] == v2.fingerprint
    decoded = current.decode(data, PipelineRequest)
    assert decoded.spec is not None
    assert isinstance(decoded.spec.source, PostgresSource)
    assert decoded.spec.source.dsn_env == "AOETL_POSTGRES_DSN" and decoded.spec.source.connection is None
    assert check_spec(decoded.spec, policy) == []
    source["dsn_env"] = "AOETL_KAFKA_SASL_PASSWORD"
    refused = current.decode(old_writer.encode_record(PipelineRequest.avro_name, old), PipelineRequest)
    assert refused.spec is not None
    assert [i.path for i in check_spec(refused.spec, policy)] == ["source.dsn_env"]


# ------------------------------------------------------------------------------------------ secrets
def test_the_secret_comes_from_the_environment(policy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    source = PostgresSource(table="t", connection="warehouse")
    monkeypatch.delenv("AOETL_TEST_WAREHOUSE_DSN", raising=False)
    with pytest.raises(ConfigurationError, match="environment variable AOETL_TEST_WAREHOUSE_DSN") as caught:
        postgres_dsn(source, policy)
    assert not is_transient(caught.value)
    monkeypatch.setenv("AOETL_TEST_WAREHOUSE_DSN", "postgresql://etl:Wh-s3cret@db.example/wh")
    assert postgres_dsn(source, policy) == "postgresql://etl:Wh-s3cret@db.example/wh"
    assert "Wh-s3cret" not in redact("connect failed for Wh-s3cret")  # read = registered for masking


def test_the_secret_comes_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "dsn"
    use = ConnectionUse("mounted", Connection(file=secret), "connection")
    with pytest.raises(ConfigurationError, match=f"file {secret}"):
        use.secret()
    secret.write_text("postgresql://etl:F1le-secret@db.example/wh\n")
    assert use.secret() == "postgresql://etl:F1le-secret@db.example/wh"  # the newline of a mounted file
    secret.write_text("  \n")
    with pytest.raises(ConfigurationError, match="is not set"):
        use.secret()


def test_a_malformed_dsn_never_reaches_the_error(policy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq quotes the part of a DSN it cannot parse; a badly percent-encoded password would be echoed."""
    monkeypatch.setenv("AOETL_TEST_WAREHOUSE_DSN", "postgresql://etl:Planted%zzPw@db.example/wh")
    with pytest.raises(ConfigurationError) as caught:
        postgres_dsn(PostgresSource(table="t", connection="warehouse"), policy)
    assert "malformed" in str(caught.value) and "warehouse" in str(caught.value)
    assert "Planted" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_the_connector_check_refuses_what_validation_refuses(policy: Any) -> None:
    with pytest.raises(
        ConnectionPolicyError, match="no connection reads 'AOETL_KAFKA_SASL_PASSWORD'"
    ) as caught:
        connection_for(
            HttpSource(url="https://api.example.com", auth_env="AOETL_KAFKA_SASL_PASSWORD"), policy
        )
    assert caught.value.field == "auth_env" and not is_transient(caught.value)
    assert connection_for(HttpSource(url="https://api.example.com"), policy) is None


def test_declared_secrets_are_registered_at_start_up(policy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOETL_TEST_ITEMS_TOKEN", "Bearer items-t0ken")
    monkeypatch.delenv("AOETL_TEST_SHARED_DSN", raising=False)  # unavailable: skipped, not an error
    register_declared_secrets(policy)
    assert redact("sent items-t0ken") == "sent ***"
