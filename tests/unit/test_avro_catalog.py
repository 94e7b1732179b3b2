"""The catalog: fingerprints as the Avro spec defines them, expanded standalone schemas, history."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.avro.catalog import SchemaCatalog, fingerprint_of, schemas_dir
from shared.avro.errors import UnknownSchemaError
from shared.avro.framing import MAGIC
from shared.avro.serde import AvroSerde
from shared.contracts import MESSAGE_TYPES, EventKind, PipelineResult, RunEvent, Stage

pytestmark = pytest.mark.unit


def test_fingerprint_matches_the_avro_reference_value() -> None:
    # Java: SchemaNormalization.parsingFingerprint64(Schema.create(NULL)) == 0x63dd24e7cc258f8a;
    # the single-object header carries it little-endian
    assert fingerprint_of('"null"') == (0x63DD24E7CC258F8A).to_bytes(8, "little")


def test_catalog_is_loaded_once() -> None:
    assert SchemaCatalog.default() is SchemaCatalog.default()


def test_every_message_schema_is_standalone() -> None:
    catalog = SchemaCatalog.default()
    for model in MESSAGE_TYPES:
        entry = catalog.entry(model.avro_name)
        assert entry.name == model.avro_name
        assert catalog.by_fingerprint(entry.fingerprint) is entry.parsed
        # the canonical form alone defines every named type it uses: nothing refers outside it
        assert (
            SchemaCatalog([entry.from_json(json.loads(entry.canonical_form))]).fingerprint(entry.name)
            == entry.fingerprint
        )


def test_unknown_names_and_fingerprints() -> None:
    catalog = SchemaCatalog.default()
    with pytest.raises(UnknownSchemaError):
        catalog.schema("io.aoetl.Missing")
    assert catalog.by_fingerprint(bytes(8)) is None


def test_every_message_type_has_history_ending_at_the_current_schema() -> None:
    catalog = SchemaCatalog.default()
    assert set(catalog.history_names()) == {m.avro_name for m in MESSAGE_TYPES}
    for name in catalog.history_names():
        versions = catalog.history(name)
        assert versions, name
        assert versions[-1].canonical_form == catalog.entry(name).canonical_form, (
            f"{name} changed: add schemas/history/{name}/v{len(versions) + 1}.avsc"
        )
        assert all(v.name == name for v in versions)
    assert len(catalog.history(RunEvent.avro_name)) >= 2, "RunEvent v2 proves evolution"


def test_old_writer_version_still_decodes() -> None:
    """RunEvent v1 had no ``instance``; the current reader fills in its default."""
    catalog = SchemaCatalog.default()
    v1 = catalog.history(RunEvent.avro_name)[0]
    assert v1.fingerprint != catalog.fingerprint(RunEvent.avro_name)
    old_writer = AvroSerde(SchemaCatalog([v1]))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    datum = {"event_id": "e", "run_id": "r", "kind": "RUN_PLANNED", "stage": "orchestrate", "at": at,
             "task_id": None, "batch_id": None, "rows_in": 1, "rows_out": 2, "rows_rejected": 0, "batches": 0,
             "duration_ms": 3, "error": None, "details": {}}  # fmt: skip
    data = old_writer.encode_record(RunEvent.avro_name, datum)
    assert data[2:10] == v1.fingerprint
    event = AvroSerde().decode(data, RunEvent)
    assert event == RunEvent(
        **{**datum, "kind": EventKind.RUN_PLANNED, "stage": Stage.ORCHESTRATE}, instance=""
    )


def test_header_is_single_object_encoding() -> None:
    serde = AvroSerde()
    event = RunEvent(run_id="r", kind=EventKind.RUN_ACCEPTED, stage=Stage.GATEWAY)
    data = serde.encode(event)
    assert data[:2] == MAGIC == b"\xc3\x01"
    assert data[2:10] == serde.catalog.fingerprint(RunEvent.avro_name)


def test_schemas_dir_is_the_repository_folder() -> None:
    assert schemas_dir() == Path(__file__).resolve().parents[2] / "schemas"


def test_file_names_must_match_the_type(tmp_path: Path) -> None:
    (tmp_path / "wrong.avsc").write_text(json.dumps({"type": "enum", "name": "a.E", "symbols": ["X"]}))
    with pytest.raises(UnknownSchemaError, match=r"a\.E\.avsc"):
        SchemaCatalog.load(tmp_path)


def test_references_across_files_are_inlined_once(tmp_path: Path) -> None:
    (tmp_path / "a.E.avsc").write_text(
        json.dumps({"type": "enum", "name": "E", "namespace": "a", "symbols": ["X"]})
    )
    fields = [{"name": "one", "type": "a.E"}, {"name": "two", "type": ["null", "E"], "default": None}]
    (tmp_path / "a.R.avsc").write_text(
        json.dumps({"type": "record", "name": "R", "namespace": "a", "fields": fields})
    )
    catalog = SchemaCatalog.load(tmp_path)
    expanded = catalog.entry("a.R").json
    assert expanded["fields"][0]["type"]["symbols"] == ["X"]  # defined at first use
    assert expanded["fields"][1]["type"] == ["null", "a.E"]  # referenced afterwards


def test_a_lookup_with_the_expected_name_fingerprints_only_that_name() -> None:
    """``aoetl run`` reads two types: it must not pay for fingerprinting the whole catalog (~0.3 CPU-s)."""
    catalog = SchemaCatalog.load()
    v1 = catalog.history(RunEvent.avro_name)[0]
    current = catalog.entry(RunEvent.avro_name)
    assert catalog.entry_by_fingerprint(v1.fingerprint, RunEvent.avro_name) is v1
    assert catalog.entry_by_fingerprint(current.fingerprint, RunEvent.avro_name) is current
    assert catalog._fingerprint_index is None
    # a writer of another name than expected is still found, through the whole index
    other = catalog.entry(PipelineResult.avro_name)
    assert catalog.entry_by_fingerprint(other.fingerprint, RunEvent.avro_name) is other
    assert catalog._fingerprint_index is not None
    assert catalog.entry_by_fingerprint(bytes(8), RunEvent.avro_name) is None


def test_a_writer_of_the_current_version_is_found_without_fingerprinting_the_history() -> None:
    """The common case, a writer of this code's own version: one fingerprint, not one per version."""
    catalog = SchemaCatalog.load()
    current = catalog.entry(RunEvent.avro_name)
    assert catalog.entry_by_fingerprint(current.fingerprint, RunEvent.avro_name) is current
    assert all("fingerprint" not in vars(e) for e in catalog.history(RunEvent.avro_name))
    assert RunEvent.avro_name not in catalog._named_indexes
    v1 = catalog.history(RunEvent.avro_name)[0]  # an older writer still resolves, through the history
    assert catalog.entry_by_fingerprint(v1.fingerprint, RunEvent.avro_name) is v1
