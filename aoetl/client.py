"""A small client of a running aoetl system, for the CLI, the demo and the end-to-end tests: submit
requests and read results, events and alerts, from Kafka only (there is no side database to ask).

Which requests topic it writes follows from who it is to the broker: a tenant's own Kafka user
(``tenant-<name>``, ``shared.kafka.acls.tenant_user``) may write nothing but its tenant's request topic,
so such a client submits and stops there, for that tenant, whatever tenant its caller names; any other
user (the operator's ``cli``, the plain broker) writes the shared requests topic with the tenant given."""

from __future__ import annotations

import getpass
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import TypeVar

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from aoetl.failures import KafkaAuthenticationError, KafkaUnreachableError, NotAuthorizedError
from shared.avro import AvroSerde
from shared.contracts import (
    DEFAULT_TENANT,
    Contract,
    PipelineRequest,
    PipelineResult,
    RequestAction,
    RunEvent,
    Trigger,
    TriggerKind,
)
from shared.errors import ConfigurationError
from shared.kafka.acls import tenant_of_user
from shared.kafka.clients import KafkaClients, produce_sync
from shared.kafka.topics import Topics, tenant_requests_topic
from shared.settings import ServiceSettings, load_settings
from shared.spec.models import PipelineSpec
from shared.startup import service_serde
from shared.tracing.ingress import cli_produce

C = TypeVar("C", bound=Contract)

_log = logging.getLogger("aoetl.kafka")

# How long the CLI waits for a first broker to answer before it says it cannot reach Kafka: a healthy
# broker answers metadata in milliseconds, and librdkafka's own waits (30 s for a delivery, 10 s for
# metadata) would make a typo in the bootstrap address cost half a minute.
DEFAULT_CONNECT_TIMEOUT_S = 5.0
_PROBE_SLICE_S = 0.25


