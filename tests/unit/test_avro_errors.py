"""Every way a message can be wrong gives its own typed, terminal error; nothing decodes silently wrong."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime

import pytest

from shared.avro.catalog import SchemaCatalog, SchemaEntry
from shared.avro.errors import (
    AvroDecodeError,
    InvalidRecordError,
    ModelValidationError,
    NotSingleObjectError,
    SchemaResolutionError,
    TrailingBytesError,
    TruncatedMessageError,
    UnknownFingerprintError,
    UnknownSchemaError,
)
from shared.avro.framing import MAGIC
from shared.avro.serde import AvroSerde
from shared.contracts import (
    Alert,
    AlertKind,
    ErrorInfo,
    EventKind,
    Origin,
    PipelineDefinition,
    RunEvent,
    Severity,
    Stage,
    TaskFailed,
)
from shared.errors import TerminalError, is_transient

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
EVENT = RunEvent(
    run_id="r1",
    kind=EventKind.TASK_FAILED,
    stage=Stage.EXTRACT,
    at=T0,
    error=ErrorInfo(error_class="X", message="boom"),
    payload=TaskFailed(attempt=1, origin=Origin(topic="aoetl.tasks", partition=0, offset=3)),
)


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    return AvroSerde()


@pytest.fixture(scope="module")
def message(serde: AvroSerde) -> bytes:
    return serde.encode(EVENT)


def test_a_valid_message_decodes(serde: AvroSerde, message: bytes) -> None:
    assert message[:2] == MAGIC
    assert message[2:10] == serde.catalog.fingerprint(RunEvent.avro_name)
    assert serde.decode(message, RunEvent) == EVENT


@pytest.mark.parametrize("data", [b"", b"\x00", b"hello world, not avro", b"{}", b"\x00\x00\x00\x00\x01\x02"])
def test_garbage_and_missing_magic(serde: AvroSerde, data: bytes) -> None:
    with pytest.raises(NotSingleObjectError):
        serde.decode(data, RunEvent)


def test_wrong_magic(serde: AvroSerde, message: bytes) -> None:
    with pytest.raises(NotSingleObjectError):
        serde.decode(b"\xc3\x02" + message[2:], RunEvent)


def test_every_truncation(serde: AvroSerde, message: bytes) -> None:
    for length in range(1, len(message)):
        with pytest.raises(TruncatedMessageError):
            serde.decode(message[:length], RunEvent)


def test_trailing_bytes(serde: AvroSerde, message: bytes) -> None:
    # fastavro itself would ignore these and return the record
    for tail in (b"\x00", b"extra bytes"):
        with pytest.raises(TrailingBytesError):
            serde.decode(message + tail, RunEvent)


def test_unknown_fingerprint(serde: AvroSerde, message: bytes) -> None:
    with pytest.raises(UnknownFingerprintError):
        serde.decode(MAGIC + bytes(8) + message[10:], RunEvent)


def test_wrong_writer_schema_for_the_reader(serde: AvroSerde) -> None:
    alert = serde.encode(Alert(kind=AlertKind.RUN_STUCK, severity=Severity.INFO, message="m", at=T0))
    with pytest.raises(SchemaResolutionError, match="name_mismatch"):
        serde.decode(alert, RunEvent)


def test_incompatible_old_writer_of_the_same_record(serde: AvroSerde) -> None:
    """A known writer version that lacks a field the reader needs (no default) cannot be resolved."""
    current = serde.catalog.entry(RunEvent.avro_name).json
    broken = copy.deepcopy(current)
    broken["fields"] = [f for f in broken["fields"] if f["name"] != "run_id"]
    old_writer = SchemaEntry.from_json(broken)
    reader_catalog = SchemaCatalog(serde.catalog.all_entries(), {"old": [old_writer]})
    datum = {k: v for k, v in serde.decode_record(serde.encode(EVENT)).items() if k != "run_id"}
    data = AvroSerde(SchemaCatalog([old_writer])).encode_record(RunEvent.avro_name, datum)
    with pytest.raises(SchemaResolutionError, match="run_id"):
        AvroSerde(reader_catalog).decode(data, RunEvent)


def test_body_that_is_not_the_writer_schema() -> None:
    """Failures inside fastavro (bad enum index, invalid UTF-8) become typed errors too."""
    entry = SchemaEntry.from_json(
        {
            "type": "record",
            "name": "t.R",
            "fields": [
                {"name": "e", "type": {"type": "enum", "name": "t.K", "symbols": ["A"]}},
                {"name": "s", "type": "string"},
            ],
        }
    )
    serde = AvroSerde(SchemaCatalog([entry]))
    header = MAGIC + entry.fingerprint
    assert serde.decode_record(header + b"\x00\x04ok") == {"e": "A", "s": "ok"}
    for body in (b"\x0e\x04ok", b"\x00\x04\xff\xfe"):
        with pytest.raises(NotSingleObjectError):
            serde.decode_record(header + body)


def test_random_bodies_never_escape_as_untyped_errors(serde: AvroSerde, message: bytes) -> None:
    rng = random.Random(20260304)
    for _ in range(2000):
        body = bytearray(message[10:])
        for _ in range(rng.randint(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        try:
            decoded = serde.decode(message[:10] + bytes(body), RunEvent)
        except AvroDecodeError:
            continue
        # a mutation that still decodes is a well-formed, fully consumed, validated record
        assert isinstance(decoded, RunEvent)


def test_decoded_record_must_satisfy_the_model(serde: AvroSerde) -> None:
    datum = serde.decode_record(serde.encode(_definition()))
    datum["spec"]["quality"] = [
        ("io.aoetl.spec.RangeRule", {"name": None, "on_fail": "fail", "column": "x", "min": 2.0, "max": 1.0})
    ]
    data = serde.encode_record(PipelineDefinition.avro_name, datum)
    with pytest.raises(ModelValidationError, match="greater"):
        serde.decode(data, PipelineDefinition)


def _definition() -> PipelineDefinition:
    from shared.spec.models import CsvSource, JsonlDestination, PipelineSpec

    spec = PipelineSpec(name="p", source=CsvSource(path="/x"), destination=JsonlDestination(path="/o"))
    return PipelineDefinition(name="p", spec=spec, updated_at=T0)


def test_invalid_records_fail_at_encode(serde: AvroSerde) -> None:
    good = serde.decode_record(serde.encode(EVENT))
    for bad in (
        {k: v for k, v in good.items() if k != "run_id"},  # missing field without default
        {**good, "rows_in": "many"},  # wrong type
        {**good, "kind": "NOT_A_KIND"},  # unknown enum symbol
        {**good, "details": {"a": 1}},  # map value of the wrong type
    ):
        with pytest.raises(InvalidRecordError):
            serde.encode_record(RunEvent.avro_name, bad)
    spec = serde.decode_record(serde.encode(_definition()))
    spec["spec"]["source"] = ("io.aoetl.spec.NoSuchSource", {"path": "/x"})
    with pytest.raises(InvalidRecordError):
        serde.encode_record(PipelineDefinition.avro_name, spec)
    with pytest.raises(UnknownSchemaError):
        serde.encode_record("io.aoetl.Nope", good)


def test_invalid_record_errors_name_the_wrong_field(serde: AvroSerde) -> None:
    good = serde.decode_record(serde.encode(EVENT))
    with pytest.raises(InvalidRecordError, match="rows_in"):
        serde.encode_record(RunEvent.avro_name, {**good, "rows_in": "many"})


def test_valid_records_encode_without_building_validation_errors(
    serde: AvroSerde, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the raising validation builds and formats an error per union branch not taken: the encode path
    # of a valid record must not pay for that (it was most of the cost of every record produced)
    import fastavro.validation

    built: list[object] = []
    original = fastavro.validation.ValidationError.__init__

    def counting(self: Exception, *errors: object) -> None:
        built.append(errors)
        original(self, *errors)

    monkeypatch.setattr(fastavro.validation.ValidationError, "__init__", counting)
    from tests.unit.test_contracts import rich_messages

    for sample in rich_messages():  # every optional field set somewhere: every union's other branch
        serde.encode(sample)
    assert built == []
    good = serde.decode_record(serde.encode(EVENT))
    with pytest.raises(InvalidRecordError):
        serde.encode_record(RunEvent.avro_name, {**good, "rows_in": "many"})
    assert built  # the counting sees the errors fastavro builds: the check above can fail


def test_all_avro_errors_are_terminal() -> None:
    for error in (NotSingleObjectError, UnknownFingerprintError, TruncatedMessageError, TrailingBytesError,
                  SchemaResolutionError, ModelValidationError, InvalidRecordError):  # fmt: skip
        assert issubclass(error, TerminalError)
        assert not is_transient(error("x"))


def test_every_truncation_of_every_message_type(serde: AvroSerde) -> None:
    from tests.unit.test_contracts import rich_messages

    for sample in rich_messages():
        data = serde.encode(sample)
        for length in range(1, len(data)):
            with pytest.raises(TruncatedMessageError):
                serde.decode(data[:length], type(sample))
        with pytest.raises(TrailingBytesError):
            serde.decode(data + b"\x00", type(sample))
