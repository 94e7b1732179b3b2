"""The pure parts of bench/bench_peers_stream.py and bench/peers_quix.py: events, the aoetl spec, the quix
command and its transform, one drain's figures, medians and the ratio, the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_peers_stream import aoetl_spec, drain_figures, event, quix_command, summarise, table_text
from bench.peers_quix import connection, transform
from shared.spec import parse_spec

pytestmark = pytest.mark.unit


def test_events_are_small_json_with_distinct_ids():
    assert event(1234) == {"id": 1234, "customer": "c237", "amount": 23.4, "qty": 2}
    assert len({event(i)["id"] for i in range(100)}) == 100


def test_the_aoetl_spec_is_a_continuous_pipeline_doing_what_the_quix_peer_does():
    spec = parse_spec(aoetl_spec("bench-x", "bench.peers.events.t", "tbl"))
    assert spec.continuous and spec.source.topic == "bench.peers.events.t"
    assert [t.op for t in spec.transforms] == ["cast", "derive"]
    assert transform({"id": "7", "customer": "c7", "amount": "2.5", "qty": 3}) == {
        "id": 7,
        "customer": "c7",
        "amount": 2.5,
        "qty": 3,
        "total": 7.5,
    }


def test_quix_command_and_its_connection():
    argv = quix_command(Path("/v/bin/python"), "h:9092", "top", "grp", "postgresql://u@h:5/db", "t", 5.0)
    assert argv[0] == "/v/bin/python" and argv[1].endswith("bench/peers_quix.py")
    assert argv[argv.index("--group") + 1] == "grp" and argv[argv.index("--commit-interval") + 1] == "5.0"
    assert connection("postgresql://u@h:5/db") == {
        "host": "h",
        "port": 5,
        "dbname": "db",
        "user": "u",
        "password": "unused",
    }
    assert connection("postgresql://a%40b:p%2F@h/db")["user"] == "a@b"


def test_drain_figures_exactly_once_and_rates():
    figures = drain_figures(1000, 100.0, (1000, 1000, 100.5, 102.0, 101.0, 101.4, 0))
    assert figures["exactly_once"] and figures["duplicates"] == figures["missing"] == 0
    assert figures["drain_s"] == 2.0 and figures["events_per_s"] == 500
    assert figures["first_row_after_s"] == 0.5 and figures["steady_events_per_s"] == 2000


def test_drain_figures_report_duplicates_and_missing_ids():
    dup = drain_figures(1000, 100.0, (1200, 1000, 100.5, 102.0, 101.0, 101.4, 0))
    assert dup["duplicates"] == 200 and dup["missing"] == 0 and not dup["exactly_once"]
    short = drain_figures(1000, 100.0, (990, 990, 100.5, 102.0, 101.0, 101.4, 0))
    assert short["missing"] == 10 and not short["exactly_once"]
    stranger = drain_figures(1000, 100.0, (1000, 1000, 100.5, 102.0, 101.0, 101.4, 1))
    assert stranger["missing"] == 1 and not stranger["exactly_once"]
    empty = drain_figures(1000, 100.0, (0, 0, None, None, None, None, 0))
    assert empty["events_per_s"] is None and empty["missing"] == 1000


def _figures(rate: int, duplicates: int = 0) -> dict:
    return {
        "events_per_s": rate,
        "steady_events_per_s": rate * 2,
        "drain_s": 1e6 / rate,
        "first_row_after_s": 1.0,
        "duplicates": duplicates,
        "missing": 0,
        "exactly_once": duplicates == 0,
    }


def test_summarise_medians_ratio_and_duplicates():
    rounds = [
        {"quix": _figures(10_000), "aoetl": _figures(100_000)},
        {"aoetl": _figures(150_000), "quix": _figures(20_000, duplicates=5)},
        {"quix": _figures(15_000), "aoetl": _figures(120_000)},
    ]
    summary = summarise(rounds)
    assert summary["quix"]["events_per_s"] == 15_000 and summary["aoetl"]["events_per_s"] == 120_000
    assert summary["aoetl"]["events_per_s_vs_quix"] == 8.0
    assert summary["quix"]["duplicates_total"] == 5 and not summary["quix"]["exactly_once_every_round"]
    assert summary["aoetl"]["exactly_once_every_round"] and summary["aoetl"]["rounds"] == 3
    text = table_text(summary)
    assert "| aoetl | 120,000 | 240,000 |" in text and "| 8.00x | yes | 0 |" in text
    assert "| quix | 15,000 |" in text and "| - | no | 5 |" in text
