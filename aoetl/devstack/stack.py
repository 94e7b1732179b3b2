"""The local dev stack: one Kafka broker and one PostgreSQL cluster under a state folder.

``up`` is idempotent: components whose recorded PID is alive and answering are adopted, not restarted, so a
second ``up`` (from any process) never starts a second broker. ``KAFKA_BOOTSTRAP_SERVERS`` /
``AOETL_POSTGRES_DSN`` point at existing servers instead (see :meth:`DevStack.from_env`), and those are never
stopped by ``down``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aoetl.devstack.kafka import KafkaNode, kafka_ready, private_broker_settings
from aoetl.devstack.osproc import file_lock
from aoetl.devstack.postgres import PostgresNode, postgres_ready
from aoetl.devstack.processes import SERVICE_NAMES, ServiceProcess, ServiceSupervisor
from aoetl.devstack.state import STATE_FILE, default_state_dir, read_json, write_json
from shared.kafka.admin import ensure_topics
from shared.redaction import redact
from shared.settings import KafkaSettings, load_settings


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
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.external_kafka = external_kafka
        self.external_postgres = external_postgres
        self.kafka = KafkaNode.from_state(self.state_dir / "kafka", self._state().get("kafka"))
        self.postgres = PostgresNode.from_state(self.state_dir / "postgres", self._state().get("postgres"))

    @classmethod
    def from_env(cls, state_dir: Path | None = None) -> DevStack:
        """Honour ``KAFKA_BOOTSTRAP_SERVERS`` and ``AOETL_POSTGRES_DSN`` as existing servers."""
        return cls(
            state_dir,
            external_kafka=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            external_postgres=os.environ.get("AOETL_POSTGRES_DSN") or None,
        )

    @property
    def endpoints(self) -> StackEndpoints:
        return StackEndpoints(
            self.external_kafka or self.kafka.bootstrap, self.external_postgres or self.postgres.dsn
        )

    @property
    def kafka_settings(self) -> KafkaSettings:
        """An external broker with the environment's security settings; our own one as it listens."""
        if self.external_kafka:
            return load_settings(KafkaSettings, bootstrap_servers=self.external_kafka)
        return private_broker_settings(self.kafka.bootstrap)

    @property
    def supervisor(self) -> ServiceSupervisor:
        # the gateway takes the API keys of the keys topic (dev up hands the CLI a local admin key)
        return ServiceSupervisor(self.state_dir, env={**self.endpoints.env(), "AOETL_AUTH_API_KEYS": "true"})

    def up(self, timeout: float = 120.0, *, create_topics: bool = True) -> StackEndpoints:
        """Start what is not running yet (Kafka and PostgreSQL concurrently) and create the topics."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.state_dir / ".lock"):
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="devstack") as pool:
                futures = []
                if not self.external_kafka:
                    futures.append(pool.submit(self.kafka.start, timeout))
                if not self.external_postgres:
                    futures.append(pool.submit(self.postgres.start, timeout))
                try:
                    for future in futures:
                        future.result()
                finally:
                    # Record whatever did start, so a failed `up` can still be cleaned by `down`.
                    self._save()
            if create_topics:
                ensure_topics(self.kafka_settings)
        return self.endpoints

    def start_services(
        self, names: tuple[str, ...] = SERVICE_NAMES, replicas: int = 1, timeout: float = 60.0
    ) -> list[ServiceProcess]:
        """Start ``replicas`` of each service not already running and wait until all answer ``/ready``."""
        supervisor = self.supervisor
        started: list[ServiceProcess] = []
        for name in names:
            if not supervisor.alive(name):
                started += supervisor.start(name, replicas)
        supervisor.wait_ready(started, timeout)
        return started

    def down(self, timeout: float = 30.0) -> None:
        """Stop services first (they hold connections), then the servers we own. External ones stay."""
        with file_lock(self.state_dir / ".lock"):
            self.supervisor.stop(timeout=timeout)
            self.kafka.stop(timeout)
            self.postgres.stop(timeout)
            self._save()

    def status(self) -> list[ComponentStatus]:
        rows = [self._kafka_status(), self._postgres_status()]
        rows += [
            ComponentStatus(f"{p.name}[{p.replica}]", p.is_ready(), f"http://127.0.0.1:{p.http_port}", p.pid)
            for p in self.supervisor.processes()
        ]
        return rows

    def _kafka_status(self) -> ComponentStatus:
        if self.external_kafka:
            healthy = kafka_ready(self.kafka_settings)
            return ComponentStatus("kafka", healthy, self.external_kafka, None, True)
        running = self.kafka.is_running()
        return ComponentStatus(
            "kafka",
            running and self.kafka.is_ready(),
            self.kafka.bootstrap,
            self.kafka.pid if running else None,
        )

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
                "postgres": self.postgres.to_state(),
                "external": {"kafka": self.external_kafka, "postgres": self.external_postgres},
            },
        )
