"""``open_sink``: the one place that maps a spec destination to its sink class."""

from __future__ import annotations

from services.load.sinks.base import Sink
from services.load.sinks.duckdb_file import DuckDBSink
from services.load.sinks.files import FileSink
from services.load.sinks.kafka_topic import KafkaSink
from services.load.sinks.postgres import PostgresSink
from shared.spec.models import (
    Destination,
    DuckDBDestination,
    JsonlDestination,
    KafkaDestination,
    ParquetDestination,
    PostgresDestination,
)


def open_sink(destination: Destination, *, kafka_bootstrap_servers: str | None = None) -> Sink:
    """A sink for ``destination``. Connections are opened lazily, on the first write; the caller caches
    sinks per destination and closes them. PostgreSQL reads its DSN from the env var named ``dsn_env``;
    Kafka uses ``kafka_bootstrap_servers`` or else ``KAFKA_BOOTSTRAP_SERVERS``."""
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
            return KafkaSink(destination, bootstrap_servers=kafka_bootstrap_servers)
    raise TypeError(f"unknown destination type {type(destination).__name__}")  # pragma: no cover
