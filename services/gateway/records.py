"""The gateway's view of alerts and dead letters, per tenant, for ``GET /alerts`` and ``GET /dead-letters``:
rebuilt from the alerts and dead-letters topics at start-up (``history_s`` back) and kept current by
following them, like every other view of the gateway (``services.gateway.bus``).

**Whose record.** An alert belongs to the tenant of its run when the gateway knows the run (its request
is the authority on the run's tenant), else to the tenant the alert names (Alert v2; ``default`` for the
whole system's alerts and for alerts written before v2). A dead letter belongs to the tenant it carries,
else to its run's (``shared.dead_letters.tenant_of_letter``): extract, transform and load do not know
tenants, so their letters are resolved through the run id. A letter whose run is not known yet waits,
unresolved, and is resolved again whenever a tenant reads its letters (its request may be read later than
the letter, topics being followed side by side); one whose tenant never resolves is shown to nobody.

**Bounded.** At most ``capacity`` records per tenant (the most recent; ``AOETL_RECORDS_PER_TENANT``), and
as many unresolved letters, so one tenant's flood of dead letters cannot push another's out. A dead letter
is kept without its payload (up to 16 MiB of rows each): the view has its size; the bytes stay on the
topic, where ``aoetl dlq`` inspects and re-drives them, and so does the console: the book remembers where
on the dead-letters topic each letter it shows was read (``position_of``), so a replay reads that one
record back (``services.gateway.redrive``).
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, Field

from shared.contracts import Alert, ConsumerLag, DeadLetter, ErrorInfo, Stage
from shared.dead_letters import tenant_of_letter
from shared.redaction import redact

T = TypeVar("T")
RunTenant = Callable[[str], str | None]  # run id -> its tenant, None when unknown


class Shelves(Generic[T]):
    """The most recent ``capacity`` records of each tenant, by id (a record read twice is kept once)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._by_tenant: dict[str, OrderedDict[str, T]] = {}

    def add(self, tenant: str, record_id: str, record: T) -> None:
        shelf = self._by_tenant.setdefault(tenant, OrderedDict())
        if record_id in shelf:
            return
        shelf[record_id] = record
        while len(shelf) > self.capacity:
            shelf.popitem(last=False)

    def of(self, tenant: str) -> list[T]:
        return list(self._by_tenant.get(tenant, {}).values())

    def __len__(self) -> int:
        return sum(len(shelf) for shelf in self._by_tenant.values())


class OriginView(BaseModel):
    topic: str
    partition: int
    offset: int
    key_base64: str | None = Field(None, description="the message key, base64")
    schema_fingerprint: str | None = None


class DeadLetterView(BaseModel):
    """A dead letter as ``GET /dead-letters`` answers it: everything but the payload's bytes."""

    dead_letter_id: str
    tenant: str
    origin: OriginView
    stage: Stage
    error: ErrorInfo
    at: datetime
    run_id: str | None
    rule: str | None
    payload_format: str
    payload_bytes: int = Field(description="size of the payload (on the topic: aoetl dlq shows it)")
    attempt: int

    @classmethod
    def of(cls, letter: DeadLetter, tenant: str) -> DeadLetterView:
        origin = letter.origin
        key = base64.b64encode(origin.key).decode() if origin.key is not None else None
        return cls(
            dead_letter_id=letter.dead_letter_id,
            tenant=tenant,
            origin=OriginView(
                topic=origin.topic,
                partition=origin.partition,
                offset=origin.offset,
                key_base64=key,
                schema_fingerprint=origin.schema_fingerprint,
            ),
            stage=letter.stage,
            error=letter.error,
            at=letter.at,
            run_id=letter.run_id,
            rule=letter.rule,
            payload_format=letter.payload_format,
            payload_bytes=len(letter.payload),
            attempt=letter.attempt,
        )


