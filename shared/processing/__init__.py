"""The task loop of the Kafka-consuming services (``ProcessingLoop``) and what its handlers use.

Modules: ``loop`` (consume, produce, commit, rewind), ``handling`` (one message: decode, handle, encode,
retry or dead-letter), ``commit`` (the two commit modes), ``retries`` (per-partition backoff),
``messages`` (``Output``, ``MessageContext``, ``LoopConfig``). The transaction
protocol itself is ``shared.kafka.transaction``, shared with the topic readers of ``shared.streaming``.
"""

from shared.kafka.transaction import KafkaCommitError, ProducerFencedError, TransactionCallHungError
from shared.processing.loop import ProcessingLoop
from shared.processing.messages import (
    FailureHandler,
    Handler,
    LoopConfig,
    MessageContext,
    Output,
    OutputTooLargeError,
    TickHandler,
)
from shared.processing.retries import RetryPolicy

__all__ = [
    "FailureHandler",
    "Handler",
    "KafkaCommitError",
    "LoopConfig",
    "MessageContext",
    "Output",
    "OutputTooLargeError",
    "ProcessingLoop",
    "ProducerFencedError",
    "RetryPolicy",
    "TickHandler",
    "TransactionCallHungError",
]
