"""How a CLI command reaches a deployment: straight on Kafka (the Kafka door), or through the gateway's REST
API (for a deployment whose broker a laptop cannot reach). One ``Transport`` protocol, two strategies;
a command asks ``open_transport`` for the one in use and never branches on which it got.

Which one: ``--gateway URL`` (or ``AOETL_GATEWAY_URL``) on the command, else the context's ``via =
"gateway"`` (``aoetl.contexts``: its ``gateway_url``), else Kafka. Through the gateway every call carries the
configured token and is decided by the gateway's own authentication, roles and audit (``services/gateway``);
on Kafka the door's audit record (``aoetl.commands.door``) comes first, as before.

What the strategies answer is the same: a run id for a submission, ``None`` for an unknown run or
definition, the system's own contracts (``PipelineDefinition``, ``RunSummary``, ``Alert``, ``PipelineResult``;
a dead letter as the document ``aoetl dlq list`` prints, without its payload, its key as base64) for
listings, records oldest first and runs newest first, as the Kafka side reads them; one dead letter in full
as the ``DeadLetter`` contract (``GET /dead-letters/{id}`` carries its payload and key as base64); a
replay's outcome as one document per letter (``replayed``); a run's state is the
document the command prints (``RunState``: the Kafka side's result or folded progress, the gateway's
``GET /runs/{id}`` view), with its status name for the exit code. The strategies live in
``aoetl.rest_transport`` and ``aoetl.kafka_transport``. Cold start: httpx and the Kafka client are
imported by the strategy that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aoetl.commands.config import CliConfig, load_config
from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from shared.contracts import Alert, DeadLetter, PipelineDefinition, PipelineResult, RunSummary
    from shared.spec.models import PipelineSpec

FINAL = ("COMPLETED", "COMPLETED_WITH_WARNINGS", "FAILED", "REJECTED", "TIMED_OUT", "CANCELLED")


@dataclass(frozen=True)
class RunState:
    """A run as a command shows it: ``status`` (SUBMITTED, RUNNING or a final RunStatus name) and the
    document ``-o json|yaml`` prints."""

    run_id: str
    status: str
    document: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.status in FINAL


class Transport(Protocol):
    """What a command asks of a deployment."""

    where: str  # "Kafka" or "the gateway at URL": named in what a command prints

    def submit(self, spec: PipelineSpec) -> str: ...

    def stop(self, run_id: str) -> None: ...

    @property
    def asks_only(self) -> bool:
        """True: this caller may ask for a stop but not read results (a tenant's Kafka user)."""
        ...

    def result(self, run_id: str) -> PipelineResult | None:
        """The run's result, once published."""
        ...

    def stop_and_wait(self, run_id: str, timeout: float) -> PipelineResult | None:
        """Ask the run to stop and wait up to ``timeout`` seconds for its result; None: none came."""
        ...

    def run_state(self, run_id: str) -> RunState | None: ...

    def definitions(self) -> list[PipelineDefinition]: ...

    def runs(self, pipeline: str | None, status: str | None, limit: int | None) -> list[RunSummary]:
        """Run summaries, filtered (``status``: RUNNING or a final one), newest first, at most ``limit``
        (through the gateway: its recent runs of the caller's tenant, in the run history's shape)."""
        ...

    def alerts(self, run_id: str | None = None) -> list[Alert]:
        """Alerts, oldest first (through the gateway: the caller's tenant's it keeps)."""
        ...

    def dead_letters(
        self, run_id: str | None = None, stage: str | None = None, error_class: str | None = None
    ) -> list[dict[str, Any]]:
        """Dead letters, oldest first, as documents without their payload's bytes (``payload_bytes``)."""
        ...

    def dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        """One dead letter with its payload; None: no such letter of the caller's (Kafka: on the topic)."""
        ...

    def replay(self, letters: list[dict[str, Any]], dry_run: bool) -> list[dict[str, Any]]:
        """Re-drive listed letters (documents of ``dead_letters``) onto their origin topics, audited as
        ``dlq.replay``; a dry run publishes nothing and says where each would go. One ``replayed`` document
        a letter."""
        ...

    def results(self, follow: bool, from_beginning: bool) -> Iterator[PipelineResult]:
        """Pipeline results of the topic, oldest first; followed until interrupted with ``follow`` (from
        the topic's end, unless ``from_beginning``). Through the gateway: the caller's tenant's."""
        ...

    def alert_stream(self, follow: bool, from_beginning: bool) -> Iterator[Alert]:
        """Alerts, oldest first, as ``results``; through the gateway, the ones it keeps of the caller's
        tenant (followed by asking again)."""
        ...

    def close(self) -> None: ...


def replayed(
    letter: dict[str, Any], dry_run: bool, partition: int | None, offset: int | None
) -> dict[str, Any]:
    """What a replay prints of a letter (``letter``: its listed document): where it went, or would go."""
    to = {"topic": letter["origin"]["topic"], "partition": partition, "offset": offset}
    return {**letter, "dry_run": dry_run, "replayed_to": to}


def gateway_in_use(gateway: str | None, config: CliConfig | None = None) -> str | None:
    """The gateway URL a command goes through: ``--gateway``/``AOETL_GATEWAY_URL``, else the context's when
    it says ``via = "gateway"``; None: Kafka."""
    if gateway:
        return gateway
    from aoetl.contexts import active_context, asked_by_name

    try:
        context = active_context()
    except ConfigurationError:
        if asked_by_name():
            raise
        return None  # as ``aoetl.contexts.enter``: an unreadable file stops only a command that needs it
    if context is not None and context.via == "gateway":
        url = (config or load_config()).gateway_url
        if not url:
            raise ConfigurationError(f"context {context.name!r} says via = 'gateway' but has no gateway_url")
        return url
    return None


def open_transport(gateway: str | None = None) -> Transport:
    """The strategy in use (see the module docstring)."""
    url = gateway_in_use(gateway)
    if url:
        from aoetl.rest_transport import RestTransport

        return RestTransport(url)
    from aoetl.kafka_transport import KafkaTransport

    return KafkaTransport()
