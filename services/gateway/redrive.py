"""Re-driving one dead letter from the gateway (the console's replay button), the way ``aoetl dlq replay``
does it: the letter's original bytes, with its original key, onto the topic it failed on, carrying the
``aoetl-redrive`` header (``shared.dead_letters``). Batch ids are deterministic and every sink applies a
batch id once, so a replay (even twice) applies a record at most once.

The gateway's view keeps no payloads (``services.gateway.records``), only where each letter was read on
the dead-letters topic; the replay reads that one record back and checks it is the letter asked for.

What may be re-driven from here is narrower than on the Kafka door: a ``raw`` payload (quarantined rows
are no stage's message) whose origin is one of this deployment's stage inputs (requests, extract tasks,
extracted and transformed batches). A continuous pipeline's source topic is the user's, not ours to write
from an HTTP door; ``aoetl dlq replay`` re-drives those.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.gateway.bus import Bus, RecordPosition
from services.gateway.configuration import GatewaySettings
from services.gateway.records import DeadLetterView, RecordBook
from shared.contracts import DeadLetter
from shared.dead_letters import REPLAYABLE_FORMAT, redrive_headers
from shared.kafka.topics import Topics

STAGE_INPUTS = (Topics.REQUESTS, Topics.TASKS, Topics.DATA_EXTRACTED, Topics.DATA_TRANSFORMED)


class NotReplayable(Exception):
    """The letter cannot be re-driven from the gateway; the text says why (it names no payload)."""


@dataclass(frozen=True)
class Redriven:
    dead_letter_id: str
    topic: str
    position: RecordPosition


def replay_refusal(view: DeadLetterView, settings: GatewaySettings) -> str | None:
    """Why ``view`` cannot be re-driven from here, or None."""
    if view.payload_format != REPLAYABLE_FORMAT:
        return "quarantined rows are no stage's message: export them with `aoetl dlq show --export`"
    if view.origin.topic not in {settings.topic(t) for t in STAGE_INPUTS}:
        return "its origin is not a stage input of this deployment: use `aoetl dlq replay`"
    return None


async def fetch_letter(
    bus: Bus, settings: GatewaySettings, records: RecordBook, view: DeadLetterView
) -> DeadLetter:
    """The letter ``view`` shows, read back from the dead-letters topic (the caller has checked it is the
    principal's tenant's). ``NotReplayable`` when it cannot be re-driven from here; ``GatewayTransientError``
    when Kafka did not answer. Nothing is written."""
    refusal = replay_refusal(view, settings)
    if refusal is not None:
        raise NotReplayable(refusal)
    where = records.position_of(view.dead_letter_id)
    if where is None:
        raise NotReplayable("the gateway does not know where this letter is on its topic any more")
    letter = await bus.read_at(RecordPosition(settings.topic(Topics.DEAD_LETTERS), *where), DeadLetter)
    if letter is None or letter.dead_letter_id != view.dead_letter_id:
        raise NotReplayable("the letter is no longer on the dead-letters topic (retention)")
    return letter


async def redrive_letter(bus: Bus, letter: DeadLetter) -> Redriven:
    """Publish the letter's original bytes and key onto its origin topic, with the redrive header."""
    landed = await bus.publish_raw(
        letter.origin.topic,
        letter.origin.key,
        letter.payload,
        redrive_headers(letter),
    )
    return Redriven(letter.dead_letter_id, letter.origin.topic, landed)
