"""CSV connector: byte-range splits reassemble to exactly the input rows, whatever the boundaries."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from shared.connectors import SourceNotFoundError, SourceReadError, plan_splits, read_split
from shared.connectors.lines import AUTO_SPLIT_BYTES, LEAD_SPLIT_BYTES, plan_byte_ranges
from shared.contracts import SplitKind
from shared.spec.models import CsvSource

pytestmark = pytest.mark.unit


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def rows_of(n: int) -> list[dict[str, str | None]]:
    # Varying widths put split boundaries at every position within a line.
    return [
        {"id": str(i), "name": f"name-{'x' * (i % 7)}{i}", "note": None if i % 5 == 0 else f"n{i}"}
        for i in range(n)
    ]


def to_csv(rows: list[dict[str, str | None]]) -> str:
    body = "".join(f"{r['id']},{r['name']},{r['note'] if r['note'] is not None else ''}\n" for r in rows)
    return "id,name,note\n" + body


def read_all(source: CsvSource, parallelism: int | None, batch_rows: int = 7) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    splits = plan_splits(source, parallelism)
    assert [s.index for s in splits] == list(range(len(splits)))
    assert all(s.count == len(splits) for s in splits)
    for split in splits:
        for table in read_split(source, split, batch_rows):
            assert 0 < table.num_rows <= batch_rows
            assert table.schema == pa.schema([(c, pa.string()) for c in ("id", "name", "note")])
            out.extend(table.to_pylist())
    return out


@pytest.mark.parametrize("parallelism", [1, 2, 3, 7, 16, 97, 1000])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_splits_reassemble_exactly(tmp_path: Path, parallelism: int, newline: str) -> None:
    rows = rows_of(500)
    path = write(tmp_path / "data.csv", to_csv(rows), newline)
    source = CsvSource(path=str(path))
    splits = plan_splits(source, parallelism)
    assert {s.kind for s in splits} == {SplitKind.BYTE_RANGE}
    assert len(splits) == parallelism
    assert read_all(source, parallelism) == rows


def test_every_boundary_position(tmp_path: Path) -> None:
    """Cut a small file at every byte offset: each line belongs to exactly one side."""
    rows = rows_of(12)
    path = write(tmp_path / "data.csv", to_csv(rows))
    size = path.stat().st_size
    source = CsvSource(path=str(path))
    template = plan_splits(source, 1)[0]
    for cut in range(size + 1):
        left = template.model_copy(update={"start": 0, "end": cut})
        right = template.model_copy(update={"start": cut, "end": size})
        got = [r for s in (left, right) for t in read_split(source, s, 5) for r in t.to_pylist()]
        assert got == rows, f"cut at byte {cut}"


def test_no_trailing_newline(tmp_path: Path) -> None:
    rows = rows_of(50)
    path = write(tmp_path / "data.csv", to_csv(rows).rstrip("\n"))
    assert read_all(CsvSource(path=str(path)), 6) == rows


def test_header_only_and_empty_files_yield_no_batches(tmp_path: Path) -> None:
    for name, text in [
        ("header.csv", "id,name,note\n"),
        ("header_no_nl.csv", "id,name,note"),
        ("empty.csv", ""),
    ]:
        source = CsvSource(path=str(write(tmp_path / name, text)))
        splits = plan_splits(source, 4)
        assert splits
        assert [t for s in splits for t in read_split(source, s, 10)] == []


def test_glob_of_several_files_is_sorted_and_complete(tmp_path: Path) -> None:
    rows = rows_of(300)
    for i, chunk in enumerate([rows[:100], rows[100:250], rows[250:]]):
        write(tmp_path / f"part-{2 - i}.csv", to_csv(chunk))  # names sort in reverse of row order
    source = CsvSource(path=str(tmp_path / "part-*.csv"))
    expected = rows[250:] + rows[100:250] + rows[:100]
    for parallelism in (1, 3, 5, 11):
        splits = plan_splits(source, parallelism)
        assert len(splits) == max(3, parallelism)
        assert read_all(source, parallelism) == expected
    assert read_all(CsvSource(path=(tmp_path / "part-*.csv").as_uri()), 2) == expected


def test_auto_parallelism_small_file_is_one_split(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", to_csv(rows_of(10)))
    assert len(plan_splits(CsvSource(path=path.as_uri()), None)) == 1


def test_missing_file_and_empty_glob(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError):
        plan_splits(CsvSource(path=str(tmp_path / "nope.csv")), None)
    with pytest.raises(SourceNotFoundError):
        plan_splits(CsvSource(path=str(tmp_path / "*.csv")), None)


def test_file_removed_after_planning(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", to_csv(rows_of(3)))
    source = CsvSource(path=str(path))
    split = plan_splits(source, 1)[0]
    path.unlink()
    with pytest.raises(SourceNotFoundError):
        list(read_split(source, split, 10))


def test_malformed_line_reports_absolute_line_and_describes_it_without_its_content(tmp_path: Path) -> None:
    lines = to_csv(rows_of(40)).splitlines(keepends=True)
    lines[31] = "31,zqxwv,many,plugh\n"  # line 32 of the file
    path = write(tmp_path / "bad.csv", "".join(lines))
    source = CsvSource(path=str(path))
    described = r"line 32: expected 3 columns, got 4 \(the line: <19 characters"
    with pytest.raises(SourceReadError, match=described) as info:
        for split in plan_splits(source, 3):
            list(read_split(source, split, 10))
    assert "zqxwv" not in str(info.value) and "plugh" not in str(info.value)


def test_null_markers_delimiter_and_quoted_empty(tmp_path: Path) -> None:
    path = write(tmp_path / "semi.csv", 'a;b;c\n1;NA;""\n;x;null\n')
    source = CsvSource(path=str(path), delimiter=";", null_values=["NA", "", "null"])
    assert read_all_raw(source, 1) == [{"a": "1", "b": None, "c": ""}, {"a": None, "b": "x", "c": None}]


def test_no_header_names_columns_f0_fn(tmp_path: Path) -> None:
    path = write(tmp_path / "nohdr.csv", "1,a\n2,b\n3,c\n")
    source = CsvSource(path=str(path), has_header=False)
    assert read_all_raw(source, 2) == [{"f0": "1", "f1": "a"}, {"f0": "2", "f1": "b"}, {"f0": "3", "f1": "c"}]


def test_quoted_newlines_fall_back_to_one_split_per_file(tmp_path: Path) -> None:
    text = 'id,comment\n1,"multi\nline"\n' + "".join(f"{i},plain{i}\n" for i in range(2, 200))
    path = write(tmp_path / "quoted.csv", text)
    source = CsvSource(path=str(path))
    splits = plan_splits(source, 8)
    assert len(splits) == 1
    got = read_all_raw(source, 8)
    assert len(got) == 199
    assert got[0] == {"id": "1", "comment": "multi\nline"}


def test_different_headers_across_files_rejected(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "id,name\n1,x\n")
    write(tmp_path / "b.csv", "id,other\n2,y\n")
    with pytest.raises(SourceReadError, match="differs"):
        plan_splits(CsvSource(path=str(tmp_path / "*.csv")), None)


def read_all_raw(source: CsvSource, parallelism: int) -> list[dict[str, object]]:
    return [
        r for s in plan_splits(source, parallelism) for t in read_split(source, s, 3) for r in t.to_pylist()
    ]


@pytest.mark.parametrize(
    "header",
    ['id,"full name","say ""hi""",x\n', "a;b;c\r\n", '"",b,\n', "only\n", "é,ü\n"],
)
def test_header_names_are_the_ones_arrow_reads(tmp_path: Path, header: str) -> None:
    # The header is parsed with the csv module (fast) and the data with Arrow: they must agree.
    import pyarrow.csv as pacsv

    delimiter = ";" if ";" in header else ","
    path = write(tmp_path / "h.csv", header + header.replace("\r\n", "\n").replace("\n", "") + "\n")
    arrow = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter)).column_names
    source = CsvSource(path=str(path), delimiter=delimiter)
    (split,) = plan_splits(source, None)
    (table,) = read_split(source, split, 10)
    assert table.column_names == arrow


def test_an_unterminated_quote_in_the_header_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.csv", 'id,"name\n1,a\n')
    with pytest.raises(SourceReadError, match="line 1"):
        plan_splits(CsvSource(path=str(path)), None)


def test_auto_plan_leads_with_a_small_split() -> None:
    """An automatic plan that cuts a file starts it with a LEAD_SPLIT_BYTES split (the first rows reach
    load sooner); the ranges still cover every byte once, in order; an explicit parallelism is exact."""
    size = 57_000_000
    (ranges,) = plan_byte_ranges([size], None)
    assert ranges[0] == (0, LEAD_SPLIT_BYTES)
    assert len(ranges) == -(-size // AUTO_SPLIT_BYTES) + 1
    assert [start for start, _ in ranges[1:]] == [end for _, end in ranges[:-1]] and ranges[-1][1] == size
    assert plan_byte_ranges([size], 4) == [[(size * i // 4, size * (i + 1) // 4) for i in range(4)]]
    assert plan_byte_ranges([5_000_000], None) == [[(0, 5_000_000)]]  # not cut: no lead split
    second = plan_byte_ranges([20 << 20, 20 << 20], None)[1]
    assert second[0][1] - second[0][0] > LEAD_SPLIT_BYTES  # only the first file leads
