"""The local dev stack: one Kafka broker and one PostgreSQL cluster under a state folder.

``up`` is idempotent: components whose recorded PID is alive and answering are adopted, not restarted, so a
second ``up`` (from any process) never starts a second broker. ``KAFKA_BOOTSTRAP_SERVERS`` /
``AOETL_POSTGRES_DSN`` point at existing servers instead (see :meth:`DevStack.from_env`), and those are never
stopped by ``down``.

``secure=True`` (``aoetl dev up --secure``) runs the broker with TLS, a SCRAM user per service and the
least-privilege ACLs of ``shared.kafka.acls``; each service replica then gets its own credentials in its
environment, and the CLI's are in a file of the state folder (mode 0600), never on the terminal. The
choice is remembered in the state folder, so a later ``up`` or ``down`` treats the broker as it was started.

``tenants`` (``aoetl dev up --tenant NAME``) are tenants of the Kafka door: each gets its own request topic
(``shared.kafka.topics.tenant_request_topics``, created with the system's) and, when secure, its own SCRAM
user ``tenant-<name>`` with the grants of ``shared.kafka.acls.tenant_grants``, its password in a file
(0600) beside the CLI's. A secured stack remembers its tenants (their users are in its credentials).

``brokers`` (``aoetl dev up --brokers 3``) runs a KRaft cluster of that many combined broker+controller
nodes instead of the one broker (``aoetl.devstack.cluster``); its topics then get 3 replicas and
``min.insync.replicas=2`` (``shared.kafka.replication``). The count is remembered like the security choice;
a cluster is plaintext only (``--secure`` with more than one broker is refused before anything starts).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aoetl.devstack.cluster import KafkaCluster
from aoetl.devstack.kafka import KafkaNode, kafka_ready
from aoetl.devstack.kafka_security import provision
from aoetl.devstack.osproc import file_lock
from aoetl.devstack.postgres import PostgresNode, postgres_ready
from aoetl.devstack.processes import SERVICE_NAMES, ServiceProcess, ServiceSupervisor
from aoetl.devstack.state import STATE_FILE, default_state_dir, read_json, write_json
from aoetl.devstack.tls import write_private
from shared.errors import ConfigurationError
from shared.kafka.acls import Principal, tenant_user
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TOPICS, checked_tenant, tenant_request_topics
from shared.redaction import redact
from shared.settings import KafkaSettings, load_settings

CLI_PASSWORD_FILE = "cli.password"


@dataclass(frozen=True)
class StackEndpoints:
    kafka_bootstrap: str
    postgres_dsn: str

    def env(self) -> dict[str, str]:
        """The variables services and tests read to find the stack."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap, "AOETL_POSTGRES_DSN": self.postgres_dsn}


@dataclass(frozen=True)
class ComponentStatus:
    component: str
    healthy: bool
    address: str
    pid: int | None
    external: bool = False


