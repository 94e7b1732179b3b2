"""``open_sink``: the one place that maps a spec destination to its sink.

Every destination type is a ``shared.destinations.DestinationKind`` (its spec model, a description, and
``open``): the built-in ones are listed here, the plugins' come from the ``aoetl.destinations`` entry
points (``shared.plugins``), and ``open_sink`` looks both up by the destination's ``type``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from services.load.sinks.base import Sink
from services.load.sinks.duckdb_file import DuckDBSink
from services.load.sinks.files import FileSink
from services.load.sinks.kafka_topic import KafkaSink
from services.load.sinks.object_files import ObjectFileSink
from services.load.sinks.postgres import PostgresSink
from shared.destinations import DestinationKind, SinkContext
from shared.errors import ConfigurationError
from shared.kafka.topics import Topics
from shared.plugins import installed
from shared.policy.s3_urls import is_s3
from shared.settings import KafkaSettings
from shared.spec.models import (
    Destination,
    DuckDBDestination,
    JsonlDestination,
    KafkaDestination,
    ParquetDestination,
    PostgresDestination,
)


@dataclass(frozen=True)
class _Builtin:
    """A built-in destination type (``DestinationKind``)."""

    model: type[BaseModel]
    description: str
    opener: Any

    def open(self, destination: Any, context: SinkContext) -> Sink:
        sink: Sink = self.opener(destination, context)
        return sink


def _file_sink(destination: ParquetDestination | JsonlDestination) -> Sink:
    """A local directory, or an ``s3://`` prefix through the destination's declared connection."""
    if is_s3(destination.path):
        return ObjectFileSink(destination.path, destination.connection, destination.type)
    return FileSink(destination.path, destination.type)


def _kafka_sink(destination: KafkaDestination, context: SinkContext) -> Sink:
    if context.kafka is None:
        raise ConfigurationError("a Kafka destination needs the Kafka settings of the load service")
    return KafkaSink(destination, context.kafka, schemas_topic=context.schemas_topic or Topics.SCHEMAS)


BUILTIN_DESTINATIONS: dict[str, DestinationKind] = {
    "postgres": _Builtin(
        PostgresDestination, "a PostgreSQL table (append, replace, merge)", lambda d, _: PostgresSink(d)
    ),
    "duckdb": _Builtin(DuckDBDestination, "a table in a DuckDB file", lambda d, _: DuckDBSink(d)),
    "parquet": _Builtin(
        ParquetDestination,
        "a directory (or s3:// prefix) of Parquet parts per run",
        lambda d, _: _file_sink(d),
    ),
    "jsonl": _Builtin(
        JsonlDestination, "a directory (or s3:// prefix) of JSONL parts per run", lambda d, _: _file_sink(d)
    ),
    "kafka": _Builtin(KafkaDestination, "a Kafka topic (JSON rows)", _kafka_sink),
}


def destination_kind(destination_type: str) -> DestinationKind:
    kind = BUILTIN_DESTINATIONS.get(destination_type) or installed().destinations.get(destination_type)
    if kind is None:  # pragma: no cover - the spec's validation admits only known types
        raise ConfigurationError(f"no destination type {destination_type!r} is built in or installed")
    return kind


def open_sink(
    destination: Destination, *, kafka: KafkaSettings | None = None, schemas_topic: str = Topics.SCHEMAS
) -> Sink:
    """A sink for ``destination``. Connections are opened lazily, on the first write; the caller caches
    sinks per destination and closes them. PostgreSQL takes the DSN of the declared connection the
    destination names (``shared.policy.connections``; an undeclared or malformed one is a terminal
    ``ConfigurationError`` here); Kafka connects with ``kafka`` (the load service's settings, security
    included) and publishes row schemas to ``schemas_topic``. A plugin destination's sink is whatever its
    ``open`` returns, checked to be a ``Sink``."""
    kind = destination_kind(destination.type)
    sink = kind.open(destination, SinkContext(kafka=kafka, schemas_topic=schemas_topic))
    if not isinstance(sink, Sink):
        raise ConfigurationError(f"destination type {destination.type!r}: open() did not return a Sink")
    return sink
