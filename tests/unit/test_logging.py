"""JSON log lines carry the process-wide and the per-message context."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from shared.logging import configure_logging, current_context, log_context

pytestmark = pytest.mark.unit


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buffer = io.StringIO()
    yield buffer
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_carry_service_and_message_context(stream: io.StringIO) -> None:
    configure_logging(service="extract", instance="pod-1", level="INFO", stream=stream)
    log = logging.getLogger("aoetl.test")
    with log_context(topic="aoetl.tasks", partition=2, offset=41):
        with log_context(run_id="r-1"):
            log.info("handled %s", "it")
        log.warning("outer")
    log.info("no context")

    first, second, third = lines(stream)
    assert first["message"] == "handled it"
    assert first["level"] == "INFO"
    assert first["logger"] == "aoetl.test"
    assert "timestamp" in first
    assert {k: first[k] for k in ("service", "instance", "topic", "partition", "offset", "run_id")} == {
        "service": "extract",
        "instance": "pod-1",
        "topic": "aoetl.tasks",
        "partition": 2,
        "offset": 41,
        "run_id": "r-1",
    }
    assert second["topic"] == "aoetl.tasks" and "run_id" not in second  # inner block restored
    assert third["service"] == "extract" and "topic" not in third
    assert current_context() == {}


def test_none_values_are_left_out(stream: io.StringIO) -> None:
    configure_logging(service="load", instance="i", stream=stream)
    with log_context(run_id=None, topic="t"):
        logging.getLogger("x").info("m")
    (line,) = lines(stream)
    assert "run_id" not in line and line["topic"] == "t"


def test_exceptions_are_in_the_json(stream: io.StringIO) -> None:
    configure_logging(service="load", instance="i", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    (line,) = lines(stream)
    assert "ValueError: boom" in str(line["exc_info"])


def test_text_format_appends_context(stream: io.StringIO) -> None:
    configure_logging(service="monitor", instance="i", log_format="text", stream=stream)
    with log_context(offset=7):
        logging.getLogger("x").info("hello")
    text = stream.getvalue()
    assert "hello [service=monitor instance=i offset=7]" in text


def test_level_filters(stream: io.StringIO) -> None:
    configure_logging(service="s", instance="i", level="WARNING", stream=stream)
    logging.getLogger("x").info("quiet")
    logging.getLogger("x").warning("loud")
    assert [line["message"] for line in lines(stream)] == ["loud"]
