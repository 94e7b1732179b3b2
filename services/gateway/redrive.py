"""Re-driving one dead letter from the gateway, the way ``aoetl dlq replay`` does it on Kafka: the letter's
original bytes, with its original key, onto the topic it failed on, carrying the ``aoetl-redrive`` header
(``shared.dead_letters``). Batch ids are deterministic and every sink applies a batch id once, so a replay
(even twice) applies a record at most once.

``replay`` is the one path for both doors that re-drive from the gateway: the console's replay button
(``services.gateway.ui.routes``) and ``POST /dead-letters/{id}/replay`` (``records_api``; the CLI's ``aoetl
dlq replay`` over REST). It finds the caller's tenant's letter (another tenant's is 404, its existence not
revealed), reads it back, and audits the replay as ``dlq.replay``: REJECTED before a refusal, ALLOWED
before the bytes are published (``services.gateway.audit``). A dry run answers what would be re-driven and
where, and writes nothing at all, not even an audit record: it changes nothing.

The gateway's view keeps no payloads (``services.gateway.records``), only where each letter was read on
the dead-letters topic; ``read_letter`` reads that one record back and checks it is the letter asked for.
A letter the view still lists but the topic no longer has (retention) is ``LetterGone`` (410).

What may be re-driven from here is narrower than on the Kafka door: a ``raw`` payload (quarantined rows
are no stage's message) whose origin is one of this deployment's stage inputs (requests, extract tasks,
extracted and transformed batches). A continuous pipeline's source topic is the user's, not ours to write
from an HTTP door; ``aoetl dlq replay`` on Kafka re-drives those.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass

from fastapi import HTTPException, Request

from services.gateway.access import principal_of
from services.gateway.audit import Auditor
from services.gateway.bus import Bus, RecordPosition
from services.gateway.configuration import GatewaySettings
from services.gateway.core import Gateway
from services.gateway.exceptions import GatewayTransientError, unavailable
from services.gateway.records import DeadLetterView, RecordBook
from shared.contracts import DeadLetter
from shared.dead_letters import REPLAYABLE_FORMAT, redrive_headers
from shared.kafka.topics import Topics

STAGE_INPUTS = (Topics.REQUESTS, Topics.TASKS, Topics.DATA_EXTRACTED, Topics.DATA_TRANSFORMED)
NOT_READY = "not connected to Kafka or not caught up yet"


class LetterGone(Exception):
    """The view lists the letter, but its record is no longer on the dead-letters topic (retention)."""


@dataclass(frozen=True)
class Redriven:
    """What was re-driven (or, in a dry run, would be) and where; ``position`` None in a dry run."""

    dead_letter_id: str
    run_id: str | None
    topic: str
    key_base64: str | None
    payload_bytes: int
    position: RecordPosition | None
    dry_run: bool = False


def replay_refusal(view: DeadLetterView, settings: GatewaySettings) -> str | None:
    """Why ``view`` cannot be re-driven from here, or None."""
    if view.payload_format != REPLAYABLE_FORMAT:
        return "quarantined rows are no stage's message: export them with `aoetl dlq show --export`"
    if view.origin.topic not in {settings.topic(t) for t in STAGE_INPUTS}:
        return "its origin is not a stage input of this deployment: use `aoetl dlq replay` on Kafka"
    return None


def own_letter(gateway: Gateway, request: Request, dead_letter_id: str) -> DeadLetterView | None:
    """The caller's tenant's letter of that id; None for another tenant's too."""
    tenant = principal_of(request).tenant
    return gateway.records.dead_letter(tenant, dead_letter_id, gateway.runs.tenant_of)


async def read_letter(
    bus: Bus, settings: GatewaySettings, records: RecordBook, view: DeadLetterView
) -> DeadLetter:
    """The letter ``view`` shows, read back from the dead-letters topic (the caller has checked it is the
    principal's tenant's). ``LetterGone`` when the topic has it no more; ``GatewayTransientError`` when
    Kafka did not answer. Nothing is written."""
    where = records.position_of(view.dead_letter_id)
    if where is None:
        raise LetterGone("the gateway does not know where this letter is on its topic any more")
    letter = await bus.read_at(RecordPosition(settings.topic(Topics.DEAD_LETTERS), *where), DeadLetter)
    if letter is None or letter.dead_letter_id != view.dead_letter_id:
        raise LetterGone("the letter is no longer on the dead-letters topic (retention)")
    return letter


async def replay(
    gateway: Gateway, auditor: Auditor, request: Request, dead_letter_id: str, *, dry_run: bool = False
) -> Redriven:
    """Re-drive the caller's tenant's letter ``dead_letter_id`` (see the module docstring); an
    ``HTTPException`` (404, 409 not replayable from here, 410 gone, 503) once its record is written."""

    async def refused(exc: HTTPException) -> HTTPException:
        return exc if dry_run else await auditor.refuse(request, exc)

    if dry_run and not gateway.bus.ready:
        raise HTTPException(503, detail=NOT_READY, headers={"Retry-After": "1"})
    if not dry_run:
        await auditor.ready(request)
    view = own_letter(gateway, request, dead_letter_id)
    if view is None:
        raise await refused(HTTPException(404, detail=f"no dead letter {dead_letter_id!r}"))
    refusal = replay_refusal(view, gateway.settings)
    if refusal is not None:
        raise await refused(HTTPException(409, detail=refusal))
    try:
        letter = await read_letter(gateway.bus, gateway.settings, gateway.records, view)
    except LetterGone as exc:
        raise await refused(HTTPException(410, detail=str(exc))) from None
    except GatewayTransientError as exc:
        raise (unavailable(exc) if dry_run else await auditor.fail(request, exc)) from exc
    key = base64.b64encode(letter.origin.key).decode() if letter.origin.key is not None else None
    planned = Redriven(
        letter.dead_letter_id, view.run_id, letter.origin.topic, key, len(letter.payload), None, dry_run
    )
    if dry_run:
        return planned
    await auditor.allow(request)
    try:
        headers = redrive_headers(letter)
        landed = await gateway.bus.publish_raw(
            letter.origin.topic, letter.origin.key, letter.payload, headers
        )
    except GatewayTransientError as exc:
        raise await auditor.fail(request, exc) from exc
    return dataclasses.replace(planned, position=landed)