class AoetlClient:
    def __init__(self, settings: ServiceSettings | None = None, serde: AvroSerde | None = None):
        self.settings = settings or load_settings(ServiceSettings)
        # the same clients and serde as a service: security settings, and the system's schemas topic
        self.clients = KafkaClients(self.settings.kafka)
        # created before the serde, so it connects while the catalog loads: an idempotent producer sends
        # nothing before it holds a producer id, and when its first record comes before its connection to
        # the partition leader is up, librdkafka may wait for its 500 ms retry timer to ask for one
        # (measured: half of `aoetl submit`'s wall time when the producer was created last)
        self._connection_errors: list[KafkaError] = []
        self._reachable = False
        self._producer = self.clients.producer(error_cb=self._note_connection_error)
        self.serde = serde or service_serde(self.settings)

    def _note_connection_error(self, error: KafkaError) -> None:
        # librdkafka reports "all brokers down", a refused SASL login, a failed TLS handshake only here
        # (a blocking call just waits out its timeout), so the probe below reads them from this list;
        # logged as every client's are (shared.kafka.clients), which `aoetl --debug` shows
        _log.log(logging.ERROR if error.fatal() else logging.WARNING, "kafka client error: %s", error)
        if not self._reachable:  # only the probe reads them: a long --follow keeps none
            self._connection_errors.append(error)

    def check_reachable(self, timeout: float | None = None) -> None:
        """Fail fast, before the first read or write: a broker answers metadata within ``timeout``
        (``AOETL_CONNECT_TIMEOUT_S``, default 5 s), else ``KafkaUnreachableError``; refused credentials are
        ``KafkaAuthenticationError``. A refused connection or an unknown host is reported at once."""
        if self._reachable:
            return
        if timeout is None:
            timeout = connect_timeout()
        kafka = self.settings.kafka
        deadline = time.monotonic() + timeout
        while True:
            wait = max(0.01, min(_PROBE_SLICE_S, deadline - time.monotonic()))
            try:
                self._producer.list_topics(timeout=wait)
                self._reachable = True
                return
            except KafkaException:
                pass  # this slice's metadata timed out: what went wrong, if anything, is in the callback's
            self._producer.poll(0)  # serves the error callback
            for error in self._connection_errors:
                if error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
                    raise KafkaAuthenticationError(kafka.bootstrap_servers, kafka.sasl_username, error.str())
                if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE, KafkaError._SSL):
                    cause = _first_cause(self._connection_errors)
                    raise KafkaUnreachableError(kafka.bootstrap_servers, cause)
            if time.monotonic() >= deadline:
                raise KafkaUnreachableError(kafka.bootstrap_servers, f"no answer within {timeout:g}s")

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    @property
    def door_tenant(self) -> str | None:
        """The tenant the broker vouches for (this client is that tenant's Kafka user), else None."""
        return tenant_of_user(self.settings.kafka.sasl_username)

    def tenant_for(self, configured: str) -> str:
        """The tenant this client's requests are for: its Kafka user's, else the ``configured`` one."""
        return self.door_tenant or configured

    def requests_topic(self) -> str:
        """Where this client's requests go: its tenant's own topic for a tenant's Kafka user, else the
        shared requests topic."""
        tenant = self.door_tenant
        if tenant is None:
            return self.topic(Topics.REQUESTS)
        return tenant_requests_topic(tenant, self.settings.topic_suffix)

    def submit(
        self,
        spec: PipelineSpec | None = None,
        *,
        intent: str | None = None,
        definition_name: str | None = None,
        parameters: dict[str, str] | None = None,
        trigger: TriggerKind = TriggerKind.CLI,
        run_id: str | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> PipelineRequest:
        request = PipelineRequest(
            **({"run_id": run_id} if run_id else {}),
            spec=spec,
            intent=intent,
            definition_name=definition_name,
            parameters=parameters or {},
            requested_by=getpass.getuser(),
            tenant=self.tenant_for(tenant),
            trigger=Trigger(kind=trigger),
        )
        self._produce(self.requests_topic(), request.run_id, request)
        return request

    def stop(self, run_id: str, tenant: str = DEFAULT_TENANT) -> PipelineRequest:
        """Ask the orchestrator to stop a run (keyed by the run id, so the run's owner gets it)."""
        request = PipelineRequest(
            run_id=run_id,
            action=RequestAction.STOP,
            requested_by=getpass.getuser(),
            tenant=self.tenant_for(tenant),
            trigger=Trigger(kind=TriggerKind.CLI),
        )
        self._produce(self.requests_topic(), run_id, request)
        return request

    def publish(self, topic: str, key: str, value: Contract) -> None:
        """Write ``value`` to the system topic ``topic`` (a logical name, without the suffix)."""
        self._produce(self.topic(topic), key, value)

    def _produce(self, topic: str, key: str, value: Contract) -> None:
        self.check_reachable()
        # with tracing on (OTEL_* variables), the record starts (or continues) the run's trace
        with cli_produce(value, topic) as headers:
            produce_sync(self._producer, topic, self.serde.encode(value), key=key, headers=headers)

    def reader(self, *topics: str, from_beginning: bool) -> TopicReader:
        return TopicReader(self, [self.topic(t) for t in topics], from_beginning=from_beginning)

    def find_result(self, run_id: str) -> PipelineResult | None:
        with self.reader(Topics.RESULTS, from_beginning=True) as reader:
            for _, value in reader.drain({Topics.RESULTS: PipelineResult}):
                if isinstance(value, PipelineResult) and value.run_id == run_id:
                    return value
        return None

    def run_events(self, run_id: str) -> list[RunEvent]:
        with self.reader(Topics.EVENTS, from_beginning=True) as reader:
            return [
                v
                for _, v in reader.drain({Topics.EVENTS: RunEvent})
                if isinstance(v, RunEvent) and v.run_id == run_id
            ]

    def close(self) -> None:
        self._producer.flush(10)


def connect_timeout() -> float:
    """``AOETL_CONNECT_TIMEOUT_S``, else ``DEFAULT_CONNECT_TIMEOUT_S``."""
    given = os.environ.get("AOETL_CONNECT_TIMEOUT_S")
    if not given:
        return DEFAULT_CONNECT_TIMEOUT_S
    try:
        seconds = float(given)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 600:
        raise ConfigurationError(
            f"AOETL_CONNECT_TIMEOUT_S must be a number of seconds in (0, 600], not {given!r}"
        )
    return seconds


def _first_cause(errors: list[KafkaError]) -> str:
    """The most telling error librdkafka reported: why a broker could not be talked to, rather than the
    summary "1/1 brokers are down" that follows it."""
    for error in errors:
        if error.code() in (KafkaError._RESOLVE, KafkaError._SSL, KafkaError._TRANSPORT):
            text = error.str()
            # "host:port/bootstrap: Connect to ipv4#host:port failed: ..." names the address twice
            if "/bootstrap: " in text:
                text = text.split("/bootstrap: ", 1)[1]
            return re.sub(r"\s*\(after \d+ms in state \w+\)", "", text)
    return errors[0].str() if errors else "unknown"


class TopicReadRefusedError(NotAuthorizedError):
    """The broker does not let this client's user read a topic: reported, never read as an empty topic."""


class TopicReader:
    """Reads topics without a consumer group (assign, never commit): watching must not disturb services.

    Positions are fixed when the reader opens, so a watcher opened *before* a submit sees everything the
    run produces."""

    def __init__(self, client: AoetlClient, topics: list[str], *, from_beginning: bool):
        self._client = client
        if client.door_tenant is not None and topics:
            # a tenant's own user may read nothing (shared.kafka.acls.tenant_grants): said here, before the
            # broker refuses the reader's group as well as the topic
            error = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
            raise _read_refused(topics[0], error, client.door_tenant)
        client.check_reachable()
        self._consumer: Consumer = client.clients.consumer(
            f"aoetl-watch-{uuid.uuid4().hex}", partition_eof=True
        )
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        parts: list[TopicPartition] = []
        for topic in topics:
            meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
            if meta.error is not None:
                # without this a topic we may not describe has no partitions, and drain() "succeeds" empty
                self._consumer.close()
                raise _read_refused(topic, meta.error, client.door_tenant)
            parts.extend(TopicPartition(topic, p, start) for p in meta.partitions)
        if not from_beginning and parts:
            # resolve "end" to concrete offsets now, before anything is submitted; asked for every partition
            # in one request (a "latest" timestamp is the end offset), not one round trip per partition
            # (9 of them for events + results: ~0.1 s of every `aoetl run` before its submit)
            parts = self._consumer.offsets_for_times(parts, timeout=10)
            for tp in parts:
                if tp.error is not None or tp.offset < 0:
                    self._consumer.close()
                    where = f"{tp.topic} [{tp.partition}]"
                    raise ConfigurationError(f"cannot read the end of {where}: {tp.error}")
        self._consumer.assign(parts)
        self._eof: set[tuple[str, int]] = set()
        self._parts = {(tp.topic, tp.partition) for tp in parts}

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    def _decode(self, topic: str, raw: bytes, types: dict[str, type[Contract]]) -> Contract | None:
        logical = (
            topic.removesuffix(self._client.settings.topic_suffix)
            if self._client.settings.topic_suffix
            else topic
        )
        model = types.get(logical)
        if model is None:
            return None
        try:
            return self._client.serde.decode(raw, model)
        except Exception:  # a watcher shows what it can read; poison is the dead-letter topic's business
            return None

    def poll(self, types: dict[str, type[Contract]], timeout: float = 0.5) -> Iterator[tuple[str, Contract]]:
        """Messages available now (one poll round), decoded; end-of-partition markers are tracked."""
        # consume(n, t) waits for n messages or t seconds: wait for one, then take what is fetched.
        first = self._consumer.consume(1, timeout)
        for msg in [*first, *self._consumer.consume(499, 0)] if first else []:
            err = msg.error()
            if err is not None:
                if err.code() == err._PARTITION_EOF:
                    self._eof.add((msg.topic() or "", msg.partition() or 0))
                elif err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED or err.fatal():
                    raise _read_refused(msg.topic() or "?", err, self._client.door_tenant)
                continue
            topic = msg.topic() or ""
            self._eof.discard((topic, msg.partition() or 0))
            value = self._decode(topic, msg.value() or b"", types)
            if value is not None:
                yield topic, value

    def drain(
        self, types: dict[str, type[Contract]], timeout: float = 30.0
    ) -> Iterator[tuple[str, Contract]]:
        """Everything up to the current end of every partition."""
        deadline = time.monotonic() + timeout
        while self._eof != self._parts and time.monotonic() < deadline:
            yield from self.poll(types)

    def follow(self, types: dict[str, type[Contract]]) -> Iterator[tuple[str, Contract]]:
        while True:
            yield from self.poll(types)


def _read_refused(topic: str, error: KafkaError, tenant: str | None) -> ConfigurationError:
    """A topic the broker will not let us read is a configuration problem to report, not an empty topic.
    ``tenant``: the client is that tenant's own Kafka user, which by design reads nothing."""
    if error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        hint = (
            f"tenant {tenant}'s Kafka user submits requests only, as results and events hold every "
            "tenant's runs: use --no-wait, and follow the run through the gateway"
            if tenant
            else "use a user that may read it, or ask for a read ACL"
        )
        refusal = f"not authorized to read topic {topic!r}: the broker's ACLs give this user no read access"
        return TopicReadRefusedError(f"{refusal} ({hint})")
    return ConfigurationError(f"cannot read topic {topic!r}: {error.str()}")
