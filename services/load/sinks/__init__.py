"""Destination sinks that apply every batch exactly once (Kafka: at least once, see ``kafka_topic``).
Their errors are the load service's (``services.load.exceptions``)."""

from services.load.sinks.base import Sink, WriteResult
from services.load.sinks.factory import open_sink

__all__ = ["Sink", "WriteResult", "open_sink"]
