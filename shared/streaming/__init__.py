"""Reading user topics exactly once: the continuous pipelines and the topic triggers.

Modules: ``decode`` (events as JSON objects or Avro records), ``windows`` (the offset book: what was
read and not committed, grouped into windows), ``reader`` (a consumer group whose outputs and offsets
commit in one ``shared.kafka.transaction``, and the ``WindowedTopicReader`` worker template),
``undecoded`` (the reader variant whose windows hold records as consumed, decoded when they close: the
continuous pipelines), ``supervisor`` (one worker per desired key).
"""

from shared.streaming.decode import StreamDecodeError, decode_event, decode_events, json_default
from shared.streaming.reader import (
    Encoded,
    ReaderConfig,
    RestartingWorker,
    TransactionalReader,
    WindowedTopicReader,
)
from shared.streaming.supervisor import WorkerSupervisor
from shared.streaming.undecoded import UndecodedWindowReader
from shared.streaming.windows import OffsetWindows, Window, WindowLimits

__all__ = [
    "Encoded",
    "OffsetWindows",
    "ReaderConfig",
    "RestartingWorker",
    "StreamDecodeError",
    "TransactionalReader",
    "UndecodedWindowReader",
    "Window",
    "WindowLimits",
    "WindowedTopicReader",
    "WorkerSupervisor",
    "decode_event",
    "decode_events",
    "json_default",
]
