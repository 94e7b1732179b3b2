"""The secure dev stack's files and configuration, without starting a broker: the TLS material verifies,
every secret is private to its owner and stays out of state files, reprs and printed output, the broker
configuration has no unauthenticated listener, and the plaintext configuration is what it always was."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from typer.testing import CliRunner

from aoetl.cli import app
from aoetl.devstack import DevStack
from aoetl.devstack.kafka import KafkaNode
from aoetl.devstack.kafka_security import ADMIN_USER, BROKER_USER, BrokerSecurity
from aoetl.devstack.tls import BrokerTls, write_private
from shared.errors import ConfigurationError
from shared.kafka.acls import Principal

pytestmark = pytest.mark.unit


def _private(path: Path) -> bool:
    return path.stat().st_mode & 0o077 == 0


def test_the_ca_signs_a_broker_certificate_for_the_loopback_names(tmp_path: Path) -> None:
    tls = BrokerTls(tmp_path / "tls").ensure()
    ca = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
    key, cert, chain = pkcs12.load_key_and_certificates(
        tls.keystore_file.read_bytes(), tls.keystore_password.encode()
    )
    assert key is not None and cert is not None
    assert cert.issuer == ca.subject and [c.subject for c in chain] == [ca.subject]
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(ValueError):  # the keystore is protected by its password
        pkcs12.load_key_and_certificates(tls.keystore_file.read_bytes(), b"wrong")


def test_tls_material_is_private_and_made_once(tmp_path: Path) -> None:
    tls = BrokerTls(tmp_path / "tls").ensure()
    files = sorted((tmp_path / "tls").iterdir())
    assert files and all(_private(f) for f in files)
    before = {f.name: f.read_bytes() for f in files}
    BrokerTls(tmp_path / "tls").ensure()
    assert {f.name: f.read_bytes() for f in sorted((tmp_path / "tls").iterdir())} == before
    assert tls.exists()


def test_write_private_never_creates_a_readable_file(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        write_private(tmp_path / "secret", b"x")
    finally:
        os.umask(old)
    assert _private(tmp_path / "secret") and (tmp_path / "secret").read_bytes() == b"x"


def test_every_user_gets_its_own_stable_password_in_a_private_file(tmp_path: Path) -> None:
    security = BrokerSecurity(tmp_path / "security").ensure()
    users = [BROKER_USER, ADMIN_USER, *(p.value for p in Principal)]
    passwords = {user: security.password(user) for user in users}
    assert len(set(passwords.values())) == len(users)
    assert all(len(p) >= 24 for p in passwords.values())
    assert _private(security.credentials_file) and _private(security.folder)
    again = BrokerSecurity(tmp_path / "security").ensure()
    assert {user: again.password(user) for user in users} == passwords


def test_client_settings_authenticate_as_the_principal_without_showing_its_password(tmp_path: Path) -> None:
    security = BrokerSecurity(tmp_path / "security").ensure()
    settings = security.client_settings("127.0.0.1:9093", Principal.EXTRACT)
    assert (settings.security_protocol, settings.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert settings.sasl_username == "extract" and settings.ssl_ca_location == security.tls.ca_file
    password = security.password("extract")
    assert settings.to_confluent()["sasl.password"] == password
    assert password not in repr(settings) and password not in json.dumps(settings.model_dump(mode="json"))
    env = security.client_env(Principal.EXTRACT)
    assert env["AOETL_KAFKA_SASL_USERNAME"] == "extract" and env["AOETL_KAFKA_SASL_PASSWORD"] == password


def test_the_secure_broker_has_no_unauthenticated_listener(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path / "kafka", port=19093, controller_port=19094, secure=True, internal_port=19095)
    node.security.ensure()
    node._write_config()
    text = node.config_path.read_text()
    config = dict(line.split("=", 1) for line in text.splitlines())
    assert set(config["listener.security.protocol.map"].replace(",", ":").split(":")[1::2]) == {"SASL_SSL"}
    assert "PLAINTEXT" not in config["listeners"] and "127.0.0.1:19093" in config["listeners"]
    assert config["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert config["authorizer.class.name"].endswith("StandardAuthorizer")
    assert config["super.users"] == "User:broker;User:admin"
    assert config["allow.everyone.if.no.acl.found"] == "false"
    assert _private(node.config_path)  # it holds the broker's own passwords
    assert "kafka.authorizer.logger" in (node.home / "log4j2.xml").read_text()


def test_the_plaintext_broker_configuration_is_unchanged(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path / "kafka", port=19093, controller_port=19094)
    node.home.mkdir(parents=True)
    node._write_config()
    config = dict(line.split("=", 1) for line in node.config_path.read_text().splitlines())
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:19093,CONTROLLER://127.0.0.1:19094"
    assert config["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert config["auto.create.topics.enable"] == "true"
    assert not any(k.startswith(("sasl", "ssl", "authorizer", "super")) for k in config)
    assert "authorizer" not in (node.home / "log4j2.xml").read_text()
    assert node.admin_settings.security_protocol == "PLAINTEXT"
    assert "secure" not in node.to_state()


def test_the_state_file_records_the_mode_and_ports_but_no_secret(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path / "kafka", port=1, controller_port=2, secure=True, internal_port=3)
    security = node.security.ensure()
    state = node.to_state()
    assert KafkaNode.from_state(node.home, state) == KafkaNode(node.home, 1, 2, None, True, 3)
    dumped = json.dumps(state)
    assert not any(security.password(user) in dumped for user in (BROKER_USER, ADMIN_USER, "cli"))


def test_secure_needs_the_stacks_own_broker(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="external"):
        DevStack(tmp_path, external_kafka="broker:9092", secure=True)
    result = CliRunner().invoke(
        app,
        ["dev", "up", "--secure"],
        env={"AOETL_STATE_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": "broker:9092"},
    )
    assert result.exit_code == 2
    assert "external" in result.output and "Traceback" not in result.output


def test_a_running_broker_is_not_switched_between_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = DevStack(tmp_path, secure=True)
    monkeypatch.setattr(KafkaNode, "is_running", lambda self: True)
    with pytest.raises(ConfigurationError, match="runs plaintext; stop it first"):
        stack._apply_requested_security()
    monkeypatch.setattr(KafkaNode, "is_running", lambda self: False)
    stack._apply_requested_security()
    assert stack.kafka.secure and stack.secure


def test_the_cli_lines_of_a_secure_stack_read_the_password_from_its_file(tmp_path: Path) -> None:
    stack = DevStack(tmp_path)
    stack.kafka.secure = True
    stack.kafka.security.ensure()
    env = stack.cli_env()
    assert env["AOETL_KAFKA_SASL_USERNAME"] == "cli" and "AOETL_KAFKA_SASL_PASSWORD" not in env
    assert stack.service_env("load")["AOETL_KAFKA_SASL_USERNAME"] == "load"
    assert DevStack(tmp_path / "plain").service_env("load") == {}
