"""What the task loop produces for one consumed message: decode it, run the service's handler, encode
what it returns, and turn a failure into a retry or a dead letter.

The rule is ``shared.errors.is_transient``: a transient failure raises ``RetryLater`` (the loop pauses and
rewinds that partition) until the retry policy is exhausted; anything else, and undecodable bytes, become
a ``DeadLetter`` (``shared.dead_letters``) plus whatever the service's failure handler adds (an event
telling the orchestrator), produced in the message's own transaction instead of its outputs.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable

from shared import metrics
from shared.contracts import Contract
from shared.dead_letters import dead_letter_for, dead_letter_key
from shared.errors import is_transient
from shared.kafka.messages import KafkaMessage, coordinates, headers_of, timestamp_ms
from shared.kafka.transaction import TP
from shared.kafka.types import Headers, Serde
from shared.logging import log_context
from shared.processing.messages import (
    FailureHandler,
    Handler,
    LoopConfig,
    MessageContext,
    Output,
    encode_checked,
)
from shared.processing.retries import PartitionRetries
from shared.tracing.spans import MessageSpan, current_headers

_log = logging.getLogger(__name__)

# topic, key, value, headers (the trace context: shared.tracing)
Encoded = tuple[str, str | bytes | None, bytes, Headers]


class RetryLater(Exception):
    """A transient failure at (tp, offset); that partition is retried after a backoff."""

    def __init__(self, tp: TP, offset: int, attempts: int, cause: BaseException):
        super().__init__(f"{tp[0]}[{tp[1]}]@{offset}: {cause!r}")
        self.tp, self.offset, self.attempts, self.cause = tp, offset, attempts, cause


class MessageHandling:
    def __init__(
        self,
        config: LoopConfig,
        handler: Handler,
        serde: Serde,
        retries: PartitionRetries,
        *,
        on_failure: FailureHandler | None = None,
    ):
        self.config, self.handler, self.serde, self.retries = config, handler, serde, retries
        self.on_failure = on_failure
        # Messages that failed after their first output was produced (the batch was taken back): when
        # they come again they are dead-lettered at once rather than half-produced again.
        self.fail_fast: dict[tuple[str, int, int], BaseException] = {}

    def outputs_for(
        self, record: KafkaMessage, *, lazy: bool, span: MessageSpan | None = None
    ) -> tuple[Iterable[Encoded], int]:
        """Decode, handle, encode. Returns the records to produce (``lazy``: as the handler yields them,
        when the commit mode can take them back) and the attempt number; raises ``RetryLater`` to retry.
        An error before the first output is handled here; one after it surfaces while the caller
        iterates (the loop then takes the whole batch back). ``span``: the message's (current on this
        thread), told what the message is, what its outputs report and how it failed."""
        topic, partition, offset = coordinates(record)
        raw = record.value()
        if raw is None:
            _log.debug("skipping a tombstone")
            return [], 0
        attempt = self.retries.attempt((topic, partition), offset)
        value: Contract | None = None
        context = MessageContext(
            topic, partition, offset, record.key(), timestamp_ms(record), headers_of(record), attempt
        )
        try:
            failed_before = self.fail_fast.pop((topic, partition, offset), None)
            value = self.serde.decode(raw, self.config.contract_of(topic))
            if span is not None:
                span.describe(value, self.config.stage.value)
            if failed_before is not None:
                raise failed_before
            with log_context(run_id=getattr(value, "run_id", None)):
                outputs = iter(self.handler(value, context))
                first = next(outputs, None)
                if first is None:
                    return [], attempt
                encoded = (self._encoded(o, span) for o in itertools.chain([first], outputs))
                return (encoded if lazy else list(encoded)), attempt
        except Exception as exc:
            if span is not None:
                span.failed(exc)
            transient = is_transient(exc)
            metrics.PROCESSING_ERRORS.labels(type(exc).__name__, str(transient).lower()).inc()
            if transient and not self.config.retry.exhausted(attempt + 1):
                raise RetryLater((topic, partition), offset, attempt + 1, exc) from exc
            letters = self._dead_letter(record, exc, value, attempt + 1 if transient else attempt)
            return letters + self._failure_outputs(value, exc, context, raw), attempt

    def _failure_outputs(
        self, value: Contract | None, exc: BaseException, context: MessageContext, raw: bytes
    ) -> list[Encoded]:
        if self.on_failure is None or context.topic == self.config.dead_letter_topic:
            return []
        try:
            return [self._encoded(o) for o in self.on_failure(value, exc, context, raw)]
        except Exception:  # the dead letter alone still keeps the message; never lose the batch over it
            _log.exception("the failure handler failed")
            return []

    def _dead_letter(
        self, record: KafkaMessage, exc: Exception, value: Contract | None, attempt: int
    ) -> list[Encoded]:
        run_id = getattr(value, "run_id", None)
        with log_context(run_id=run_id):
            if record.topic() == self.config.dead_letter_topic:
                # Dead-lettering a dead letter would loop forever; the original is already kept there.
                _log.error("dropping an unprocessable dead letter: %r", exc)
                return []
            _log.warning("dead-lettering: %s: %s", type(exc).__name__, exc)
        # a request knows its tenant; tasks and batches do not (resolved through run_id when read)
        tenant = getattr(value, "tenant", None)
        letter = dead_letter_for(
            record, self.config.stage, exc, run_id=run_id, attempt=attempt, tenant=tenant
        )
        key = dead_letter_key(record, run_id)
        return [(self.config.dead_letter_topic, key, self.serde.encode(letter), current_headers())]

    def encode(self, value: Contract) -> bytes:
        return encode_checked(self.serde, value)

    def _encoded(self, output: Output, span: MessageSpan | None = None) -> Encoded:
        data = self.encode(output.value)
        if span is not None:
            span.produced(output.value)
        # the handling span's context (current here) unless the handler gave the output one of its own
        return (
            output.topic,
            output.key,
            data,
            output.headers if output.headers is not None else current_headers(),
        )
