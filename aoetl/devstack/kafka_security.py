"""The secure dev broker (``aoetl dev up --secure``): TLS on every listener, SCRAM-SHA-512 users per service,
least-privilege ACLs enforced by KRaft's ``StandardAuthorizer``.

Listeners, all on 127.0.0.1 and all ``SASL_SSL``:

* ``CLIENT`` (the bootstrap address): SCRAM-SHA-512 only. Every service, the CLI and the tests connect
  here, each as its own user, created through the admin API (``alter_user_scram_credentials``) so no
  password is ever on a command line (``ps`` shows any process's arguments to every local user);
* ``INTERNAL``: PLAIN, users ``broker`` (inter-broker traffic: a single node still sends itself
  transaction markers) and ``admin`` (what the dev stack creates topics, users and ACLs with), both
  ``super.users``. PLAIN because their passwords must exist before the broker can store SCRAM credentials:
  KRaft keeps those in the metadata log, so the first principal cannot be a SCRAM one without passing
  its password to ``kafka-storage format --add-scram`` on the command line;
* ``CONTROLLER``: PLAIN, user ``broker`` (KRaft controllers do not support SCRAM on their listener).

Passwords are generated per stack (``secrets.token_urlsafe``) and kept in ``credentials.json`` under the
broker's state folder, mode 0600, like ``server.properties`` which holds the broker's own; they are never
printed. The certificate material is ``aoetl.devstack.tls``.

Tenants of the Kafka door (``aoetl dev up --secure --tenant NAME``) get a SCRAM user ``tenant-<name>`` of
their own, with the grants of ``shared.kafka.acls.tenant_grants``; a tenant once added is part of
``credentials.json`` and so provisioned again at every ``up``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from confluent_kafka import KafkaException
from confluent_kafka.admin import AclBinding, AdminClient

from aoetl.devstack.errors import StackStartupError
from aoetl.devstack.osproc import wait_for
from aoetl.devstack.tls import BrokerTls, write_private
from shared.kafka import acls
from shared.kafka.acls import Principal
from shared.kafka.clients import KafkaClients
from shared.settings import KafkaSettings

BROKER_USER: Final = "broker"
ADMIN_USER: Final = "admin"
SCRAM_MECHANISM: Final = "SCRAM-SHA-512"
SCRAM_ITERATIONS: Final = 8192
CREDENTIALS_FILE: Final = "credentials.json"
AUTHORIZER_LOG: Final = "authorizer.log"


def _jaas_plain(username: str, password: str, users: dict[str, str]) -> str:
    # Kafka parses JAAS values as quoted strings; token_urlsafe passwords hold no quote or backslash.
    accounts = " ".join(f'user_{name}="{secret}"' for name, secret in users.items())
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{username}" password="{password}" {accounts};'
    )


@dataclass(frozen=True)
class BrokerSecurity:
    """The secure broker's files under ``folder``: TLS material and the stack's passwords."""

    folder: Path

    @property
    def tls(self) -> BrokerTls:
        return BrokerTls(self.folder)

    @property
    def credentials_file(self) -> Path:
        return self.folder / CREDENTIALS_FILE

    def ensure(self) -> BrokerSecurity:
        """Create the certificates and a password for every user that has none yet (idempotent)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        self.tls.ensure()
        passwords = self._passwords()
        users = [BROKER_USER, ADMIN_USER, *(p.value for p in Principal)]
        missing = [user for user in users if user not in passwords]
        if missing:
            passwords.update({user: secrets.token_urlsafe(24) for user in missing})
            write_private(self.credentials_file, json.dumps(passwords, indent=2).encode())
        return self

    def add_tenants(self, tenants: Iterable[str]) -> list[str]:
        """Give each tenant's Kafka user a password, unless it has one; return every tenant of the stack.
        A name that cannot be a tenant (``shared.kafka.topics.checked_tenant``) is a ``ValueError``."""
        users = [acls.tenant_user(tenant) for tenant in tenants]
        passwords = self._passwords()
        missing = [user for user in users if user not in passwords]
        if missing:
            passwords.update({user: secrets.token_urlsafe(24) for user in missing})
            write_private(self.credentials_file, json.dumps(passwords, indent=2).encode())
        return self.tenants()

    def tenants(self) -> list[str]:
        """The tenants whose Kafka users this stack has."""
        return sorted(t for t in map(acls.tenant_of_user, self._passwords()) if t is not None)

    def password(self, user: str) -> str:
        try:
            return self._passwords()[user]
        except KeyError:
            raise KeyError(f"no password for Kafka user {user!r} in {self.credentials_file}") from None

    def _passwords(self) -> dict[str, str]:
        try:
            data = json.loads(self.credentials_file.read_text())
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in data.items()}

    # ------------------------------------------------------------------------------- broker side
    def server_properties(self, port: int, internal_port: int, controller_port: int) -> dict[str, str]:
        """The listener, TLS, SASL and authorizer properties of ``server.properties``."""
        tls, broker, admin = self.tls, self.password(BROKER_USER), self.password(ADMIN_USER)
        host = "127.0.0.1"
        return {
            "listeners": (
                f"CLIENT://{host}:{port},INTERNAL://{host}:{internal_port},CONTROLLER://{host}:{controller_port}"
            ),
            "advertised.listeners": f"CLIENT://{host}:{port},INTERNAL://{host}:{internal_port}",
            "listener.security.protocol.map": "CLIENT:SASL_SSL,INTERNAL:SASL_SSL,CONTROLLER:SASL_SSL",
            "inter.broker.listener.name": "INTERNAL",
            "controller.listener.names": "CONTROLLER",
            "listener.name.client.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "listener.name.internal.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.internal.plain.sasl.jaas.config": _jaas_plain(
                BROKER_USER, broker, {BROKER_USER: broker, ADMIN_USER: admin}
            ),
            "listener.name.controller.plain.sasl.jaas.config": _jaas_plain(
                BROKER_USER, broker, {BROKER_USER: broker}
            ),
            # SCRAM credentials live in the metadata log; the login module needs no user list
            "listener.name.client.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(tls.keystore_file),
            "ssl.keystore.password": tls.keystore_password,
            "ssl.key.password": tls.keystore_password,
            # the broker verifies its own certificate when it connects to itself (INTERNAL, CONTROLLER)
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.ca_file),
            "ssl.client.auth": "none",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{BROKER_USER};User:{ADMIN_USER}",
            "allow.everyone.if.no.acl.found": "false",
            # topics belong to the operator: no client creates one by naming it
            "auto.create.topics.enable": "false",
        }

    # ------------------------------------------------------------------------------- client side
    def admin_settings(self, internal_port: int) -> KafkaSettings:
        """The dev stack's own super-user connection (INTERNAL listener, PLAIN over TLS)."""
        return KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{internal_port}",
            security_protocol="SASL_SSL",
            sasl_mechanism="PLAIN",
            sasl_username=ADMIN_USER,
            sasl_password=self.password(ADMIN_USER),
            ssl_ca_location=self.tls.ca_file,
            client_id="aoetl-devstack",
        )

    def client_settings(self, bootstrap: str, principal: Principal | str) -> KafkaSettings:
        """How ``principal`` (a role, or a user such as a tenant's) connects: its SCRAM user on the
        CLIENT listener."""
        user = principal.value if isinstance(principal, Principal) else principal
        return KafkaSettings(
            bootstrap_servers=bootstrap,
            security_protocol="SASL_SSL",
            sasl_mechanism=SCRAM_MECHANISM,
            sasl_username=user,
            sasl_password=self.password(user),
            ssl_ca_location=self.tls.ca_file,
        )

    def client_env(self, principal: Principal | str) -> dict[str, str]:
        """The ``AOETL_KAFKA_*`` variables of a process that authenticates as ``principal``."""
        user = principal.value if isinstance(principal, Principal) else principal
        return {
            "AOETL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "AOETL_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "AOETL_KAFKA_SASL_USERNAME": user,
            "AOETL_KAFKA_SASL_PASSWORD": self.password(user),
            "AOETL_KAFKA_SSL_CA_LOCATION": str(self.tls.ca_file),
        }


