"""A single-node KRaft Apache Kafka broker run straight from Apache's release jars (no Docker).

Plaintext on localhost by default (what ``make test`` uses); with ``secure=True`` TLS, SCRAM users and
ACLs (``aoetl.devstack.kafka_security``), and readiness is then asked as the stack's admin user.

The jars are ``aoetl.devstack.kafka_jars``'s. A node may also be one voter of a multi-node quorum (its
``node_id``, the quorum's ``voters`` and cluster id, laid out by ``aoetl.devstack.cluster``). Readiness is
a real metadata request, not a port check, because the broker accepts TCP connections before the
controller quorum has elected itself.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aoetl.devstack.errors import StackStartupError
from aoetl.devstack.kafka_jars import java_binary, resolve_kafka_libs
from aoetl.devstack.kafka_security import AUTHORIZER_LOG, BrokerSecurity
from aoetl.devstack.osproc import (
    free_port,
    pid_alive,
    port_accepts,
    port_is_free,
    tail,
    terminate,
    wait_for,
)
from aoetl.devstack.tls import write_private
from shared.kafka.clients import KafkaClients
from shared.kafka.replication import Replication
from shared.settings import KafkaSettings

MAX_MESSAGE_BYTES: Final = 20 * 1024 * 1024  # data topics allow 16 MiB records plus envelope overhead


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding: what ``kafka-storage random-uuid`` prints."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def private_broker_settings(bootstrap: str) -> KafkaSettings:
    """How to reach the dev stack's own broker. It listens PLAINTEXT on localhost only and is started before
    any service settings exist, so its connection is stated here instead of read from ``AOETL_KAFKA_*``
    (which may describe another, secured cluster); its clients still come from ``KafkaClients``."""
    return KafkaSettings(bootstrap_servers=bootstrap, security_protocol="PLAINTEXT")


def _quiet(_error: object) -> None:
    """Connection-refused noise while a broker boots is expected; readiness is the answer, not the log."""


def kafka_ready(kafka: KafkaSettings, timeout: float = 5.0) -> bool:
    """True when the cluster answers a metadata request with at least one broker."""
    client = KafkaClients(kafka).admin(
        **{
            "socket.timeout.ms": int(timeout * 1000),
            "logger": logging.getLogger("aoetl.devstack.kafka.librdkafka"),
            "error_cb": _quiet,
        }
    )
    try:
        metadata = client.list_topics(timeout=timeout)
    except Exception:
        return False
    return bool(metadata.brokers)


_LOG4J2_XML: Final = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="server" fileName="{log}" filePattern="{log}.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="2"/>
    </RollingFile>{extra_appenders}
  </Appenders>
  <Loggers>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="kafka.log" level="WARN"/>
    <Logger name="org.apache.kafka.storage" level="WARN"/>{extra_loggers}
    <Root level="INFO"><AppenderRef ref="server"/></Root>
  </Loggers>
</Configuration>
"""
# The secure broker logs every denied operation (INFO; allowed ones are DEBUG) to a file of its own, which
# is how a missing or an exceeded ACL is found: one line per refusal, naming principal, operation, resource.
_AUTHORIZER_APPENDER: Final = """
    <File name="authorizer" fileName="{log}"><PatternLayout pattern="[%d] %p %m%n"/></File>"""
_AUTHORIZER_LOGGER: Final = """
    <Logger name="kafka.authorizer.logger" level="INFO" additivity="false">
      <AppenderRef ref="authorizer"/>
    </Logger>"""


