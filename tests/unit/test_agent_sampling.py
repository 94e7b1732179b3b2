"""The profile's sample is spread over the whole input (``shared.agent.sampling``), so suggested rules hold
on the whole file; ISO-8601 timestamps with a zone are profiled, cast and landed as zoned timestamps."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.load.sinks.duckdb_file import DuckDBSink
from services.load.sinks.files import FileSink
from shared.agent.profile import profile_source, profile_table
from shared.agent.sampling import reservoir_sample
from shared.agent.sources import sample_source, source_from_path
from shared.agent.suggest import dry_run, parse_destination_uri, spec_to_yaml, suggest_spec
from shared.spec import parse_spec_text
from shared.spec.models import CastStep, DataType, DuckDBDestination
from shared.spec.quality import RangeRule
from shared.transform.engine import TransformEngine

pytestmark = pytest.mark.unit

ROWS = 40_000
DAYS = 365


def _sorted_by_date(path: Path) -> Path:
    """An export sorted by date: day 1's rows first, day 365's last (the issue's case)."""
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["order_id", "day", "placed_at", "amount"])
        for i in range(ROWS):
            day = i * DAYS // ROWS + 1
            placed = start + dt.timedelta(days=day - 1, seconds=i % 86_400)
            writer.writerow([i, day, placed.strftime("%Y-%m-%dT%H:%M:%SZ"), f"{(i * 37) % 1000 / 10:.1f}"])
    return path


def _batches(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(offset, size) for offset in range(0, table.num_rows, size)]


def test_a_reservoir_sample_is_uniform_reproducible_and_in_input_order() -> None:
    whole = pa.table({"n": list(range(100_000))})
    sample = reservoir_sample(_batches(whole, 7_000), 5_000, seed=3)
    assert (sample.table.num_rows, sample.total_rows) == (5_000, 100_000)
    picked = sample.table["n"].to_pylist()
    assert picked == sorted(picked) and len(set(picked)) == 5_000  # input order, without replacement
    assert picked == reservoir_sample(_batches(whole, 7_000), 5_000, seed=3).table["n"].to_pylist()
    assert picked != reservoir_sample(_batches(whole, 7_000), 5_000, seed=4).table["n"].to_pylist()
    # spread: every tenth of the input holds about a tenth of the sample (a head sample holds it all in one)
    tenths = (pl.Series("n", picked) // 10_000).value_counts()["count"].to_list()
    assert len(tenths) == 10 and min(tenths) > 400 and max(tenths) < 600, tenths
    small = reservoir_sample(_batches(whole.slice(0, 30), 8), 100)
    assert small.table["n"].to_pylist() == list(range(30)) and small.total_rows == 30


def test_suggested_rules_on_a_file_sorted_by_date_hold_on_the_whole_file(tmp_path: Path) -> None:
    source = source_from_path(str(_sorted_by_date(tmp_path / "orders.csv")))
    rows = 2_000
    profile = profile_source(source, sample_rows=rows)
    assert (profile.sampled_rows, profile.total_rows) == (rows, ROWS)
    suggestion = suggest_spec(profile, parse_destination_uri("postgres://orders"))
    ranges = {r.column: (r.min, r.max) for r in suggestion.spec.quality if isinstance(r, RangeRule)}
    assert ranges["day"] == (1.0, float(DAYS)), ranges
    whole = sample_source(source, ROWS * 2).table
    assert whole.num_rows == ROWS
    assert dry_run(suggestion.spec, whole).violations == []  # every rule holds on every row
    # the test can fail: the head of the file (what used to be profiled) is days 1..19 only, and the
    # rules drawn from it are violated by the rest of the file
    head = whole.slice(0, rows)
    head_spec = suggest_spec(
        profile_table(head, source=source), parse_destination_uri("postgres://orders")
    ).spec
    head_ranges = {r.column: r.max for r in head_spec.quality if isinstance(r, RangeRule)}
    assert head_ranges["day"] < 20
    assert any(v.startswith("range:day") for v in dry_run(head_spec, whole).violations)
    # and the spec says which sample its rules come from
    assert f"{rows:,} rows sampled of {ROWS:,}" in (suggestion.spec.description or "")
    assert "seed 0" in (suggestion.spec.description or "")


def test_iso_timestamps_with_a_zone_are_profiled_suggested_and_cast_as_zoned_utc(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "id,at,local\n"
        "1,2024-03-01T10:00:00Z,2024-03-01 10:00:00\n"
        "2,2024-03-01T10:00:00+02:00,2024-03-01 11:00:00\n"
        "3,2024-03-01 10:00:00.250-0130,2024-03-01 12:00:00\n"
    )
    profile = profile_source(source_from_path(str(path)))
    at, local = profile.column("at"), profile.column("local")
    assert (at.inferred_type, at.formats) == (DataType.TIMESTAMP, ["%+"])
    assert at.min == "2024-03-01T08:00:00+00:00" and at.max == "2024-03-01T11:30:00.250000+00:00"
    assert local.inferred_type is DataType.TIMESTAMP and local.cast_format is None  # naive ISO: no format
    spec = suggest_spec(profile, parse_destination_uri("postgres://events")).spec
    cast = next(step for step in spec.transforms if isinstance(step, CastStep))
    assert cast.columns["at"] is DataType.TIMESTAMP and cast.formats == {"at": "%+"}
    assert parse_spec_text(spec_to_yaml(spec)) == spec  # '%+' survives the YAML

    table = sample_source(source_from_path(str(path)), 10).table
    with TransformEngine(spec.transforms) as engine:
        out = engine.apply(table)
    assert out.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert out.schema.field("local").type == pa.timestamp("us")  # no zone given: stays a local time
    utc = dt.UTC
    assert out["at"].to_pylist() == [
        dt.datetime(2024, 3, 1, 10, 0, tzinfo=utc),
        dt.datetime(2024, 3, 1, 8, 0, tzinfo=utc),
        dt.datetime(2024, 3, 1, 11, 30, 0, 250_000, tzinfo=utc),
    ]

    # DuckDB: a timestamptz column; Parquet: a UTC-adjusted timestamp
    db = tmp_path / "w.duckdb"
    DuckDBSink(DuckDBDestination(path=str(db), table="events")).write("run-tz", "t:0", out)
    with duckdb.connect(str(db)) as con:
        kinds = dict(
            con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'events'"
            ).fetchall()
        )
    assert kinds["at"] == "TIMESTAMP WITH TIME ZONE" and kinds["local"] == "TIMESTAMP"
    sink = FileSink(tmp_path / "parquet", "parquet")
    sink.write("run-tz", "t:0", out)
    written = pq.read_table(sink.part_path("run-tz", "t:0"))
    assert written.schema.field("at").type == pa.timestamp("us", tz="UTC")