# ----------------------------------------------------------------------------------- provisioning
def provision(
    admin: KafkaSettings, security: BrokerSecurity, suffix: str = "", timeout: float = 30.0
) -> None:
    """Give every principal and every tenant of the stack (``BrokerSecurity.tenants``) its SCRAM
    credential and its ACLs (``shared.kafka.acls``) for the deployment whose topics carry ``suffix``.
    Idempotent: a credential is set to the stored password again (which also repairs one a lost
    credentials file no longer matches), an ACL that exists is not duplicated. Grants are only added,
    never removed, so deployments with other suffixes keep theirs."""
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    client = KafkaClients(admin).admin()
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    tenants = security.tenants()
    users = [*(p.value for p in Principal), *map(acls.tenant_user, tenants)]
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(user, info, security.password(user).encode()) for user in users
    ]
    _wait_all(client.alter_user_scram_credentials(upserts, request_timeout=timeout), "SCRAM user", timeout)
    grants = acls.grants(suffix) + acls.tenant_grants(tenants, suffix)
    bindings = [grant.to_binding() for grant in grants]
    _wait_all(client.create_acls(bindings, request_timeout=timeout), "ACL", timeout)
    _await_applied(client, set(users), set(bindings), timeout)


def _await_applied(client: AdminClient, users: set[str], bindings: set[AclBinding], timeout: float) -> None:
    """Return once the broker enforces what was just created. The admin calls return when the controller
    has committed the change; the broker applies it from the metadata log a moment later, and a service
    started in between would be refused, which its start-up check rightly takes for a configuration
    error (exit 2). Both lists below are answered from the broker's own metadata."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    anything: Any = None  # a filter's None matches every name, principal and host (the stubs say str)
    every_acl = AclBindingFilter(
        ResourceType.ANY,
        anything,
        ResourcePatternType.ANY,
        anything,
        anything,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )

    def applied() -> bool:
        described = client.describe_user_scram_credentials(list(users), request_timeout=timeout)
        futures = described.values() if isinstance(described, dict) else [described]
        try:
            for future in futures:
                future.result(timeout=timeout)
            listed = set(client.describe_acls(every_acl, request_timeout=timeout).result(timeout=timeout))
        except KafkaException:  # a user the broker does not know yet
            return False
        return bindings <= listed

    wait_for(applied, timeout=timeout, interval=0.2, what="the broker to apply the SCRAM users and ACLs")


def _wait_all(futures: Mapping[Any, Future[Any]], what: str, timeout: float) -> None:
    for key, future in futures.items():
        try:
            future.result(timeout=timeout)
        except Exception as exc:  # KafkaException or a timeout: the stack cannot be secured as asked
            # the key names the user or the ACL, never a password (upsertions are not the keys)
            raise StackStartupError(f"creating {what} {key} failed: {exc}") from exc
