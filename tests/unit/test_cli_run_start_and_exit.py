"""What `aoetl run` spends around its run (issue 15): the watcher opened before the submit asks the end of
every partition in one request, not one round trip each; the console script exits without the
interpreter's teardown once the command is done, its atexit handlers run and its streams flushed, and
keeps the normal exit while a non-daemon thread still runs."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_END, TopicPartition

import aoetl.cli as cli_module
from aoetl.client import AoetlClient, TopicReader
from shared.errors import ConfigurationError
from shared.kafka.topics import Topics
from shared.settings import KafkaSettings, ServiceSettings

pytestmark = pytest.mark.unit

PARTITIONS = {"aoetl.events": 6, "aoetl.results": 3}


class EndsConsumer:
    def __init__(self, ends: dict[tuple[str, int], int]) -> None:
        self.ends = ends
        self.asked: list[list[tuple[str, int, int]]] = []
        self.assigned: list[tuple[str, int, int]] = []
        self.closed = False

    def list_topics(self, topic: str, timeout: float = -1) -> Any:
        meta = SimpleNamespace(error=None, partitions={p: None for p in range(PARTITIONS[topic])})
        return SimpleNamespace(topics={topic: meta})

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = -1, cached: bool = False) -> Any:
        raise AssertionError("one round trip per partition")

    def offsets_for_times(self, parts: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        self.asked.append([(tp.topic, tp.partition, tp.offset) for tp in parts])
        return [TopicPartition(tp.topic, tp.partition, self.ends[(tp.topic, tp.partition)]) for tp in parts]

    def assign(self, parts: list[TopicPartition]) -> None:
        self.assigned = [(tp.topic, tp.partition, tp.offset) for tp in parts]

    def close(self) -> None:
        self.closed = True


def _reader_on(consumer: EndsConsumer, monkeypatch: pytest.MonkeyPatch) -> TopicReader:
    client = AoetlClient(ServiceSettings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1")))
    monkeypatch.setattr(client, "check_reachable", lambda timeout=None: None)
    monkeypatch.setattr(client.clients, "consumer", lambda *a, **kw: consumer)
    return client.reader(Topics.EVENTS, Topics.RESULTS, from_beginning=False)


def test_a_watcher_opened_before_the_submit_asks_every_partitions_end_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ends = {(t, p): 10 * p + len(t) for t, n in PARTITIONS.items() for p in range(n)}
    consumer = EndsConsumer(ends)
    _reader_on(consumer, monkeypatch)

    assert len(consumer.asked) == 1
    assert {(t, p) for t, p, _ in consumer.asked[0]} == set(ends)
    assert all(offset == OFFSET_END for _, _, offset in consumer.asked[0])  # "latest": the end offset
    assert consumer.assigned == [(t, p, ends[(t, p)]) for t, p, _ in consumer.asked[0]]


def test_a_partition_whose_end_cannot_be_read_fails_the_watcher(monkeypatch: pytest.MonkeyPatch) -> None:
    ends = {(t, p): 5 for t, n in PARTITIONS.items() for p in range(n)}
    ends[("aoetl.results", 2)] = -1  # never read from a logical offset: events of the run could be missed
    consumer = EndsConsumer(ends)
    with pytest.raises(ConfigurationError, match=r"aoetl.results \[2\]"):
        _reader_on(consumer, monkeypatch)
    assert consumer.closed and consumer.assigned == []


class Exited(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _console_script(monkeypatch: pytest.MonkeyPatch, ends_with: BaseException) -> list[str]:
    """Calls ``app()`` as the console script does, the command ending with ``ends_with``; what happened."""
    happened: list[str] = []

    def command(self: Any, *args: Any, **kwargs: Any) -> None:
        raise ends_with

    monkeypatch.setattr(cli_module.typer.Typer, "__call__", command)
    monkeypatch.setattr(cli_module.atexit, "_run_exitfuncs", lambda: happened.append("atexit"))

    def exit_now(code: int) -> None:
        happened.append(f"os._exit({code})")
        raise Exited(code)

    monkeypatch.setattr(cli_module.os, "_exit", exit_now)
    return happened


@pytest.mark.parametrize(("code", "expected"), [(None, 0), (0, 0), (4, 4)])
def test_the_console_script_exits_with_the_commands_code_after_the_atexit_handlers(
    monkeypatch: pytest.MonkeyPatch, code: int | None, expected: int
) -> None:
    happened = _console_script(monkeypatch, SystemExit(code))
    with pytest.raises(Exited) as exited:
        cli_module.app()
    assert exited.value.code == expected
    assert happened == ["atexit", f"os._exit({expected})"]


def test_a_message_to_print_or_a_thread_still_running_keeps_the_normal_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    happened = _console_script(monkeypatch, SystemExit("a message"))
    with pytest.raises(SystemExit):
        cli_module.app()

    release = threading.Event()
    worker = threading.Thread(target=release.wait)  # not a daemon: the interpreter waits for it
    worker.start()
    try:
        happened += _console_script(monkeypatch, SystemExit(0))
        with pytest.raises(SystemExit):
            cli_module.app()
    finally:
        release.set()
        worker.join()
    assert happened == []
