"""The one way a consumed message becomes a ``DeadLetter``: its origin (topic, partition, offset, key and,
for single-object Avro, the writer schema's fingerprint), the stage, the error and the raw bytes, so it
can be inspected and re-driven (``aoetl dlq``). Every consume path (the task loop, the continuous
pipelines, the topic triggers) builds its dead letters here, so they all carry the same facts.
"""

from __future__ import annotations

from shared.avro.framing import HEADER_LEN, MAGIC
from shared.contracts import DeadLetter, ErrorInfo, Origin, Stage
from shared.kafka.messages import KafkaMessage, coordinates

MAX_ERROR_TEXT = 4000


def writer_fingerprint(raw: bytes) -> str | None:
    """The writer-schema fingerprint of a single-object encoded message, if its header is readable."""
    return raw[len(MAGIC) : HEADER_LEN].hex() if len(raw) >= HEADER_LEN and raw.startswith(MAGIC) else None


def dead_letter_for(
    message: KafkaMessage, stage: Stage, exc: BaseException, *, run_id: str | None = None, attempt: int = 0
) -> DeadLetter:
    topic, partition, offset = coordinates(message)
    raw = message.value() or b""
    return DeadLetter(
        origin=Origin(
            topic=topic,
            partition=partition,
            offset=offset,
            key=message.key(),
            schema_fingerprint=writer_fingerprint(raw),
        ),
        stage=stage,
        error=ErrorInfo.from_exception(exc, max_len=MAX_ERROR_TEXT),
        run_id=run_id,
        payload=raw,
        attempt=attempt,
    )


def dead_letter_key(message: KafkaMessage, run_id: str | None) -> str | bytes | None:
    """Dead letters of a run share its key (``aoetl dlq`` lists a run's letters from one partition);
    others keep the key of the message they hold."""
    return run_id if run_id is not None else message.key()
