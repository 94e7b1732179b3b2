"""The Apache Kafka jars the dev stack runs, and the JRE that runs them (no Docker, no distribution needed).

The jars come from Maven Central through ``mvn dependency:copy-dependencies`` on a generated pom, into a
cache folder outside the repository (``~/.cache/aoetl/kafka/<version>/libs``, or ``$AOETL_CACHE_DIR``), or
from ``$KAFKA_HOME/libs`` when an unpacked distribution exists. Every node of a cluster runs the same jars.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

from aoetl.devstack.errors import MissingToolError, StackStartupError
from aoetl.devstack.osproc import file_lock

KAFKA_VERSION: Final = "4.1.1"
SCALA_VERSION: Final = "2.13"
# Kafka 4.1 is compiled against slf4j 1.7, so the log4j2 binding must be the slf4j-1.x one
# (``log4j-slf4j-impl``); the slf4j2 binding is silently ignored and the broker logs nothing.
LOG4J_VERSION: Final = "2.24.3"

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


def java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise MissingToolError("java (JRE 17+) is required for the local Kafka broker; run `make bootstrap`")
    return candidate
