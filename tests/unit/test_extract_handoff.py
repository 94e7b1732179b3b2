"""How extract hands a batch on (services.extract.handoff): to the transform service, or chained, through
the transform stage in extract itself, with the same outputs the transform service would have made of
the same rows: the fold, the sinks and the dead letters cannot tell the two topologies apart."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from services.extract.handoff import ChainedTransform, ReadBatch, ToTransform, handoff_for
from shared.batch import decode_table
from shared.contracts import DataBatch, DeadLetter, EventKind, Origin, RunEvent, Stage
from shared.kafka.topics import Topics
from shared.processing import Output
from shared.spec import parse_spec
from shared.transform.batches import BatchTransformer

SALT = b"test-salt"
HEADERS = [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]


def topic(name: str) -> str:
    return f"{name}.t"


def spec(quality: list[dict[str, Any]] | None = None) -> Any:
    return parse_spec(
        {
            "name": "orders",
            "source": {"type": "csv", "path": "/data/in/orders.csv"},
            "transforms": [
                {"op": "cast", "columns": {"id": "int64", "amount": "float64", "qty": "int64"}},
                {"op": "filter", "expr": "status <> 'cancelled'"},
                {"op": "derive", "column": "total", "expr": "amount * qty"},
            ],
            "quality": quality or [],
            "destination": {"type": "postgres", "table": "orders"},
        }
    )


def rows() -> pa.Table:
    return pa.table(
        {
            "id": ["1", "2", "3", "4", "5"],
            "status": ["paid", "cancelled", "paid", "paid", "shipped"],
            "amount": ["10.5", "3", "-2", "7.25", "1"],
            "qty": ["2", "1", "4", "1", "3"],
        }
    )


def read_batch(quality: list[dict[str, Any]] | None = None) -> ReadBatch:
    origin = Origin(topic=topic(Topics.TASKS), partition=3, offset=41, key=b"run-1:task-0")
    batch_id = "run-1:task-0:0"
    return ReadBatch("run-1", "run-1:task-0", batch_id, 0, spec(quality), rows(), batch_id, origin, HEADERS)


def comparable(output: Output) -> tuple[str, Any, dict[str, Any]]:
    """An output without what differs between any two runs of the same work (ids, clocks, durations),
    with its Arrow payload as rows."""
    value = output.value.model_dump()
    for volatile in ("event_id", "at", "produced_at", "duration_ms", "dead_letter_id", "failed_at"):
        value.pop(volatile, None)
    if isinstance(output.value, DataBatch | DeadLetter):
        value["payload"] = decode_table(output.value.payload).to_pylist()
    return output.topic, output.key, value


QUALITY = [
    {"rule": "range", "column": "amount", "min": 0, "on_fail": "quarantine"},
    {"rule": "not_null", "columns": ["id"], "on_fail": "warn"},
]


def test_unchained_the_rows_go_encoded_to_the_transform_service() -> None:
    (output,) = ToTransform(topic).hand_off(read_batch())
    assert output.topic == topic(Topics.DATA_EXTRACTED)
    assert output.key == "run-1:task-0:0" and output.headers == HEADERS
    assert isinstance(output.value, DataBatch) and output.value.stage is Stage.EXTRACT
    assert decode_table(output.value.payload).equals(rows())


def test_chained_outputs_are_the_transform_services_for_the_same_rows() -> None:
    batch = read_batch(QUALITY)
    chained = list(ChainedTransform(topic, "extract-1", mask_salt=SALT).hand_off(batch))
    # what the transform service makes of the batch the unchained extract would have produced
    (extracted,) = ToTransform(topic).hand_off(batch)
    assert isinstance(extracted.value, DataBatch)
    service = BatchTransformer(topic, "extract-1", mask_salt=SALT)
    extracted_rows = decode_table(extracted.value.payload)
    apart = list(service.transform(extracted.value, extracted_rows, batch.key, batch.origin))
    assert [comparable(o) for o in chained] == [comparable(o) for o in apart]
    kinds = [o.value.kind if isinstance(o.value, RunEvent) else type(o.value).__name__ for o in chained]
    assert kinds == [EventKind.QUALITY_VIOLATION, "DeadLetter", "DataBatch", EventKind.BATCH_TRANSFORMED]
    (loaded,) = [o for o in chained if o.topic == topic(Topics.DATA_TRANSFORMED)]
    assert isinstance(loaded.value, DataBatch) and loaded.value.stage is Stage.TRANSFORM
    kept = decode_table(loaded.value.payload)
    assert kept.column("id").to_pylist() == [1, 4, 5]  # 2 cancelled (filtered), 3 quarantined (amount < 0)
    assert kept.column("total").to_pylist() == [21.0, 7.25, 3.0]
    (letter,) = [o.value for o in chained if isinstance(o.value, DeadLetter)]
    assert letter.origin == batch.origin and letter.stage is Stage.TRANSFORM  # the task it was read for
    assert all(o.headers == HEADERS for o in chained), "every record continues the batch's trace"


def test_a_failing_rule_stops_the_chained_batch_like_the_transform_service() -> None:
    batch = read_batch([{"rule": "range", "column": "amount", "min": 0, "on_fail": "fail"}])
    chained = list(ChainedTransform(topic, "extract-1", mask_salt=SALT).hand_off(batch))
    assert [o.topic for o in chained] == [topic(Topics.EVENTS)]  # the violation, which fails the run
    assert isinstance(chained[0].value, RunEvent) and chained[0].value.kind is EventKind.QUALITY_VIOLATION


def test_a_closed_chain_starts_afresh() -> None:
    chain = handoff_for(True, topic, "extract-1", mask_salt=SALT)
    first = [comparable(o) for o in chain.hand_off(read_batch())]
    chain.close()
    assert [comparable(o) for o in chain.hand_off(read_batch())] == first
    chain.close()
    assert isinstance(handoff_for(False, topic, "extract-1", mask_salt=SALT), ToTransform)
