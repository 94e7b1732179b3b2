"""``open_sink``: the one place that maps a spec destination to its sink class."""

from __future__ import annotations

from services.load.sinks.base import Sink
from services.load.sinks.duckdb_file import DuckDBSink
from services.load.sinks.files import FileSink
from services.load.sinks.kafka_topic import KafkaSink
from services.load.sinks.postgres import PostgresSink
from shared.errors import ConfigurationError
from shared.kafka.topics import Topics
from shared.settings import KafkaSettings
from shared.spec.models import (
    Destination,
    DuckDBDestination,
    JsonlDestination,
    KafkaDestination,
    ParquetDestination,
    PostgresDestination,
)


def open_sink(
    destination: Destination, *, kafka: KafkaSettings | None = None, schemas_topic: str = Topics.SCHEMAS
) -> Sink:
    """A sink for ``destination``. Connections are opened lazily, on the first write; the caller caches
    sinks per destination and closes them. PostgreSQL takes the DSN of the declared connection the
    destination names (``shared.policy.connections``; an undeclared or malformed one is a terminal
    ``ConfigurationError`` here); Kafka connects with ``kafka`` (the load service's settings, security
    included) and publishes row schemas to ``schemas_topic``."""
    match destination:
        case PostgresDestination():
            return PostgresSink(destination)
        case DuckDBDestination():
            return DuckDBSink(destination)
        case ParquetDestination(path=path):
            return FileSink(path, "parquet")
        case JsonlDestination(path=path):
            return FileSink(path, "jsonl")
        case KafkaDestination():
            if kafka is None:
                raise ConfigurationError("a Kafka destination needs the Kafka settings of the load service")
            return KafkaSink(destination, kafka, schemas_topic=schemas_topic)
    raise TypeError(f"unknown destination type {type(destination).__name__}")  # pragma: no cover
