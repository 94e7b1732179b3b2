"""Reading user topics exactly once: the continuous pipelines and the topic triggers.

Modules: ``decode`` (events as JSON objects or Avro records), ``windows`` (the offset book: what was
read and not committed, grouped into windows), ``reader`` (a consumer group whose outputs and offsets
commit in one ``shared.kafka.transaction``, and the ``WindowedTopicReader`` worker template),
``supervisor`` (one worker per desired key).
"""

from shared.streaming.decode import StreamDecodeError, decode_event, json_default
from shared.streaming.reader import (
    Encoded,
    ReaderConfig,
    RestartingWorker,
    TransactionalReader,
    WindowedTopicReader,
)
from shared.streaming.supervisor import WorkerSupervisor
from shared.streaming.windows import OffsetWindows, Window, WindowLimits

__all__ = [
    "Encoded",
    "OffsetWindows",
    "ReaderConfig",
    "RestartingWorker",
    "StreamDecodeError",
    "TransactionalReader",
    "Window",
    "WindowLimits",
    "WindowedTopicReader",
    "WorkerSupervisor",
    "decode_event",
    "json_default",
]