class DeadLetterDetail(DeadLetterView):
    """One dead letter as ``GET /dead-letters/{id}`` answers it: the view and its payload, read back from
    the topic. Nothing of it is a credential: the error's text was redacted when the letter was made and is
    again here (``shared.redaction``), and the payload is the tenant's own message or rows."""

    payload_base64: str = Field(description="the original message bytes, or an Arrow IPC batch of rows")
    recipient: str | None = Field(None, description="the one consumer that gave up; None: every consumer")

    @classmethod
    def of_letter(cls, letter: DeadLetter, tenant: str) -> DeadLetterDetail:
        view = DeadLetterView.of(letter, tenant)
        error = view.error.model_copy(update={"message": redact(view.error.message)})
        return cls(
            **{**view.model_dump(), "error": error},
            payload_base64=base64.b64encode(letter.payload).decode(),
            recipient=letter.recipient,
        )


class RecordBook:
    """Alerts and dead letters per tenant (see the module docstring)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._alerts: Shelves[Alert] = Shelves(capacity)
        self._letters: Shelves[DeadLetterView] = Shelves(capacity)
        self._unresolved: OrderedDict[str, DeadLetterView] = OrderedDict()  # run not known yet
        # dead letter id -> (partition, offset) on the dead-letters topic; bounded like the letters
        self._positions: OrderedDict[str, tuple[int, int]] = OrderedDict()
        # consumer group -> its latest backlog as the monitor measured it (the lag topic: a few groups,
        # the system's, shown to every tenant: they say how busy each stage is, nothing of anyone's data)
        self._lag: dict[str, ConsumerLag] = {}

    def on_lag(self, lag: ConsumerLag) -> None:
        self._lag[lag.group] = lag

    def consumer_lag(self, group: str) -> ConsumerLag | None:
        return self._lag.get(group)

    def position_of(self, dead_letter_id: str) -> tuple[int, int] | None:
        return self._positions.get(dead_letter_id)

    def on_alert(self, alert: Alert, run_tenant: RunTenant) -> None:
        known = run_tenant(alert.run_id) if alert.run_id is not None else None
        self._alerts.add(known or alert.tenant, alert.alert_id, alert)

    def on_dead_letter(
        self, letter: DeadLetter, run_tenant: RunTenant, position: tuple[int, int] | None = None
    ) -> None:
        """``position``: (partition, offset) where the letter was read on the dead-letters topic."""
        if position is not None:
            self._positions[letter.dead_letter_id] = position
            self._positions.move_to_end(letter.dead_letter_id)
            while len(self._positions) > 4 * self.capacity:  # a few tenants' worth; the oldest first out
                self._positions.popitem(last=False)
        tenant = tenant_of_letter(letter, run_tenant)
        if tenant is not None:
            self._letters.add(tenant, letter.dead_letter_id, DeadLetterView.of(letter, tenant))
        elif letter.run_id is not None:  # without a run id, no later read can resolve it: nobody's
            self._unresolved[letter.dead_letter_id] = DeadLetterView.of(letter, "")
            self._unresolved.move_to_end(letter.dead_letter_id)
            while len(self._unresolved) > self.capacity:
                self._unresolved.popitem(last=False)

    def alerts(self, tenant: str) -> list[Alert]:
        """The tenant's alerts, newest first."""
        return sorted(self._alerts.of(tenant), key=lambda a: (a.at, a.alert_id), reverse=True)

    def dead_letters(self, tenant: str, run_tenant: RunTenant) -> list[DeadLetterView]:
        """The tenant's dead letters, newest first (waiting ones whose run is now known resolved first)."""
        self._resolve(run_tenant)
        return sorted(self._letters.of(tenant), key=lambda d: (d.at, d.dead_letter_id), reverse=True)

    def dead_letter(self, tenant: str, dead_letter_id: str, run_tenant: RunTenant) -> DeadLetterView | None:
        """The tenant's letter of that id, None when the tenant has none such (another's is None too)."""
        return next(
            (d for d in self.dead_letters(tenant, run_tenant) if d.dead_letter_id == dead_letter_id), None
        )

    def _resolve(self, run_tenant: RunTenant) -> None:
        for letter_id, view in list(self._unresolved.items()):
            tenant = run_tenant(view.run_id) if view.run_id is not None else None
            if tenant is not None:
                del self._unresolved[letter_id]
                self._letters.add(tenant, letter_id, view.model_copy(update={"tenant": tenant}))

    @property
    def unresolved(self) -> int:
        return len(self._unresolved)
