"""Event source connector, registry dispatch and the agent-facing catalog."""

from __future__ import annotations

import json

import pytest

from shared.connectors import (
    SourceReadError,
    UnsupportedSourceError,
    connector_catalog,
    plan_splits,
    read_split,
)
from shared.connectors.base import allocate, rebatch
from shared.contracts import SplitKind
from shared.errors import is_transient
from shared.plugins import installed
from shared.spec.models import EventSource, KafkaSource

pytestmark = pytest.mark.unit


def read_all(source: EventSource, payload: bytes, batch_rows: int = 2) -> list[dict[str, object]]:
    splits = plan_splits(source, 4, payload=payload)
    assert [s.kind for s in splits] == [SplitKind.EVENT]
    return [r for t in read_split(source, splits[0], batch_rows, payload=payload) for r in t.to_pylist()]


def test_list_object_and_records_path() -> None:
    rows = [{"id": 1, "v": "a"}, {"id": 2, "v": None}, {"id": 3, "v": "c"}]
    assert read_all(EventSource(), json.dumps(rows).encode()) == rows
    assert read_all(EventSource(), b'{"id": 7}') == [{"id": 7}]
    doc = {"data": {"items": rows}}
    assert read_all(EventSource(records_path="data.items"), json.dumps(doc).encode()) == rows


def test_bad_payloads_are_terminal() -> None:
    for source, payload in [
        (EventSource(), b"not json"),
        (EventSource(), b"[1, 2]"),
        (EventSource(records_path="data.items"), b'{"data": {}}'),
    ]:
        with pytest.raises(SourceReadError) as info:
            plan_splits(source, None, payload=payload)
        assert not is_transient(info.value)
    with pytest.raises(SourceReadError, match="no payload"):
        plan_splits(EventSource(), None)


def test_all_null_column_is_typed_string() -> None:
    source = EventSource()
    payload = b'[{"a": 1, "b": null}]'
    table = next(iter(read_split(source, plan_splits(source, 1, payload=payload)[0], 10, payload=payload)))
    assert str(table.schema.field("b").type) == "string"


def test_unsupported_source_type() -> None:
    with pytest.raises(UnsupportedSourceError, match="kafka"):
        plan_splits(KafkaSource(topic="t"), None)


def test_catalog_lists_every_connector_with_options() -> None:
    catalog = connector_catalog()
    builtin = {"csv", "jsonl", "parquet", "postgres", "http", "event"}
    assert set(catalog) == builtin | set(installed().sources)  # plus the installed plugins' sources
    assert "path" in catalog["csv"].options
    assert "split_column" in catalog["postgres"].options
    assert all(info.description and info.split_kinds for info in catalog.values())


def test_allocate_and_rebatch_helpers() -> None:
    assert allocate([100, 300], 4, caps=[10, 10]) == [1, 3]
    assert allocate([1, 1000], 10, caps=[1, 1000]) == [1, 9]
    assert allocate([5, 5], 1, caps=[5, 5]) == [1, 1]  # never fewer splits than files
    import pyarrow as pa

    batches = [pa.record_batch({"x": list(range(n))}) for n in (3, 0, 10, 1)]
    sizes = [t.num_rows for t in rebatch(batches, 4)]
    assert sizes == [4, 4, 4, 2]
