"""Suggested specs: valid, proven on the sample, and made of the expected heuristics."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from aoetl.cli import app
from shared.agent.errors import SuggestionError
from shared.agent.profile import profile_source
from shared.agent.suggest import (
    apply_source_nulls,
    dry_run,
    parse_destination_uri,
    pipeline_name_for,
    spec_to_yaml,
    suggest_spec,
)
from shared.spec import load_spec, parse_spec_text
from shared.spec.models import (
    CastStep,
    CsvSource,
    DataType,
    DedupeStep,
    DeriveStep,
    DuckDBDestination,
    JsonlDestination,
    JsonlSource,
    MaskMethod,
    MaskStep,
    ParquetDestination,
    PostgresDestination,
    WriteMode,
)
from shared.spec.quality import AcceptedValuesRule, NotNullRule, OnFail, RangeRule
from shared.transform.engine import TransformEngine
from tests.unit.agent_data import write_csv, write_jsonl, write_orders_csv

pytestmark = pytest.mark.unit


@pytest.fixture
def orders(tmp_path: Path) -> Path:
    return write_orders_csv(tmp_path / "orders.csv")


def test_suggestion_for_messy_orders(orders: Path) -> None:
    profile = profile_source(CsvSource(path=str(orders)))
    suggestion = suggest_spec(profile, parse_destination_uri("postgres://public.orders"))
    spec = suggestion.spec
    assert isinstance(spec.source, CsvSource) and {"N/A", "-"} <= set(spec.source.null_values)
    cast = next(s for s in spec.transforms if isinstance(s, CastStep))
    assert cast.columns == {
        "order_id": DataType.INT64,
        "amount": DataType.FLOAT64,
        "qty": DataType.INT64,
        "created_at": DataType.TIMESTAMP,
        "active": DataType.BOOLEAN,
    }
    mixed = next(s for s in spec.transforms if isinstance(s, DeriveStep))
    assert mixed.column == "order_date" and "%d/%m/%Y" in mixed.expr
    masks = {m.method: m.columns for m in spec.transforms if isinstance(m, MaskStep)}
    assert masks == {MaskMethod.HASH: ["customer_email"], MaskMethod.PARTIAL: ["phone", "card"]}
    assert isinstance(spec.transforms[-1], DedupeStep) and spec.transforms[-1].keys == ["order_id"]
    rules = {type(r): r for r in spec.quality}
    assert rules[NotNullRule].columns == ["order_id"] and rules[NotNullRule].on_fail is OnFail.QUARANTINE
    assert rules[AcceptedValuesRule].values == ["cancelled", "pending", "shipped"]
    assert rules[AcceptedValuesRule].on_fail is OnFail.WARN
    ranges = {r.column: r for r in spec.quality if isinstance(r, RangeRule)}
    assert ranges["amount"].min == 3.25 and ranges["amount"].on_fail is OnFail.WARN
    assert "order_id" not in ranges  # keys have no meaningful range
    assert isinstance(spec.destination, PostgresDestination)
    assert (spec.destination.mode, spec.destination.keys) == (WriteMode.MERGE, ["order_id"])
    # The dry run removed the 4 repeated orders and every cast held.
    assert (suggestion.dry_run.rows_in, suggestion.dry_run.rows_out) == (44, 40)


def test_suggested_spec_really_runs_on_the_sample(orders: Path) -> None:
    profile = profile_source(CsvSource(path=str(orders)))
    spec = suggest_spec(profile, parse_destination_uri("jsonl:out")).spec
    report = dry_run(spec, profile.sample)
    assert report.rows_out == 40 and report.violations == []
    with TransformEngine(spec.transforms) as engine:
        out = engine.apply(apply_source_nulls(profile.sample, spec.source))
    assert out.schema.field("order_date").type == pa.date32()
    assert out.schema.field("qty").type == pa.int64()
    assert out.column("qty").null_count == 5
    dates = out.column("order_date").to_pylist()
    assert None not in dates  # both formats parsed


def test_yaml_round_trip_and_compact_output(orders: Path, tmp_path: Path) -> None:
    spec = suggest_spec(
        profile_source(CsvSource(path=str(orders))), parse_destination_uri("parquet:out")
    ).spec
    text = spec_to_yaml(spec)
    assert "run:" not in text and "has_header" not in text  # defaults are left out
    assert parse_spec_text(text) == spec
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_spec(path) == spec


def test_non_iso_single_format_becomes_a_cast_format(tmp_path: Path) -> None:
    rows = [[str(i), f"{(i % 28) + 1:02d}/03/2024"] for i in range(1, 9)]
    path = write_csv(tmp_path / "events.csv", ["event_id", "day"], rows)
    spec = suggest_spec(profile_source(CsvSource(path=str(path))), parse_destination_uri("jsonl:out")).spec
    cast = spec.transforms[0]
    assert isinstance(cast, CastStep) and cast.formats == {"day": "%d/%m/%Y"}
    # A unique key-like column gets the not_null quarantine rule, no dedupe.
    assert not any(isinstance(s, DedupeStep) for s in spec.transforms)
    assert isinstance(spec.quality[0], NotNullRule) and spec.quality[0].columns == ["event_id"]


def test_jsonl_na_markers_are_nulled_by_a_derive_before_the_cast(tmp_path: Path) -> None:
    records = [{"id": i, "price": "N/A" if i == 2 else f"{i}.5"} for i in range(6)]
    path = write_jsonl(tmp_path / "p.jsonl", records)
    suggestion = suggest_spec(profile_source(JsonlSource(path=str(path))), parse_destination_uri("jsonl:o"))
    nulling, cast = suggestion.spec.transforms[0], suggestion.spec.transforms[1]
    assert isinstance(nulling, DeriveStep) and nulling.column == "price" and "'N/A'" in nulling.expr
    assert isinstance(cast, CastStep) and cast.columns == {"price": DataType.FLOAT64}
    assert suggestion.dry_run.rows_out == 6


def test_exact_duplicate_rows_without_key_dedupe_on_all_columns(tmp_path: Path) -> None:
    rows = [["a", "1"], ["b", "2"], ["a", "1"], ["c", "3"]]
    spec = suggest_spec(
        profile_source(CsvSource(path=str(write_csv(tmp_path / "d.csv", ["name", "score"], rows)))),
        parse_destination_uri("jsonl:o"),
    ).spec
    assert isinstance(spec.transforms[-1], DedupeStep) and spec.transforms[-1].keys == ["name", "score"]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("postgres://orders", PostgresDestination(table="orders")),
        ("postgresql://sales.orders", PostgresDestination(table="sales.orders")),
        ("duckdb:/tmp/w.db#orders", DuckDBDestination(path="/tmp/w.db", table="orders")),
        ("parquet:out/orders", ParquetDestination(path="out/orders")),
        ("jsonl:out", JsonlDestination(path="out")),
    ],
)
def test_destination_uris(uri: str, expected: object) -> None:
    assert parse_destination_uri(uri) == expected


@pytest.mark.parametrize("uri", ["orders", "s3://bucket", "duckdb:/tmp/w.db", "postgres://bad-name!"])
def test_bad_destination_uris(uri: str) -> None:
    with pytest.raises(SuggestionError, match="destination"):
        parse_destination_uri(uri)


def test_pipeline_names() -> None:
    assert pipeline_name_for({"path": "/data/Orders 2024.csv"}) == "orders_2024"
    assert pipeline_name_for({"path": "/data/2024.csv"}) == "p_2024"
    assert pipeline_name_for({"table": "public.orders"}) == "orders"


def test_cli_profile_json_and_suggest(orders: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["profile", str(orders), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["key_duplicates"] == {"order_id": 4}
    table = runner.invoke(app, ["profile", str(orders)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "order_id" in table.stdout
    out = tmp_path / "spec.yaml"
    result = runner.invoke(app, ["suggest", str(orders), "--to", "duckdb:w.db#orders", "-o", str(out)])
    assert result.exit_code == 0, result.output
    # named from the working directory, written so that the spec file (elsewhere) names the same file
    assert load_spec(out).destination == DuckDBDestination(
        path=str(Path.cwd() / "w.db"), table="orders", mode=WriteMode.MERGE, keys=["order_id"]
    )
    bad = runner.invoke(app, ["suggest", str(orders), "--to", "nowhere"])
    assert bad.exit_code == 2


def test_cli_plan_without_a_model(orders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AOETL_LLM_MODEL", raising=False)
    runner = CliRunner()
    refused = runner.invoke(app, ["plan", "load orders into postgres, drop cancelled orders"])
    assert refused.exit_code == 2 and "AOETL_LLM_MODEL" in refused.output
    declined = runner.invoke(app, ["plan", str(orders), "--to", "jsonl:out"], input="n\n")
    assert declined.exit_code == 0 and "not submitted" in declined.output
