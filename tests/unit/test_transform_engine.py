"""TransformEngine: every step on generated data, checked against plain-Python computations of the same
result; SQL sandboxing; chaining; empty tables; type preservation; static column checks."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from pydantic import TypeAdapter, ValidationError

from shared.errors import ConfigurationError, DataError, is_transient
from shared.spec.models import SqlStep, TransformStep
from shared.transform.engine import EngineCache, TransformEngine
from shared.transform.errors import (
    CastError,
    ExpressionError,
    ForbiddenSqlError,
    InvalidExpressionError,
    InvalidStepError,
    UnknownColumnError,
)
from shared.transform.expressions import open_sandbox

pytestmark = pytest.mark.unit

_STEPS = TypeAdapter(list[TransformStep])
SALT = b"test-salt"
ROWS = 2_000


def steps(*raw: dict[str, Any]) -> list[TransformStep]:
    return _STEPS.validate_python(list(raw))


def run(table: pa.Table, *raw: dict[str, Any]) -> pa.Table:
    with TransformEngine(steps(*raw), mask_salt=SALT) as engine:
        return engine.apply(table)


def generated(rows: int = ROWS, seed: int = 7) -> pa.Table:
    """Typed columns with nulls and repeated keys."""
    rng = random.Random(seed)

    def maybe(value: Any, p_null: float = 0.1) -> Any:
        return None if rng.random() < p_null else value

    return pa.table(
        {
            "id": pa.array([rng.randrange(rows // 2) for _ in range(rows)], pa.int64()),
            "amount": pa.array([maybe(round(rng.uniform(-100, 1000), 2)) for _ in range(rows)], pa.float64()),
            "qty": pa.array([maybe(rng.randrange(0, 50)) for _ in range(rows)], pa.int32()),
            "name": pa.array(
                [maybe(rng.choice(["ann", "bo", "carla", "dmitri"]) + str(i)) for i in range(rows)]
            ),
            "country": pa.array([maybe(rng.choice(["FR", "DE", "US"])) for _ in range(rows)]),
        }
    )


def column(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist()


# ----------------------------------------------------------------------------------- select/rename
def test_select_keeps_listed_columns_in_order() -> None:
    table = generated()
    out = run(table, {"op": "select", "columns": ["name", "id"]})
    assert out.column_names == ["name", "id"]
    assert column(out, "name") == column(table, "name")
    assert out.schema.field("id").type == pa.int64()


def test_unknown_column_names_step_column_and_available_columns() -> None:
    with pytest.raises(UnknownColumnError) as info:
        run(generated(), {"op": "fill", "values": {"qty": 0}}, {"op": "select", "columns": ["id", "nope"]})
    err = info.value
    assert (err.where, err.column) == ("transforms[1] (select)", "nope")
    assert err.available == ["id", "amount", "qty", "name", "country"]
    assert "transforms[1] (select)" in str(err) and "'nope'" in str(err) and "amount" in str(err)
    assert isinstance(err, ConfigurationError) and not is_transient(err)


def test_select_twice_the_same_column_is_refused() -> None:
    with pytest.raises(InvalidStepError, match="twice"):
        run(generated(), {"op": "select", "columns": ["id", "id"]})


def test_rename_maps_names_and_keeps_data() -> None:
    table = generated()
    out = run(table, {"op": "rename", "mapping": {"amount": "total", "name": "customer"}})
    assert out.column_names == ["id", "total", "qty", "customer", "country"]
    assert column(out, "total") == column(table, "amount")


def test_rename_onto_an_existing_column_is_refused() -> None:
    with pytest.raises(InvalidStepError, match="'id' would appear twice"):
        run(generated(), {"op": "rename", "mapping": {"qty": "id"}})


# ------------------------------------------------------------------------------------------- cast
def numeric_texts(rng: random.Random, rows: int) -> list[str | None]:
    out: list[str | None] = []
    for _ in range(rows):
        n = rng.randrange(-5_000_000, 5_000_000)
        form = rng.randrange(5)
        out.append([None, f"{n}", f"{n:,}", f"  {n} ", ""][form])
    return out


def test_cast_text_to_int_handles_blanks_spaces_and_thousands_groups() -> None:
    rng = random.Random(1)
    texts = numeric_texts(rng, ROWS)
    out = run(pa.table({"v": texts}), {"op": "cast", "columns": {"v": "int64"}})
    expected = [None if t is None or not t.strip() else int(t.strip().replace(",", "")) for t in texts]
    assert out.schema.field("v").type == pa.int64()
    assert column(out, "v") == expected


def test_cast_text_to_float() -> None:
    rng = random.Random(2)
    values = [round(rng.uniform(-1e7, 1e7), 3) for _ in range(ROWS)]
    texts = [f"{v:,}" if i % 3 == 0 else repr(v) for i, v in enumerate(values)]
    out = run(pa.table({"v": texts}), {"op": "cast", "columns": {"v": "float64"}})
    assert out.schema.field("v").type == pa.float64()
    assert column(out, "v") == [float(t.replace(",", "")) for t in texts]


def test_cast_failure_is_a_terminal_data_error_with_count_and_described_examples() -> None:
    texts = ["1", "1,5", "2", "abcxyz", "12,34", "3.0", "NA", "7"]
    with pytest.raises(CastError) as info:
        run(pa.table({"qty": texts}), {"op": "cast", "columns": {"qty": "int64"}})
    err = info.value
    bad = [t for t in texts if not t.isdigit()]
    described = [
        "<a decimal number>",
        "<6 characters: letters>",
        "<a decimal number>",
        "<a decimal number>",
        "'NA'",  # a null marker of the fixed vocabulary, not data
    ]
    assert (err.column, err.target, err.bad_count, err.examples) == ("qty", "int64", len(bad), described)
    assert "qty" in str(err) and "<6 characters: letters>" in str(err) and "transforms[0] (cast)" in str(err)
    assert "abcxyz" not in str(err) and "12,34" not in str(err)  # the file's values never reach the text
    assert isinstance(err, DataError) and not is_transient(err)


def test_cast_booleans_in_every_accepted_spelling() -> None:
    spellings = {
        "true": True,
        "t": True,
        "yes": True,
        "1": True,
        "false": False,
        "f": False,
        "no": False,
        "0": False,
    }
    rng = random.Random(3)
    texts = [rng.choice([*spellings, None]) for _ in range(500)]
    texts = [t if t is None or rng.random() < 0.5 else t.upper() for t in texts]
    out = run(pa.table({"b": texts}), {"op": "cast", "columns": {"b": "boolean"}})
    assert column(out, "b") == [None if t is None else spellings[t.lower()] for t in texts]
    with pytest.raises(CastError, match="<5 characters: letters>"):
        run(pa.table({"b": ["yes", "maybe"]}), {"op": "cast", "columns": {"b": "boolean"}})


def test_cast_dates_iso_and_custom_format() -> None:
    rng = random.Random(4)
    days = [dt.date(2000, 1, 1) + dt.timedelta(days=rng.randrange(20_000)) for _ in range(ROWS)]
    table = pa.table({"iso": [d.isoformat() for d in days], "eu": [d.strftime("%d/%m/%Y") for d in days]})
    out = run(table, {"op": "cast", "columns": {"iso": "date", "eu": "date"}, "formats": {"eu": "%d/%m/%Y"}})
    assert out.schema.field("iso").type == pa.date32()
    assert column(out, "iso") == days and column(out, "eu") == days


def test_cast_iso_timestamps_with_offsets_become_naive_utc() -> None:
    rng = random.Random(5)
    texts = []
    for _ in range(ROWS):
        moment = dt.datetime(2020, 1, 1) + dt.timedelta(
            seconds=rng.randrange(10**8), microseconds=rng.randrange(10**6)
        )
        form = rng.randrange(5)
        if form == 0:
            texts.append(moment.isoformat())
        elif form == 1:
            texts.append(moment.isoformat(sep=" ", timespec="milliseconds"))
        elif form == 2:
            texts.append(moment.isoformat(timespec="seconds") + "Z")
        elif form == 3:
            texts.append(moment.isoformat() + rng.choice(["+02:00", "-05:30"]))
        else:
            texts.append(moment.date().isoformat())
    out = run(pa.table({"ts": texts}), {"op": "cast", "columns": {"ts": "timestamp"}})

    def expected(text: str) -> dt.datetime:
        parsed = dt.datetime.fromisoformat(text)  # independent ISO-8601 parser (3.11 reads Z and offsets)
        return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed

    assert out.schema.field("ts").type == pa.timestamp("us")
    assert column(out, "ts") == [expected(t) for t in texts]


def test_cast_timestamp_with_custom_format_and_non_text_sources() -> None:
    table = pa.table({"ts": ["02/01/2024 10:30"], "f": [2.0], "i": pa.array([3], pa.int32()), "b": [True]})
    out = run(
        table,
        {
            "op": "cast",
            "columns": {"ts": "timestamp", "f": "int64", "i": "float64", "b": "string"},
            "formats": {"ts": "%d/%m/%Y %H:%M"},
        },
    )
    assert out.to_pylist() == [{"ts": dt.datetime(2024, 1, 2, 10, 30), "f": 2, "i": 3.0, "b": "true"}]
    with pytest.raises(CastError, match=r"<a decimal number>"):
        run(pa.table({"f": [1.0, 2.5]}), {"op": "cast", "columns": {"f": "int64"}})


def test_cast_trims_text_and_reads_blank_as_null_for_every_type() -> None:
    table = pa.table(
        {
            "d": [" 2024-01-02 ", "", None, "2024-01-03"],
            "ts": ["2024-01-02T03:04:05", "  ", " 2024-01-02 03:04 ", None],
            "b": [" YES", "no ", " ", "T"],
            "cat": pa.array(["1", "2", "1", None]).dictionary_encode(),
            "keep": ["x", "y", "z", "w"],
        }
    )
    out = run(
        table, {"op": "cast", "columns": {"d": "date", "ts": "timestamp", "b": "boolean", "cat": "int64"}}
    )
    assert out.to_pylist() == [
        {"d": dt.date(2024, 1, 2), "ts": dt.datetime(2024, 1, 2, 3, 4, 5), "b": True, "cat": 1, "keep": "x"},
        {"d": None, "ts": None, "b": False, "cat": 2, "keep": "y"},
        {"d": None, "ts": dt.datetime(2024, 1, 2, 3, 4), "b": None, "cat": 1, "keep": "z"},
        {"d": dt.date(2024, 1, 3), "ts": None, "b": True, "cat": None, "keep": "w"},
    ]
    assert out.column("keep").equals(table.column("keep"))


# --------------------------------------------------------------------------------- filter/derive
def test_filter_keeps_rows_where_expression_is_true_nulls_dropped() -> None:
    table = generated()
    out = run(table, {"op": "filter", "expr": "amount > 100 AND country <> 'US'"})
    expected = [
        row
        for row in table.to_pylist()
        if row["amount"] is not None
        and row["country"] is not None
        and row["amount"] > 100
        and row["country"] != "US"
    ]
    assert out.to_pylist() == expected  # same rows, same order


def test_derive_adds_or_replaces_a_column() -> None:
    table = generated()
    out = run(
        table,
        {"op": "derive", "column": "total", "expr": "amount * qty"},
        {"op": "derive", "column": "name", "expr": "upper(name)"},
    )
    rows = table.to_pylist()
    assert out.column_names == [*table.column_names, "total"]
    assert column(out, "total") == pytest.approx(
        [None if r["amount"] is None or r["qty"] is None else r["amount"] * r["qty"] for r in rows],
        nan_ok=True,
    )
    assert column(out, "name") == [None if r["name"] is None else r["name"].upper() for r in rows]


def test_derive_data_error_is_terminal_data_error() -> None:
    with pytest.raises(ExpressionError, match="transforms\\[0\\] \\(derive\\)") as info:
        run(pa.table({"s": ["1", "x"]}), {"op": "derive", "column": "n", "expr": "CAST(s AS INTEGER)"})
    assert isinstance(info.value, DataError)


def test_fused_group_names_the_step_with_the_unknown_column() -> None:
    with pytest.raises(UnknownColumnError) as info:
        run(
            generated(),
            {"op": "filter", "expr": "amount > 0"},
            {"op": "derive", "column": "x", "expr": "amount + 1"},
            {"op": "derive", "column": "y", "expr": "missing_col * 2"},
        )
    assert (info.value.where, info.value.column) == ("transforms[2] (derive)", "missing_col")
    assert "x" in info.value.available  # columns as they are at that step


# ------------------------------------------------------------------------------------------- sql
def test_sql_step_aggregates_the_batch() -> None:
    table = generated()
    out = run(
        table,
        {
            "op": "sql",
            "query": "SELECT country, count(*) AS n, sum(qty) AS qty FROM batch "
            "WHERE country IS NOT NULL GROUP BY country ORDER BY country",
        },
    )
    expected: dict[str, list[int]] = {}
    for row in table.to_pylist():
        if row["country"] is not None:
            acc = expected.setdefault(row["country"], [0, 0])
            acc[0] += 1
            acc[1] += row["qty"] or 0
    assert out.to_pylist() == [{"country": c, "n": n, "qty": q} for c, (n, q) in sorted(expected.items())]


def test_sql_step_after_other_steps_sees_their_output() -> None:
    table = generated()
    out = run(
        table,
        {"op": "filter", "expr": "qty IS NOT NULL"},
        {"op": "sql", "query": "WITH b AS (SELECT id, qty FROM batch) SELECT max(qty) AS top FROM b"},
        {"op": "derive", "column": "top2", "expr": "top * 2"},
    )
    top = max(q for q in column(table, "qty") if q is not None)
    assert out.to_pylist() == [{"top": top, "top2": top * 2}]


def test_sql_must_be_a_single_select() -> None:
    with pytest.raises(ValidationError):
        SqlStep(query="DELETE FROM batch")
    for query in [
        "SELECT 1; SELECT 2",
        "WITH x AS (SELECT 1) DELETE FROM batch",
        "SELECT * FROM batch; DROP TABLE batch",
    ]:
        with pytest.raises(InvalidExpressionError):
            TransformEngine([SqlStep.model_construct(op="sql", query=query)])


# ----------------------------------------------------------------------------------- SQL sandbox
@pytest.mark.parametrize(
    ("op", "text"),
    [
        ("sql", "SELECT * FROM read_csv('/etc/passwd')"),
        ("sql", "SELECT * FROM read_text('/etc/hostname')"),
        ("sql", "SELECT * FROM glob('/etc/*')"),
        ("sql", "SELECT * FROM query('ATTACH ''/tmp/evil.db''')"),
        ("filter", "(SELECT count(*) FROM read_text('/etc/passwd')) > 0"),
        ("derive", "(SELECT content FROM read_text('/etc/hostname'))"),
    ],
)
def test_sql_cannot_reach_files(op: str, text: str) -> None:
    raw = {"op": op, "query": text} if op == "sql" else {"op": op, "expr": text, "column": "x"}
    if op == "filter":
        raw.pop("column")
    with pytest.raises(InvalidExpressionError) as info:  # ForbiddenSqlError or a parse refusal
        run(generated(10), raw)
    assert "root:" not in str(info.value)


def test_file_access_is_refused_as_forbidden() -> None:
    with pytest.raises(ForbiddenSqlError, match="not allowed"):
        run(generated(10), {"op": "sql", "query": "SELECT * FROM read_csv('/etc/passwd')"})


@pytest.mark.parametrize(
    "statement",
    [
        "COPY batch TO '/tmp/aoetl-leak.csv'",
        "ATTACH '/tmp/aoetl-evil.db' AS evil",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "PRAGMA enable_profiling",
    ],
)
def test_statements_other_than_select_are_refused_even_if_they_bypass_the_spec(statement: str) -> None:
    with pytest.raises(InvalidExpressionError):
        TransformEngine([SqlStep.model_construct(op="sql", query=statement)])


@pytest.mark.parametrize(
    "expr",
    [
        "1=1) ; COPY batch TO '/tmp/aoetl-leak.csv'; SELECT (1",
        "amount > 0) UNION ALL SELECT * FROM read_csv('/etc/passwd') WHERE (1=1",
        "amount > 0; DROP TABLE batch",
        "amount >",
    ],
)
def test_expressions_cannot_smuggle_sql(expr: str) -> None:
    with pytest.raises(InvalidExpressionError):
        TransformEngine(steps({"op": "filter", "expr": expr}))


def test_sandbox_cannot_read_python_variables() -> None:
    # DuckDB's Python client resolves an unknown table name to a variable of the calling frame; the sandbox
    # turns that off (twice: no external access, no replacement scans), so a query sees only ``batch``.
    secret_table = pa.table({"password": ["hunter2"]})
    conn = open_sandbox()
    with pytest.raises(duckdb.CatalogException, match="secret_table"):
        conn.sql("SELECT * FROM secret_table")
    assert secret_table.num_rows == 1
    conn.close()


def test_settings_cannot_be_changed_from_an_expression() -> None:
    with pytest.raises(InvalidExpressionError):
        run(
            generated(10),
            {"op": "filter", "expr": "(SELECT set_config('enable_external_access', 'true')) IS NULL"},
        )


# ----------------------------------------------------------------------------------- dedupe/mask/fill
def test_dedupe_keeps_first_occurrence_per_key() -> None:
    table = generated()
    out = run(table, {"op": "dedupe", "keys": ["id", "country"]})
    seen: set[tuple[Any, Any]] = set()
    expected = []
    for row in table.to_pylist():
        key = (row["id"], row["country"])
        if key not in seen:
            seen.add(key)
            expected.append(row)
    assert len(expected) < table.num_rows  # the data really had duplicates
    assert out.to_pylist() == expected


def test_mask_hash_is_salted_sha256_of_the_text() -> None:
    table = generated()
    out = run(table, {"op": "mask", "columns": ["name", "id"], "method": "hash"})

    def digest(value: Any) -> str | None:
        return None if value is None else hashlib.sha256(SALT + str(value).encode()).hexdigest()

    assert column(out, "name") == [digest(v) for v in column(table, "name")]
    assert column(out, "id") == [digest(v) for v in column(table, "id")]
    assert column(out, "amount") == column(table, "amount")


def test_mask_hash_depends_on_salt() -> None:
    table = pa.table({"s": ["x"]})
    [step] = steps({"op": "mask", "columns": ["s"]})
    with TransformEngine([step], mask_salt=b"a") as one, TransformEngine([step], mask_salt=b"b") as two:
        assert one.apply(table).column("s") != two.apply(table).column("s")


def test_mask_redact_and_partial() -> None:
    texts = ["4111111111111111", "abcde", "abcd", "ab", "", None, "héllo wörld"]
    table = pa.table({"r": texts, "p": texts})
    out = run(
        table,
        {"op": "mask", "columns": ["r"], "method": "redact"},
        {"op": "mask", "columns": ["p"], "method": "partial"},
    )

    def partial(v: str | None) -> str | None:
        if v is None:
            return None
        return "*" * len(v) if len(v) <= 4 else "*" * (len(v) - 4) + v[-4:]

    assert column(out, "r") == [None if v is None else "***" for v in texts]
    assert column(out, "p") == [partial(v) for v in texts]


def test_fill_replaces_nulls_with_value_cast_to_the_column_type() -> None:
    table = generated()
    out = run(table, {"op": "fill", "values": {"qty": 0, "amount": 1, "country": "??"}})
    assert out.schema == table.schema
    assert column(out, "qty") == [0 if v is None else v for v in column(table, "qty")]
    assert column(out, "amount") == [1.0 if v is None else v for v in column(table, "amount")]
    assert column(out, "country") == ["??" if v is None else v for v in column(table, "country")]


def test_fill_value_that_does_not_fit_the_type_is_refused() -> None:
    with pytest.raises(InvalidStepError, match="'qty'"):
        run(generated(), {"op": "fill", "values": {"qty": "many"}})


# ------------------------------------------------------------------------------ chaining and shapes
def test_chain_of_every_step_matches_a_python_reference() -> None:
    rng = random.Random(9)
    raw_rows: list[dict[str, Any]] = [
        {
            "id": str(rng.randrange(300)),
            "amount": rng.choice([None, f"{rng.uniform(0, 5000):,.2f}"]),
            "email": rng.choice([None, f"user{rng.randrange(99)}@example.com"]),
            "day": (dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(365))).isoformat(),
        }
        for _ in range(ROWS)
    ]
    out = run(
        pa.Table.from_pylist(raw_rows),
        {"op": "cast", "columns": {"id": "int64", "amount": "float64", "day": "date"}},
        {"op": "fill", "values": {"amount": 0}},
        {"op": "filter", "expr": "amount >= 100"},
        {"op": "derive", "column": "cents", "expr": "CAST(round(amount * 100) AS BIGINT)"},
        {"op": "dedupe", "keys": ["id"]},
        {"op": "mask", "columns": ["email"], "method": "redact"},
        {"op": "rename", "mapping": {"day": "order_day"}},
        {"op": "select", "columns": ["id", "cents", "email", "order_day"]},
    )
    expected, seen = [], set()
    for r in raw_rows:
        amount = float(r["amount"].replace(",", "")) if r["amount"] else 0.0
        if amount < 100 or int(r["id"]) in seen:
            continue
        seen.add(int(r["id"]))
        expected.append(
            {
                "id": int(r["id"]),
                "cents": round(amount * 100),
                "email": None if r["email"] is None else "***",
                "order_day": dt.date.fromisoformat(r["day"]),
            }
        )
    assert out.to_pylist() == expected


def test_empty_table_keeps_the_schema_through_every_step() -> None:
    table = generated().slice(0, 0)
    out = run(
        table,
        {"op": "filter", "expr": "amount > 0"},
        {"op": "derive", "column": "double", "expr": "amount * 2"},
        {"op": "dedupe", "keys": ["id"]},
        {"op": "fill", "values": {"qty": 0}},
        {"op": "mask", "columns": ["name"]},
    )
    assert out.num_rows == 0
    assert out.schema == table.schema.append(pa.field("double", pa.float64()))


def test_untouched_column_types_are_preserved() -> None:
    table = pa.table(
        {
            "i32": pa.array([1, 2, None], pa.int32()),
            "f32": pa.array([1.5, None, 2.5], pa.float32()),
            "day": pa.array([dt.date(2024, 1, 1), None, dt.date(2024, 1, 3)], pa.date32()),
            "ts": pa.array([0, 10**6, None], pa.timestamp("us", tz="Europe/Paris")),
            "ms": pa.array([0, 1, 2], pa.timestamp("ms")),
            "big": pa.array(["a", "b", None], pa.large_string()),
            "flag": pa.array([True, False, None]),
            "dec": pa.array([Decimal("1.25"), Decimal("2.00"), Decimal("3.50")], pa.decimal128(10, 2)),
        }
    )
    out = run(
        table,
        {"op": "filter", "expr": "dec > 0"},
        {"op": "derive", "column": "extra", "expr": "i32 + 1"},
        {"op": "dedupe", "keys": ["dec"]},
        {"op": "fill", "values": {"big": "z"}},
        {"op": "select", "columns": table.column_names},
    )
    assert out.schema == table.schema
    assert column(out, "ts") == column(table, "ts")
    assert column(out, "big") == ["a", "b", "z"]


# ----------------------------------------------------------------------------------- static checks
def test_output_columns_without_data() -> None:
    engine = TransformEngine(
        steps(
            {"op": "rename", "mapping": {"amount": "total"}},
            {"op": "derive", "column": "vat", "expr": "total * 0.2"},
            {"op": "filter", "expr": "lower(country) = 'fr'"},
            {"op": "sql", "query": "SELECT country, sum(vat) AS vat FROM batch GROUP BY country"},
        )
    )
    assert engine.output_columns(["id", "amount", "country"]) == ["country", "vat"]
    with pytest.raises(UnknownColumnError) as info:
        engine.output_columns(["id", "total", "country"])
    assert (info.value.where, info.value.column) == ("transforms[0] (rename)", "amount")


def test_output_columns_with_a_schema_checks_types_too() -> None:
    engine = TransformEngine(steps({"op": "derive", "column": "y", "expr": "x + 1"}))
    assert engine.output_columns(pa.schema([("x", pa.int64())])) == ["x", "y"]
    with pytest.raises(InvalidExpressionError, match="transforms\\[0\\] \\(derive\\)"):
        engine.output_columns(pa.schema([("x", pa.list_(pa.int64()))]))


def test_engine_reuse_across_batches_and_schemas() -> None:
    engine = TransformEngine(
        steps({"op": "filter", "expr": "x > 1"}, {"op": "derive", "column": "y", "expr": "x * 2"})
    )
    for batch in range(3):
        out = engine.apply(pa.table({"x": [batch, batch + 1, batch + 2]}))
        assert column(out, "y") == [2 * x for x in [batch, batch + 1, batch + 2] if x > 1]
    out = engine.apply(pa.table({"x": pa.array([5.5], pa.float64()), "z": ["k"]}))
    assert out.to_pylist() == [{"x": 5.5, "z": "k", "y": 11.0}]
    engine.close()


def test_engine_cache_reuses_engines_per_spec() -> None:
    cache = EngineCache(mask_salt=SALT, max_engines=2)
    a = cache.get(steps({"op": "filter", "expr": "x > 1"}))
    assert cache.get(steps({"op": "filter", "expr": "x > 1"})) is a
    assert cache.get(steps({"op": "filter", "expr": "x > 2"})) is not a
    cache.close()
