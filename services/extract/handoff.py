"""How extract hands a batch it has read to the next stage: one strategy per mode, chosen once at start-up
(``AOETL_CHAIN_TRANSFORM``), the same for one-shot splits (``services.extract.worker``) and continuous runs
(``services.extract.streams``).

* ``ToTransform`` (the default): the rows, Arrow-encoded, on ``Topics.DATA_EXTRACTED`` for the transform
  service's replicas, which scale apart from extract's.
* ``ChainedTransform``: the transform stage runs here, on the rows as read (``shared.transform.batches``,
  the transform service's own code), and the transformed batch goes to ``Topics.DATA_TRANSFORMED`` with its
  events and quarantined rows. Like operator chaining in Flink: what the hop cost (an Arrow encode and
  decode, a produce, a read_committed fetch and a Kafka transaction per batch) goes, and the transform's
  CPU moves into extract's replicas. Every output is in the read's own transaction, as the unchained
  stages' are in theirs, so exactly-once holds the same way, and no reader of the events can tell the
  modes apart. A transform error is then the task's failure (TASK_FAILED, the task dead-lettered for
  redrive) instead of the batch's (BATCH_FAILED): the run fails with the same error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from shared.batch import encode_table
from shared.contracts import DataBatch, Origin, Stage
from shared.kafka.topics import Topics
from shared.kafka.types import Headers
from shared.processing import Output
from shared.spec.models import PipelineSpec
from shared.transform.batches import BatchTransformer


@dataclass(frozen=True, slots=True)
class ReadBatch:
    """A batch of rows as extract has read it, before it is handed on."""

    run_id: str
    task_id: str
    batch_id: str  # deterministic: the sinks' exactly-once key
    seq: int
    spec: PipelineSpec
    rows: pa.Table
    key: str  # its Kafka key downstream: the batch id, or a continuous run's source partition
    origin: Origin  # where it was read, as a dead letter names it
    headers: Headers | None  # the trace context its records carry

    def contract(self, payload: bytes) -> DataBatch:
        return DataBatch(
            run_id=self.run_id,
            task_id=self.task_id,
            batch_id=self.batch_id,
            seq=self.seq,
            stage=Stage.EXTRACT,
            row_count=self.rows.num_rows,
            payload=payload,
            spec=self.spec,
        )


class Handoff(Protocol):
    def hand_off(self, batch: ReadBatch) -> Iterator[Output]:
        """The records ``batch`` becomes, for the read's transaction."""
        ...

    def close(self) -> None:
        """Free what the strategy holds (it may be used again after: it starts afresh)."""
        ...


class ToTransform:
    def __init__(self, topic: Callable[[str], str]):
        self._extracted = topic(Topics.DATA_EXTRACTED)

    def hand_off(self, batch: ReadBatch) -> Iterator[Output]:
        yield Output(self._extracted, batch.key, batch.contract(encode_table(batch.rows)), batch.headers)

    def close(self) -> None:
        pass


class ChainedTransform:
    """The transform stage in this process: one per processing thread (its engines are not shared)."""

    def __init__(self, topic: Callable[[str], str], instance: str, *, mask_salt: bytes):
        self._topic, self._instance, self._salt = topic, instance, mask_salt
        self._stage: BatchTransformer | None = None

    def hand_off(self, batch: ReadBatch) -> Iterator[Output]:
        if self._stage is None:
            self._stage = BatchTransformer(self._topic, self._instance, mask_salt=self._salt)
        # the payload is not encoded: the stage reads the rows themselves
        for output in self._stage.transform(batch.contract(b""), batch.rows, batch.key, batch.origin):
            yield output._replace(headers=batch.headers)

    def close(self) -> None:
        if self._stage is not None:
            self._stage.close()
            self._stage = None


def handoff_for(chain: bool, topic: Callable[[str], str], instance: str, *, mask_salt: bytes) -> Handoff:
    if chain:
        return ChainedTransform(topic, instance, mask_salt=mask_salt)
    return ToTransform(topic)
