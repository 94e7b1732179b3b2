"""The one way a consumed message becomes a ``DeadLetter``: its origin (topic, partition, offset, key and,
for single-object Avro, the writer schema's fingerprint), the stage, the error and the raw bytes, so it
can be inspected and re-driven (``aoetl dlq``). Every consume path (the task loop, the continuous
pipelines, the topic triggers, the monitor's alert router for an alert whose delivery exhausted its
retries) builds its dead letters here, so they all carry the same facts.

**Whose dead letter (DeadLetter v2).** A dead letter carries its tenant when the stage that gave up
knew it: a pipeline request's (the orchestrator), a topic trigger's definition's. Extract tasks and data
batches carry no tenant, and giving them one would mean new versions of every message of the data plane,
so the dead letters of extract, transform and load (and of continuous runs' readers) carry ``None`` and
their tenant is **resolved through their run id when they are read** (``tenant_of_letter``): the run's
tenant is its request's, which every reader that shows dead letters already follows (the gateway folds
requests and RUN_ACCEPTED events, RunEvent v6, into its view of runs). A dead letter whose tenant is
neither carried nor resolvable (no run id, or a run the reader no longer remembers) belongs to no tenant a
reader can name: it is shown to none (fail closed), and the operator reads it on the Kafka door
(``aoetl dlq``). Letters written before v2 decode with ``None`` and are resolved the same way.

**Whose replay (DeadLetter v3).** A record most topics' consumers share is given up by one of them only
when that one alone failed it: the alert router's endpoint whose deliveries were exhausted, while the
other endpoints delivered the same alert. Such a letter names its ``recipient``, and a replay
(``redrive_headers``: ``aoetl dlq replay``, the console) carries it in the ``aoetl-redrive-recipient``
header beside the letter's id in ``aoetl-redrive``: the other consumers of the topic pass the record by
(``Redrive.meant_for``), so a replay is not a second delivery to every endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared.avro.framing import HEADER_LEN, MAGIC
from shared.contracts import DeadLetter, ErrorInfo, Origin, Stage
from shared.kafka.messages import KafkaMessage, coordinates, headers_of

MAX_ERROR_TEXT = 4000
# A re-driven message carries the id of the dead letter it came from (``aoetl dlq replay``, the console),
# and the letter's recipient when it has one (DeadLetter v3: the module docstring).
REDRIVE_HEADER = "aoetl-redrive"
REDRIVE_RECIPIENT_HEADER = "aoetl-redrive-recipient"
# Quarantined rows (``arrow_ipc``) are no message of any stage: only a ``raw`` payload can be re-driven.
REPLAYABLE_FORMAT = "raw"


def writer_fingerprint(raw: bytes) -> str | None:
    """The writer-schema fingerprint of a single-object encoded message, if its header is readable."""
    return raw[len(MAGIC) : HEADER_LEN].hex() if len(raw) >= HEADER_LEN and raw.startswith(MAGIC) else None


def dead_letter_for(
    message: KafkaMessage,
    stage: Stage,
    exc: BaseException,
    *,
    run_id: str | None = None,
    attempt: int = 0,
    tenant: str | None = None,
    dead_letter_id: str | None = None,
    recipient: str | None = None,
) -> DeadLetter:
    """``tenant``: the one the stage knows (a decoded request's), else ``None`` (see the module docstring).
    ``dead_letter_id``: a deterministic id, for a writer outside a Kafka transaction whose letter may be
    written twice (the alert router's); a random one by default. ``recipient``: the one consumer of the
    record that gave up, when the topic's other consumers did not (the module docstring)."""
    topic, partition, offset = coordinates(message)
    raw = message.value() or b""
    return DeadLetter(
        **({"dead_letter_id": dead_letter_id} if dead_letter_id is not None else {}),
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
        tenant=tenant,
        payload=raw,
        attempt=attempt,
        recipient=recipient,
    )


def redrive_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The headers of a letter's replay: its id, and its recipient when it has one."""
    headers = [(REDRIVE_HEADER, letter.dead_letter_id.encode())]
    if letter.recipient is not None:
        headers.append((REDRIVE_RECIPIENT_HEADER, letter.recipient.encode()))
    return headers


@dataclass(frozen=True)
class Redrive:
    """What a consumed record says of its being a replay: the letter it re-drives and the letter's
    recipient, None for a record that is no replay (or a replay of a letter for every consumer)."""

    letter_id: str | None = None
    recipient: str | None = None

    @classmethod
    def of(cls, message: KafkaMessage) -> Redrive:
        found: dict[str, str] = {}
        for name, value in headers_of(message):
            if name in (REDRIVE_HEADER, REDRIVE_RECIPIENT_HEADER) and value is not None:
                raw = value if isinstance(value, bytes) else str(value).encode()
                found.setdefault(name, raw.decode("utf-8", "replace"))
        return cls(found.get(REDRIVE_HEADER), found.get(REDRIVE_RECIPIENT_HEADER))

    def meant_for(self, consumer: str) -> bool:
        """Whether ``consumer`` acts on the record: every consumer does unless it names another one."""
        return self.recipient is None or self.recipient == consumer


def dead_letter_key(message: KafkaMessage, run_id: str | None) -> str | bytes | None:
    """Dead letters of a run share its key (``aoetl dlq`` lists a run's letters from one partition);
    others keep the key of the message they hold."""
    return run_id if run_id is not None else message.key()


def tenant_of_letter(letter: DeadLetter, run_tenant: Callable[[str], str | None]) -> str | None:
    """The tenant a dead letter belongs to: the one it carries, else its run's (``run_tenant(run_id)``,
    ``None`` when the reader does not know the run); ``None``: no tenant may see it."""
    if letter.tenant is not None:
        return letter.tenant
    return run_tenant(letter.run_id) if letter.run_id is not None else None
