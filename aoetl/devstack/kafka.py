"""A single-node KRaft Apache Kafka broker run straight from Apache's release jars (no Docker).

Plaintext on localhost by default (what ``make test`` uses); with ``secure=True`` TLS, SCRAM users and
ACLs (``aoetl.devstack.kafka_security``), and readiness is then asked as the stack's admin user.

The jars come from Maven Central through ``mvn dependency:copy-dependencies`` on a generated pom, into a
cache folder outside the repository (``~/.cache/aoetl/kafka/<version>/libs``, or ``$AOETL_CACHE_DIR``), or
from ``$KAFKA_HOME/libs`` when an unpacked distribution exists. Readiness is a real metadata request, not
a port check, because the broker accepts TCP connections before the controller quorum has elected itself.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aoetl.devstack.errors import MissingToolError, StackStartupError
from aoetl.devstack.kafka_security import AUTHORIZER_LOG, BrokerSecurity
from aoetl.devstack.osproc import (
    file_lock,
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
from shared.settings import KafkaSettings

KAFKA_VERSION: Final = "4.1.1"
SCALA_VERSION: Final = "2.13"
# Kafka 4.1 is compiled against slf4j 1.7, so the log4j2 binding must be the slf4j-1.x one
# (``log4j-slf4j-impl``); the slf4j2 binding is silently ignored and the broker logs nothing.
LOG4J_VERSION: Final = "2.24.3"
MAX_MESSAGE_BYTES: Final = 20 * 1024 * 1024  # data topics allow 16 MiB records plus envelope overhead

_log = logging.getLogger(__name__)
_COMPLETE_MARKER: Final = ".complete"


def cache_dir() -> Path:
    """Root of downloaded artefacts; outside the repo so ``git clean`` never costs a re-download."""
    override = os.environ.get("AOETL_CACHE_DIR")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "aoetl"


def _pom(version: str) -> str:
    deps = [
        ("org.apache.kafka", f"kafka_{SCALA_VERSION}", version),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
    ]
    dep_xml = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>aoetl</groupId><artifactId>kafka-runtime</artifactId><version>{version}</version>
  <dependencies>
{dep_xml}
  </dependencies>
</project>
"""


def resolve_kafka_libs(version: str = KAFKA_VERSION) -> Path:
    """The folder of broker jars, resolving them with Maven once (idempotent, safe under concurrency)."""
    kafka_home = os.environ.get("KAFKA_HOME")
    if kafka_home:
        libs = Path(kafka_home).expanduser() / "libs"
        if not any(libs.glob("kafka_*.jar")):
            raise MissingToolError(f"KAFKA_HOME={kafka_home} has no libs/kafka_*.jar")
        return libs
    root = cache_dir() / "kafka" / version
    libs = root / "libs"
    if (libs / _COMPLETE_MARKER).exists():
        return libs
    with file_lock(root / ".lock"):
        if (libs / _COMPLETE_MARKER).exists():  # another process finished while we waited
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise MissingToolError("mvn (Maven) is required to fetch the Kafka jars; run `make bootstrap`")
        (root / "pom.xml").write_text(_pom(version))
        staging = root / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        _log.info("resolving Kafka %s jars with Maven into %s", version, libs)
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(root / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackStartupError(
                f"mvn failed resolving Kafka jars:\n{result.stdout[-3000:]}{result.stderr}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        (libs / _COMPLETE_MARKER).write_text(version)
    return libs


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise MissingToolError("java (JRE 17+) is required for the local Kafka broker; run `make bootstrap`")
    return candidate


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
        java, libs = _java(), resolve_kafka_libs()
        self.home.mkdir(parents=True, exist_ok=True)
        if self.secure:
            self.security.ensure()
        # Keep the previous ports when still free so clients configured earlier keep working.
        taken: set[int] = set()
        self.port = self._keep_or_pick(self.port, taken)
        self.controller_port = self._keep_or_pick(self.controller_port, taken)
        if self.secure:
            self.internal_port = self._keep_or_pick(self.internal_port, taken)
        self._write_config()
        classpath = f"{libs}/*"
        if not (self.home / "data" / "meta.properties").exists():
            self._format(java, classpath)
        stdout = (self.home / "stdout.log").open("ab")
        proc = subprocess.Popen(
            [
                java,
                "-Xms128m",
                "-Xmx512m",
                "-XX:+UseG1GC",
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
        self.wait_ready(timeout)

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
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.home / "data"),
            "num.partitions": "1",
            "num.network.threads": "2",
            "num.io.threads": "4",
            # Single node: every internal topic must accept one replica.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "8",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Tests start consumers constantly; the 3 s default delay would dominate their runtime.
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(MAX_MESSAGE_BYTES),
            "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
            "auto.create.topics.enable": "true",
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
                f"--cluster-id={new_cluster_id()}",
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
