"""Fake Kafka clients behind the client Protocols (``shared.kafka.types``), for the transaction engine and
the loops built on it: a producer that records its calls and fails the ones it is told to, a consumer
that hands out given records and remembers its seeks."""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition


def kafka_failure(code: int = KafkaError._TIMED_OUT, **flags: bool) -> KafkaException:
    return KafkaException(KafkaError(code, "injected", **flags))


class FakeProducer:
    """Records every call; ``failures`` maps a method name to what its next calls raise (None: that call
    succeeds)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.produced: list[tuple[str, Any, bytes]] = []
        self.offsets_sent: list[list[tuple[str, int, int]]] = []  # per send_offsets: (topic, partition, next)
        self.failures: dict[str, list[BaseException | None]] = {}
        self.hang: threading.Event | None = None  # send_offsets blocks until set

    def _call(self, name: str) -> None:
        self.calls.append(name)
        pending = self.failures.get(name)
        if pending:
            failure = pending.pop(0)
            if failure is not None:
                raise failure

    def init_transactions(self, timeout: float = -1) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def produce(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> None:
        self._call("produce")
        self.produced.append((topic, key, value))

    def send_offsets_to_transaction(self, positions: Any, metadata: Any, timeout: float = -1) -> None:
        self._call("send_offsets")
        self.offsets_sent.append([(tp.topic, tp.partition, tp.offset) for tp in positions])
        if self.hang is not None:
            self.hang.wait()

    def commit_transaction(self, timeout: float = -1) -> None:
        self._call("commit")

    def abort_transaction(self, timeout: float = -1) -> None:
        self._call("abort")

    def flush(self, timeout: float = -1) -> int:
        return 0


class FakeRecord:
    """A consumed record (``shared.kafka.messages.KafkaMessage``); ``at_ms`` its create time (0: none)."""

    def __init__(
        self,
        offset: int,
        value: bytes,
        topic: str = "in",
        partition: int = 0,
        *,
        key: bytes | None = b"k",
        headers: list[tuple[str, bytes]] | None = None,
        at_ms: int = 0,
        leader_epoch: int | None = 3,
    ):
        self._offset, self._value, self._topic, self._partition = offset, value, topic, partition
        self._key, self._headers, self._at_ms, self._epoch = key, headers, at_ms, leader_epoch

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, self._at_ms) if self._at_ms else (0, -1)

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def leader_epoch(self) -> int | None:
        return self._epoch


class FakeConsumer:
    def __init__(self, committed: dict[tuple[str, int], int] | None = None) -> None:
        self.committed_offsets = committed or {}
        self.seeks: list[tuple[str, int, int]] = []
        self.messages: list[Any] = []
        self.assign_cb: Any = None
        self.paused: set[tuple[str, int]] = set()

    def consumer_group_metadata(self) -> object:
        return object()

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self.committed_offsets.get((tp.topic, tp.partition), -1001)
            )
            for tp in partitions
        ]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def subscribe(self, topics: list[str], on_assign: Any = None, **kw: Any) -> None:
        self.assign_cb = on_assign

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        if self.assign_cb is not None:
            self.assign_cb(self, [TopicPartition("t", 0), TopicPartition("t", 1)])
            self.assign_cb = None
        taken, self.messages = self.messages[:num_messages], self.messages[num_messages:]
        return taken

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = -1, cached: bool = False) -> Any:
        return (0, 100)

    def close(self) -> None:
        pass


def run_polls(loop: Any, consumer: FakeConsumer, polls: list[list[Any]]) -> None:
    """Run a ``ProcessingLoop`` on one consumer poll per entry of ``polls`` (the records fetched by then);
    it stops at the next poll."""
    stop = threading.Event()
    real_consume, pending = consumer.consume, list(polls)

    def consume(num_messages: int = 1, timeout: float = -1) -> list[Any]:
        if num_messages == 1:  # the first call of a poll (``consume_available``)
            if not pending:
                stop.set()
                return []
            consumer.messages = pending.pop(0)
        return real_consume(num_messages, timeout)

    consumer.consume = consume  # type: ignore[method-assign]
    loop.run(stop)


def fake_loop(monkeypatch: Any, consumer: FakeConsumer, handler: Any, **config: Any) -> Any:
    """A transform ``ProcessingLoop`` on ``consumer`` (topic ``in``, RunEvent records), with ``config``
    overriding ``LoopConfig``'s fields; its producers are whatever the test patched in."""
    import shared.processing.loop as loop_module
    from shared.avro.serde import AvroSerde
    from shared.contracts import RunEvent, Stage
    from shared.processing import LoopConfig, ProcessingLoop
    from shared.settings import KafkaSettings

    monkeypatch.setattr(loop_module, "make_consumer", lambda *a, **kw: consumer)
    loop_config = LoopConfig(
        "transform",
        Stage.TRANSFORM,
        "transform-0",
        "g",
        {"in": RunEvent},
        **{"kafka_timeout": 0.05, **config},
    )
    return ProcessingLoop(KafkaSettings(bootstrap_servers="unused:9092"), loop_config, handler, AvroSerde())