class DevStack:
    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        external_kafka: str | None = None,
        external_postgres: str | None = None,
        secure: bool | None = None,
        brokers: int | None = None,
    ) -> None:
        """``secure``: True/False asks for a secured/plaintext broker at the next ``up``; None keeps what
        the state folder records (plaintext for a new stack). ``brokers``: likewise, how many brokers
        (one for a new stack)."""
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.external_kafka = external_kafka
        self.external_postgres = external_postgres
        state = self._state()
        self.kafka = KafkaNode.from_state(self.state_dir / "kafka", state.get("kafka"))
        self.postgres = PostgresNode.from_state(self.state_dir / "postgres", state.get("postgres"))
        if secure and external_kafka:
            raise ConfigurationError(
                "--secure secures the stack's own broker, but KAFKA_BOOTSTRAP_SERVERS names an external one"
            )
        if brokers is not None and brokers < 1:
            raise ConfigurationError(f"a Kafka cluster has at least one broker, not {brokers}")
        if secure and brokers and brokers > 1:
            raise ConfigurationError(
                "--secure runs a single broker; a cluster of several brokers is plaintext only"
            )
        recorded = state.get("kafka_cluster") or None
        self.cluster = (
            KafkaCluster(self.state_dir / "kafka-cluster", recorded["brokers"], recorded)
            if recorded
            else None
        )
        self._requested_secure = secure
        self._requested_brokers = brokers

    @classmethod
    def from_env(
        cls, state_dir: Path | None = None, *, secure: bool | None = None, brokers: int | None = None
    ) -> DevStack:
        """Honour ``KAFKA_BOOTSTRAP_SERVERS`` and ``AOETL_POSTGRES_DSN`` as existing servers."""
        return cls(
            state_dir,
            external_kafka=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            external_postgres=os.environ.get("AOETL_POSTGRES_DSN") or None,
            secure=secure,
            brokers=brokers,
        )

    @property
    def secure(self) -> bool:
        return not self.external_kafka and not self.cluster and self.kafka.secure

    @property
    def brokers(self) -> int:
        """How many brokers the stack's own Kafka has (or will have at the next ``up``)."""
        return self.cluster.size if self.cluster else 1

    @property
    def endpoints(self) -> StackEndpoints:
        own = self.cluster.bootstrap if self.cluster else self.kafka.bootstrap
        return StackEndpoints(self.external_kafka or own, self.external_postgres or self.postgres.dsn)

    @property
    def kafka_settings(self) -> KafkaSettings:
        """An external broker with the environment's security settings; our own one as it listens (as its
        super user when secure: topics, users and ACLs are created with it)."""
        if self.external_kafka:
            return load_settings(KafkaSettings, bootstrap_servers=self.external_kafka)
        return self.cluster.admin_settings if self.cluster else self.kafka.admin_settings

    def client_settings(self, principal: Principal) -> KafkaSettings:
        """How ``principal`` reaches the stack's broker (its own SCRAM user when secure)."""
        if self.secure:
            return self.kafka.security.client_settings(self.kafka.bootstrap, principal)
        return self.kafka_settings

    def service_env(self, name: str) -> dict[str, str]:
        """The variables a replica of service ``name`` gets beside the endpoints: its credentials when secure
        (set explicitly, so credentials inherited from the caller's shell never replace them)."""
        if not self.secure:
            return {}
        return self.kafka.security.client_env(Principal(name))

    @property
    def cli_password_file(self) -> Path:
        return self.kafka.security.folder / CLI_PASSWORD_FILE

    def cli_env(self) -> dict[str, str]:
        """What a shell needs for the ``aoetl`` commands: the endpoints, and when secure the CLI user's
        connection settings, whose password is read from a file (0600) instead of being printed."""
        env = self.endpoints.env()
        if self.secure:
            env |= self.kafka.security.client_env(Principal.CLI)
            del env["AOETL_KAFKA_SASL_PASSWORD"]
        return env

    def tenants(self) -> list[str]:
        """The tenants with a Kafka user of their own on this (secured) stack."""
        return self.kafka.security.tenants() if self.secure else []

    def tenant_password_file(self, tenant: str) -> Path:
        return self.kafka.security.folder / f"{tenant_user(tenant)}.password"

    def tenant_settings(self, tenant: str) -> KafkaSettings:
        """How ``tenant``'s own Kafka user reaches the secured stack's broker."""
        return self.kafka.security.client_settings(self.kafka.bootstrap, tenant_user(tenant))

    @property
    def supervisor(self) -> ServiceSupervisor:
        # the gateway takes the API keys of the keys topic (dev up hands the CLI a local admin key)
        return ServiceSupervisor(self.state_dir, env={**self.endpoints.env(), "AOETL_AUTH_API_KEYS": "true"})

    def up(
        self, timeout: float = 120.0, *, create_topics: bool = True, tenants: Iterable[str] = ()
    ) -> StackEndpoints:
        """Start what is not running yet (Kafka and PostgreSQL concurrently) and create the topics (with
        the request topics of ``tenants``); when secure, also the SCRAM users and the ACLs (``tenants``'
        included). A name that cannot be a tenant is a ``ValueError``, before anything starts."""
        tenants = [checked_tenant(tenant) for tenant in tenants]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.state_dir / ".lock"):
            self._apply_requested_brokers()
            self._apply_requested_security()
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="devstack") as pool:
                futures = []
                if not self.external_kafka:
                    kafka = self.cluster or self.kafka
                    futures.append(pool.submit(kafka.start, timeout))
                if not self.external_postgres:
                    futures.append(pool.submit(self.postgres.start, timeout))
                try:
                    for future in futures:
                        future.result()
                finally:
                    # Record whatever did start, so a failed `up` can still be cleaned by `down`.
                    self._save()
            if self.secure:
                security = self.kafka.security
                tenants = security.add_tenants(tenants)  # with the ones the stack already has
                provision(self.kafka_settings, security)
                write_private(self.cli_password_file, security.password(Principal.CLI).encode())
                for tenant in tenants:
                    password = security.password(tenant_user(tenant))
                    write_private(self.tenant_password_file(tenant), password.encode())
            if create_topics:
                ensure_topics(self.kafka_settings, [*TOPICS, *tenant_request_topics(tenants)])
        return self.endpoints

    def _apply_requested_brokers(self) -> None:
        wanted = self._requested_brokers
        if wanted is None or self.external_kafka or wanted == self.brokers:
            return
        running = self.cluster.is_running() if self.cluster else self.kafka.is_running()
        if running:
            raise ConfigurationError(
                f"the dev stack's Kafka in {self.state_dir} runs {self.brokers} broker(s); stop it first "
                "(aoetl dev down)"
            )
        # a cluster has folders of its own: switching back and forth keeps both layouts' data
        self.cluster = KafkaCluster(self.state_dir / "kafka-cluster", wanted) if wanted > 1 else None

    def _apply_requested_security(self) -> None:
        if self.cluster and self._requested_secure:
            # The TLS material and SCRAM users are laid out for one node; say so rather than half-secure.
            raise ConfigurationError(
                "--secure runs a single broker; a cluster of several brokers is plaintext only"
            )
        wanted = self._requested_secure
        if wanted is None or self.external_kafka or wanted == self.kafka.secure:
            return
        if self.kafka.is_running():
            running = "secured" if self.kafka.secure else "plaintext"
            raise ConfigurationError(
                f"the dev stack's broker in {self.state_dir} runs {running}; stop it first (aoetl dev down)"
            )
        # the same data folder serves both: KRaft metadata does not depend on the listeners
        self.kafka.secure = wanted

    def start_services(
        self, names: tuple[str, ...] = SERVICE_NAMES, replicas: int = 1, timeout: float = 60.0
    ) -> list[ServiceProcess]:
        """Start ``replicas`` of each service not already running and wait until all answer ``/ready``."""
        supervisor = self.supervisor
        started: list[ServiceProcess] = []
        for name in names:
            if not supervisor.alive(name):
                started += supervisor.start(name, replicas, env=self.service_env(name))
        supervisor.wait_ready(started, timeout)
        return started

    def down(self, timeout: float = 30.0) -> None:
        """Stop services first (they hold connections), then the servers we own. External ones stay."""
        with file_lock(self.state_dir / ".lock"):
            self.supervisor.stop(timeout=timeout)
            if self.cluster:
                self.cluster.stop(timeout)
            self.kafka.stop(timeout)
            self.postgres.stop(timeout)
            self._save()

    def status(self) -> list[ComponentStatus]:
        rows = [*self._kafka_status(), self._postgres_status()]
        rows += [
            ComponentStatus(f"{p.name}[{p.replica}]", p.is_ready(), _service_address(p), p.pid)
            for p in self.supervisor.processes()
        ]
        return rows

    def _kafka_status(self) -> list[ComponentStatus]:
        if self.external_kafka:
            healthy = kafka_ready(self.kafka_settings)
            return [ComponentStatus("kafka", healthy, self.external_kafka, None, True)]
        if self.cluster:
            return self._cluster_status(self.cluster)
        running = self.kafka.is_running()
        # the address and how it is secured, never a password or a file's content
        address = f"{self.kafka.bootstrap} (SASL_SSL, SCRAM)" if self.secure else self.kafka.bootstrap
        return [
            ComponentStatus(
                "kafka", running and self.kafka.is_ready(), address, self.kafka.pid if running else None
            )
        ]

    @staticmethod
    def _cluster_status(cluster: KafkaCluster) -> list[ComponentStatus]:
        """One row per broker: healthy when it is alive and the cluster's metadata lists it."""
        listed = cluster.listed_brokers()
        rows = []
        for node in cluster.nodes:
            running = node.is_running()
            rows.append(
                ComponentStatus(
                    f"kafka[{node.node_id}]",
                    running and node.node_id in listed,
                    f"{node.bootstrap} (controller {node.controller_port})",
                    node.pid if running else None,
                )
            )
        return rows

    def _postgres_status(self) -> ComponentStatus:
        # The address is shown to people: a DSN's password is masked (``shared.redaction``).
        if self.external_postgres:
            dsn = self.external_postgres
            return ComponentStatus("postgres", postgres_ready(dsn), redact(dsn), None, True)
        running = self.postgres.is_running()
        return ComponentStatus(
            "postgres",
            running and self.postgres.is_ready(),
            redact(self.postgres.dsn),
            self.postgres.pid if running else None,
        )

    def _state(self) -> dict[str, Any]:
        return read_json(self.state_dir / STATE_FILE)

    def _save(self) -> None:
        # Local node records are kept even when an external server is selected, so a broker started
        # earlier without the variables can still be found and stopped by `down`.
        write_json(
            self.state_dir / STATE_FILE,
            {
                "kafka": self.kafka.to_state(),
                "kafka_cluster": self.cluster.to_state() if self.cluster else None,
                "postgres": self.postgres.to_state(),
                "external": {"kafka": self.external_kafka, "postgres": self.external_postgres},
            },
        )


def _service_address(process: ServiceProcess) -> str:
    """Where a replica answers: its API (the gateway's, what a user calls) before its probes' port."""
    probes = f"http://127.0.0.1:{process.http_port}"
    return f"API {process.api_url}, probes {probes}" if process.api_url else probes
