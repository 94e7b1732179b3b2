"""Destination sinks that apply every batch exactly once (Kafka: at least once, see ``kafka_topic``)."""

from services.load.sinks.base import (
    DestinationUnavailableError,
    IncompatibleSchemaError,
    Sink,
    WriteResult,
)
from services.load.sinks.factory import open_sink

__all__ = ["DestinationUnavailableError", "IncompatibleSchemaError", "Sink", "WriteResult", "open_sink"]