@dataclass
class KafkaNode:
    """One broker+controller process whose files live under ``home`` (config, data, logs, pid)."""

    home: Path
    port: int = 0
    controller_port: int = 0
    pid: int | None = None
    secure: bool = False
    internal_port: int = 0  # secure only: the super users' listener (inter-broker, the stack's admin)
    # One voter of a cluster (``aoetl.devstack.cluster``): its id, every voter's ``id@host:port``, the id
    # all its nodes are formatted with, and how many brokers hold the internal topics. The defaults are the
    # single node the stack always ran.
    node_id: int = 1
    voters: str = ""
    cluster_id: str = ""
    cluster_size: int = 1
    heap: str = "512m"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    @property
    def authorizer_log_path(self) -> Path:
        return self.home / AUTHORIZER_LOG

    @property
    def security(self) -> BrokerSecurity:
        """The TLS material and passwords of the secure broker (only meaningful when ``secure``)."""
        return BrokerSecurity(self.home / "security")

    @property
    def admin_settings(self) -> KafkaSettings:
        """How the stack itself reaches this broker: plaintext, or as the super user when secure."""
        if self.secure:
            return self.security.admin_settings(self.internal_port)
        return private_broker_settings(self.bootstrap)

    def to_state(self) -> dict[str, Any]:
        # addresses and file paths only: the passwords stay in the security folder (mode 0600)
        state: dict[str, Any] = {
            "pid": self.pid,
            "port": self.port,
            "controller_port": self.controller_port,
            "bootstrap": self.bootstrap,
            "log": str(self.log_path),
        }
        if self.secure:
            state |= {"secure": True, "internal_port": self.internal_port}
        return state

    @classmethod
    def from_state(cls, home: Path, state: dict[str, Any] | None) -> KafkaNode:
        state = state or {}
        return cls(
            home,
            int(state.get("port") or 0),
            int(state.get("controller_port") or 0),
            state.get("pid"),
            secure=bool(state.get("secure")),
            internal_port=int(state.get("internal_port") or 0),
        )

    def is_running(self) -> bool:
        # The config path is unique to this state folder, so a recycled PID never matches.
        return pid_alive(self.pid, cmdline_marker=str(self.config_path))

    def is_ready(self, timeout: float = 3.0) -> bool:
        return self.is_running() and port_accepts(self.port) and kafka_ready(self.admin_settings, timeout)

    def start(self, timeout: float = 120.0) -> None:
        """Start (or adopt an already running) broker and return once it answers metadata requests."""
        if self.is_running():
            self.wait_ready(timeout)
            return
        self.pick_ports(set())
        self.launch()
        self.wait_ready(timeout)

    def pick_ports(self, taken: set[int]) -> None:
        """Keep the previous ports when still free (so clients configured earlier keep working), never one
        of ``taken`` (the other nodes' of a cluster, which must all be known before any config is written)."""
        self.port = self._keep_or_pick(self.port, taken)
        self.controller_port = self._keep_or_pick(self.controller_port, taken)
        if self.secure:
            self.internal_port = self._keep_or_pick(self.internal_port, taken)

    @property
    def quorum_voters(self) -> str:
        return self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}"

    def launch(self) -> None:
        """Write the config, format the storage the first time, and start the JVM without waiting: a
        cluster's nodes are ready only together, once their quorum has a leader."""
        java, libs = java_binary(), resolve_kafka_libs()
        self.home.mkdir(parents=True, exist_ok=True)
        if self.secure:
            self.security.ensure()
        self._write_config()
        classpath = f"{libs}/*"
        if not (self.home / "data" / "meta.properties").exists():
            self._format(java, classpath)
        stdout = (self.home / "stdout.log").open("ab")
        proc = subprocess.Popen(
            [
                java,
                "-Xms128m",
                f"-Xmx{self.heap}",
                "-XX:+UseG1GC",
                # A produce request is read into one heap buffer: with G1's default 1 MiB regions on this
                # heap every data batch (a few MiB of Arrow) was a humongous allocation, and the collections
                # they forced cost the broker 0.5-0.7 CPU-s per 1M-row run on 2 cores (bench_peers);
                # in 32 MiB regions a batch below 16 MiB is an ordinary young object (0.05 CPU-s).
                "-XX:G1HeapRegionSize=32m",
                # C1 only: a development broker lives for minutes, and C2 kept recompiling through whole
                # runs (0.3-0.9 CPU-s of compiler threads per 1M-row run even after warm-up runs, 0.08 with
                # C1, the request handlers no slower). AOETL_KAFKA_JVM_OPTS below can override it.
                "-XX:TieredStopAtLevel=1",
                *os.environ.get("AOETL_KAFKA_JVM_OPTS", "").split(),
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.xml'}",
                f"-Dkafka.logs.dir={self.home}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(self.config_path),
            ],
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the CLI that started it; stopped by `aoetl dev down`
        )
        stdout.close()
        self.pid = proc.pid

    @staticmethod
    def _keep_or_pick(port: int, taken: set[int]) -> int:
        if not (port and port not in taken and port_is_free(port)):
            port = free_port()
            while port in taken:
                port = free_port()
        taken.add(port)
        return port

    def wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            if not self.is_running():
                raise StackStartupError(
                    f"Kafka exited during startup; see {self.log_path}:\n{tail(self.home / 'stdout.log')}\n"
                    f"{tail(self.log_path)}"
                )
            return port_accepts(self.port) and kafka_ready(self.admin_settings, 2.0)

        wait_for(ready, timeout=timeout, interval=0.5, what=f"Kafka at {self.bootstrap}")

    def stop(self, timeout: float = 30.0) -> None:
        terminate(self.pid, timeout=timeout, cmdline_marker=str(self.config_path))
        self.pid = None

    def _write_config(self) -> None:
        internal = Replication.for_brokers(self.cluster_size)
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.quorum_voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.home / "data"),
            "num.partitions": "1",
            "num.network.threads": "2",
            "num.io.threads": "4",
            # The internal topics follow the one replication rule: 1 replica on a single node, 3 with 2 in
            # sync on a cluster (a group's offsets and a transaction's state survive one broker's loss).
            "offsets.topic.replication.factor": str(internal.factor),
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": str(internal.factor),
            "transaction.state.log.min.isr": str(internal.min_insync),
            "transaction.state.log.num.partitions": "8",
            "share.coordinator.state.topic.replication.factor": str(internal.factor),
            "share.coordinator.state.topic.min.isr": str(internal.min_insync),
            # Tests start consumers constantly; the 3 s default delay would dominate their runtime.
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(MAX_MESSAGE_BYTES),
            "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
            "auto.create.topics.enable": "true",
        }
        if self.cluster_size > 1:
            # topics created by the broker itself follow the rule too
            settings |= {
                "default.replication.factor": str(internal.factor),
                "min.insync.replicas": str(internal.min_insync),
            }
        appenders = loggers = ""
        if self.secure:
            # replaces the PLAINTEXT listeners; the file then holds passwords, hence mode 0600
            settings |= self.security.server_properties(self.port, self.internal_port, self.controller_port)
            appenders = _AUTHORIZER_APPENDER.format(log=self.authorizer_log_path)
            loggers = _AUTHORIZER_LOGGER
        text = "".join(f"{k}={v}\n" for k, v in settings.items())
        if self.secure:
            write_private(self.config_path, text.encode())
        else:
            self.config_path.write_text(text)
        (self.home / "log4j2.xml").write_text(
            _LOG4J2_XML.format(log=self.log_path, extra_appenders=appenders, extra_loggers=loggers)
        )

    def _format(self, java: str, classpath: str) -> None:
        # With static controller.quorum.voters the storage must be formatted WITHOUT --standalone.
        result = subprocess.run(
            [
                java,
                "-Xmx256m",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.xml'}",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                # One argument: an id may start with "-" (URL-safe base64), which argparse would take
                # for an option (a 1-in-64 start-up failure, seen in make test).
                f"--cluster-id={self.cluster_id or new_cluster_id()}",
                "-c",
                str(self.config_path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackStartupError(f"kafka storage format failed:\n{result.stdout}{result.stderr}")


def main() -> None:
    """``python -m aoetl.devstack.kafka`` resolves the jars (used by ``make bootstrap``)."""
    print(resolve_kafka_libs())


if __name__ == "__main__":
    main()
