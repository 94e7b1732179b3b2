"""The pure parts of bench/bench_peers.py: the peers' commands, the checksum comparison, medians, ratios."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_peers import (
    aoetl_command,
    checksums_agree,
    dlt_command,
    max_peak_rss,
    median_cpu,
    psql_command,
    rotated,
    summarise,
    table_text,
)

pytestmark = pytest.mark.unit


def test_psql_copies_into_staging_then_transforms_into_the_final_table():
    argv, script = psql_command("postgresql://u@h/db", Path("/data/in file.csv"), "final_t")
    assert argv[:2] == ["psql", "postgresql://u@h/db"]
    assert "ON_ERROR_STOP=1" in argv and argv[-2:] == ["-f", "-"]
    lines = script.splitlines()
    assert lines[0].startswith("CREATE TABLE final_t (") and "total double precision" in lines[0]
    assert lines[2] == "\\copy staging FROM '/data/in file.csv' WITH (FORMAT csv, HEADER true)"
    assert "amount * qty FROM staging WHERE status <> 'cancelled';" in lines[3]


def test_dlt_and_aoetl_commands():
    argv = dlt_command(Path("/v/bin/python"), "arrow", "dsn", Path("/d.csv"), "ds", "t")
    assert argv[0] == "/v/bin/python" and argv[1].endswith("bench/peers_dlt.py")
    assert argv[argv.index("--mode") + 1] == "arrow" and argv[argv.index("--table") + 1] == "t"
    assert aoetl_command("/venv/bin/python", Path("/s.json")) == ["/venv/bin/aoetl", "run", "/s.json"]


def test_checksums_agree_names_the_tools_that_differ():
    reference = ["10", "45", "30", "123.45", "abc"]
    assert checksums_agree(reference, {"a": list(reference), "b": [10, 45, 30, "123.45", "abc"]}) == []
    other = ["9", "45", "30", "123.45", "abc"]
    assert checksums_agree(reference, {"a": list(reference), "c": other}) == ["c"]


def test_summarise_medians_and_ratios_against_both_baselines():
    def round_of(psql: float, arrow: float, aoetl: float, own: float) -> dict[str, dict]:
        return {
            "psql": {"seconds": psql},
            "dlt-arrow": {"seconds": arrow},
            "aoetl": {"seconds": aoetl, "own_seconds": own},
        }

    rounds = [round_of(2.0, 12.0, 4.0, 3.0), round_of(1.0, 14.0, 9.0, 2.0), round_of(3.0, 13.0, 5.0, 1.0)]
    wall = summarise(rounds)
    assert wall["psql"] == {"median_s": 2.0, "vs_psql": 1.0, "vs_dlt-arrow": 6.5}
    assert wall["aoetl"] == {"median_s": 5.0, "vs_psql": 0.4, "vs_dlt-arrow": 2.6}
    own = summarise(rounds, "own_seconds")
    assert own == {"aoetl": {"median_s": 2.0, "vs_psql": None, "vs_dlt-arrow": None}}
    assert "| aoetl | 5.00 | 2.0 | 0.40x | 2.60x |" in table_text(wall, {"aoetl": 2.0})


def test_rotated_puts_each_tool_first_once_per_cycle():
    tools = ("a", "b", "c")
    assert [rotated(tools, i)[0] for i in range(4)] == ["a", "b", "c", "a"]
    assert sorted(rotated(tools, 2)) == ["a", "b", "c"]


def test_median_cpu_per_tool_and_process_group():
    rounds = [
        {"aoetl": {"process_cpu_s": 1.0, "cpu_s": {"kafka": 2.0, "load": 0.5}}},
        {"aoetl": {"process_cpu_s": 3.0, "cpu_s": {"kafka": 1.0, "load": 0.7}}},
        {"aoetl": {"process_cpu_s": 2.0, "cpu_s": {"kafka": 4.0, "load": 0.6}}},
    ]
    assert median_cpu(rounds) == {"aoetl": {"tool": 2.0, "kafka": 2.0, "load": 0.6}}


def test_max_peak_rss_is_the_worst_round_per_group_and_a_missing_figure_does_not_hide_one():
    rounds = [
        {"aoetl": {"peak_rss_mib": {"tool": 90.0, "load": 240.0, "postgres_backend": None}}},
        {"aoetl": {"peak_rss_mib": {"tool": 95.0, "load": 230.0, "postgres_backend": 40.0}}},
        {"aoetl": {"peak_rss_mib": {"tool": 91.0, "load": None, "postgres_backend": 38.0}}},
    ]
    assert max_peak_rss(rounds) == {"aoetl": {"tool": 95.0, "load": 240.0, "postgres_backend": 40.0}}
