"""Profiling messy samples: every inference the suggestions rely on."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from shared.agent.errors import UnprofilableSourceError
from shared.agent.pii import PiiKind
from shared.agent.profile import profile_source, profile_table
from shared.agent.sources import source_from_argument
from shared.spec.models import CsvSource, DataType, JsonlSource, ParquetSource, PostgresSource
from tests.unit.agent_data import write_csv, write_jsonl, write_orders_csv

pytestmark = pytest.mark.unit


@pytest.fixture
def orders(tmp_path: Path) -> Path:
    return write_orders_csv(tmp_path / "orders.csv")


def test_types_nulls_and_formats_of_messy_orders(orders: Path) -> None:
    profile = profile_source(source_from_argument(str(orders)))
    col = profile.column
    assert profile.sampled_rows == 44
    assert col("order_id").inferred_type is DataType.INT64
    amount = col("amount")
    assert (amount.inferred_type, amount.thousands_separator) == (DataType.FLOAT64, True)
    assert amount.min == 3.25 and amount.max == 2480.5
    qty = col("qty")
    assert qty.inferred_type is DataType.INT64
    assert qty.na_markers == ["-", "N/A"]  # the empty cells were already null from the reader
    assert qty.null_count == 5 and qty.null_rate == pytest.approx(5 / 44)
    assert col("order_date").inferred_type is DataType.DATE
    assert col("order_date").formats == ["%Y-%m-%d", "%d/%m/%Y"]
    assert col("created_at").inferred_type is DataType.TIMESTAMP and col("created_at").cast_format is None
    assert col("active").inferred_type is DataType.BOOLEAN
    assert col("zip").inferred_type is DataType.STRING  # leading zeros must survive
    assert col("status").top_values and sorted(col("status").top_values) == [
        "cancelled",
        "pending",
        "shipped",
    ]


def test_keys_duplicates_and_pii(orders: Path) -> None:
    profile = profile_source(source_from_argument(str(orders)))
    assert profile.key_duplicates == {"order_id": 4}
    assert profile.duplicate_rows == 4
    assert profile.candidate_keys == []  # order_id repeats, so it is not unique
    assert profile.column("customer_email").pii is PiiKind.EMAIL
    assert profile.column("phone").pii is PiiKind.PHONE
    assert profile.column("card").pii is PiiKind.CARD_NUMBER
    # PII values are never listed, even for a low-cardinality column.
    assert profile.column("card").top_values == []


def test_luhn_separates_card_numbers_from_other_long_digit_strings(tmp_path: Path) -> None:
    rows = [
        ["4111111111111111", "4111111111111112", "1234567890123"],
        ["5500000000000004", "5500000000000005", "2234567890123"],
    ]
    path = write_csv(tmp_path / "cards.csv", ["good", "bad", "plain"], rows * 3)
    profile = profile_source(CsvSource(path=str(path)))
    assert profile.column("good").pii is PiiKind.CARD_NUMBER
    assert profile.column("bad").pii is None
    assert profile.column("plain").pii is None


def test_single_non_iso_formats_and_ambiguity(tmp_path: Path) -> None:
    rows = [
        ["05/01/2024", "01/31/2024", "2024/03/04", "05/01/2024 10:30"],
        ["06/02/2024", "02/28/2024", "2024/12/31", "31/12/2024 23:59"],
    ]
    path = write_csv(tmp_path / "dates.csv", ["ambiguous", "us", "slashed", "stamp"], rows)
    profile = profile_source(CsvSource(path=str(path)))
    ambiguous = profile.column("ambiguous")
    assert ambiguous.cast_format == "%d/%m/%Y" and any("ambiguous" in n for n in ambiguous.notes)
    assert profile.column("us").cast_format == "%m/%d/%Y"
    assert profile.column("slashed").cast_format == "%Y/%m/%d"
    stamp = profile.column("stamp")
    assert (stamp.inferred_type, stamp.cast_format) == (DataType.TIMESTAMP, "%d/%m/%Y %H:%M")


def test_unique_columns_are_candidate_keys_key_like_names_first(tmp_path: Path) -> None:
    rows = [[f"n{i}", str(i), "x" if i % 2 else "y"] for i in range(10)]
    path = write_csv(tmp_path / "k.csv", ["label", "customer_id", "flag"], rows)
    profile = profile_source(CsvSource(path=str(path)))
    assert profile.candidate_keys == ["customer_id", "label"]


def test_typed_jsonl_columns_keep_their_types(tmp_path: Path) -> None:
    records = [
        {"id": i, "score": i / 2, "ok": i % 2 == 0, "tags": ["a"], "note": "N/A" if i == 3 else "x"}
        for i in range(6)
    ]
    profile = profile_source(JsonlSource(path=str(write_jsonl(tmp_path / "r.jsonl", records))))
    assert profile.column("id").inferred_type is DataType.INT64 and profile.column("id").unique
    assert not profile.column("id").needs_cast
    assert profile.column("score").inferred_type is DataType.FLOAT64
    assert profile.column("ok").inferred_type is DataType.BOOLEAN
    assert profile.column("tags").inferred_type is None
    assert profile.column("note").na_markers == ["N/A"]
    assert profile.candidate_keys == ["id"]


def test_profile_of_an_in_memory_table_without_source() -> None:
    table = pa.table({"v": pa.array(["1,234", " 7 ", "None", None])})
    profile = profile_table(table)
    column = profile.column("v")
    assert column.inferred_type is DataType.INT64
    assert (column.min, column.max, column.null_count) == (7, 1234, 2)
    assert profile.sample is table


def test_source_arguments(tmp_path: Path, orders: Path) -> None:
    assert isinstance(source_from_argument(str(orders)), CsvSource)
    assert source_from_argument(str(tmp_path / "x.tsv")).delimiter == "\t"  # type: ignore[union-attr]
    assert isinstance(source_from_argument(str(tmp_path / "x.parquet")), ParquetSource)
    inline = source_from_argument('{"type": "postgres", "table": "public.orders"}')
    assert isinstance(inline, PostgresSource) and inline.table == "public.orders"
    spec_file = tmp_path / "src.yaml"
    spec_file.write_text(f"source:\n  type: jsonl\n  path: {tmp_path}/a.jsonl\n", encoding="utf-8")
    assert isinstance(source_from_argument(str(spec_file)), JsonlSource)
    with pytest.raises(UnprofilableSourceError, match="suffix"):
        source_from_argument(str(tmp_path / "data.xlsx"))
    with pytest.raises(UnprofilableSourceError, match=r"source\.postgres"):
        source_from_argument('{"type": "postgres"}')


def test_sources_without_rows_cannot_be_profiled(tmp_path: Path) -> None:
    empty = write_csv(tmp_path / "empty.csv", ["a", "b"], [])
    with pytest.raises(UnprofilableSourceError, match="no rows"):
        profile_source(CsvSource(path=str(empty)))
    with pytest.raises(UnprofilableSourceError, match="kafka"):
        profile_source(source_from_argument('{"type": "kafka", "topic": "t"}'))
