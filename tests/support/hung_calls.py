"""Faulty transactional producers, injected in-process: a real producer wrapped so that one call misbehaves
the way librdkafka does after a broker restart (issues #5456, #5511: ``send_offsets_to_transaction`` blocks
past its own timeout, forever; or every call times out on a client stuck on a dead coordinator).

The wrappers are installed by monkeypatching the ONE factory attribute the engine under test builds its
transactional producers with; the constants below name those attributes, so when the engine moves its
factory, retargeting the tests is a change of one line here.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from shared.kafka.clients import make_producer
from shared.settings import KafkaSettings

# The one factory every transactional producer of aoetl comes from: the transaction engine's. Should the
# engine build its producers elsewhere, retargeting the fault tests is this line.
TRANSACTIONAL_PRODUCERS = "shared.kafka.transaction.make_producer"
# Where the task loop (``ProcessingLoop``) gets its transactional producers.
TASK_LOOP_PRODUCERS = TRANSACTIONAL_PRODUCERS
# Where the stream readers (continuous pipelines) and the topic-trigger runners get theirs.
READER_PRODUCERS = TRANSACTIONAL_PRODUCERS

# How long past its own timeout the engine waits for a hung transactional call before it gives the
# producer up: shortened in tests. Every one of these that exists is patched (an engine without the guard
# has none, and a test then shows that the call stays hung).
HUNG_CALL_GRACES = ("shared.kafka.transaction.HUNG_CALL_GRACE_S",)

# Transactional-id prefixes of the readers (their main task loops use ``<service>-<instance>``).
STREAM_READER_PREFIX = "extract-stream-"
TRIGGER_RUNNER_PREFIX = "orchestrator-trigger-"


class FirstSendOffsetsHangs:
    """A real transactional producer whose first ``send_offsets_to_transaction`` blocks until released
    (then fails as librdkafka would, with a timeout)."""

    def __init__(self, real: Any, release: threading.Event):
        self._real, self._release = real, release
        self.hung = threading.Event()

    def send_offsets_to_transaction(self, *args: Any) -> None:
        self.hung.set()
        self._release.wait()
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "released by the test"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class SendOffsetsAlwaysTimesOut:
    """A real transactional producer stuck on a dead coordinator connection: every send_offsets times out."""

    def __init__(self, real: Any):
        self._real = real
        self.failures = 0

    def send_offsets_to_transaction(self, *args: Any) -> None:
        self.failures += 1
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to add offsets to transaction"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def wrap_first_transactional_producer(
    monkeypatch: pytest.MonkeyPatch, target: str, wrap: Callable[[Any], Any], *, prefix: str = ""
) -> list[Any]:
    """Patch the factory ``target`` so that the first transactional producer whose id starts with
    ``prefix`` is wrapped by ``wrap``; every other producer is real and untouched. Returns, as they are
    made, the transactional producers with that prefix (the wrapped one first)."""
    made: list[Any] = []

    def factory(settings: KafkaSettings, **overrides: Any) -> Any:
        producer: Any = make_producer(settings, **overrides)
        transactional_id = overrides.get("transactional_id")
        if transactional_id is None or not str(transactional_id).startswith(prefix):
            return producer
        if not made:
            producer = wrap(producer)
        made.append(producer)
        return producer

    monkeypatch.setattr(target, factory)
    return made


def shorten_hung_call_grace(monkeypatch: pytest.MonkeyPatch, seconds: float) -> list[str]:
    """Set every hung-call grace of ``HUNG_CALL_GRACES`` that exists to ``seconds``; returns those set."""
    patched = []
    for name in HUNG_CALL_GRACES:
        module_name, attribute = name.rsplit(".", 1)
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, attribute):
            monkeypatch.setattr(module, attribute, seconds)
            patched.append(name)
    return patched


@dataclass
class HungSendOffsets:
    """The transactional producers made since ``hung_send_offsets`` was installed; the first one's
    send_offsets hangs until ``release`` is set (by the test once it has seen the engine recover without
    it, or at the latest at teardown, so the abandoned call's thread can end)."""

    made: list[Any]
    release: threading.Event

    @property
    def first(self) -> FirstSendOffsetsHangs:
        assert self.made, "no transactional producer was made"
        first = self.made[0]
        assert isinstance(first, FirstSendOffsetsHangs)
        return first

    def hung(self) -> bool:
        """The first producer is blocked in its send_offsets call now."""
        return bool(self.made) and self.first.hung.is_set() and not self.release.is_set()


@contextlib.contextmanager
def hung_send_offsets(
    monkeypatch: pytest.MonkeyPatch, target: str, *, prefix: str = "", grace_s: float = 0.5
) -> Iterator[HungSendOffsets]:
    """The first transactional producer ``target`` makes (with an id starting with ``prefix``) hangs in
    its first ``send_offsets_to_transaction``; the hung-call graces are ``grace_s``. Released on exit."""
    release = threading.Event()
    made = wrap_first_transactional_producer(
        monkeypatch, target, lambda real: FirstSendOffsetsHangs(real, release), prefix=prefix
    )
    shorten_hung_call_grace(monkeypatch, grace_s)
    try:
        yield HungSendOffsets(made, release)
    finally:
        release.set()
