"""A spec's source and destination as OpenLineage datasets: namespace, name and the columns it declares.

Naming follows the OpenLineage dataset conventions where the spec says enough:

* files (csv, jsonl, parquet source; parquet, jsonl destination): namespace ``file``, name the path
  (a ``file://`` URL's path; a glob stays a glob: it is what the pipeline reads);
* http: namespace ``<scheme>://<host>[:<port>]``, name the URL's path. The query string and fragment are
  dropped (tokens travel there), and so is any userinfo;
* kafka: namespace ``kafka://<the monitor's bootstrap servers>``, name the topic;
* postgres: namespace ``postgres://<connection name>``, name the table (or ``query`` for a query source).
  A connection's DSN is a secret the monitor neither holds nor should publish, so the connection's name,
  which the operator declared, stands for the server;
* duckdb: namespace ``duckdb://<database path>``, name the table;
* event (a webhook payload): namespace ``aoetl``, name ``event:<pipeline>``.

Every name and namespace also goes through ``shared.redaction.redact``, so a secret this process knows
cannot reach a lineage backend even from a spec that put one in a path.

Columns: run events carry no Arrow schema, so the schema facet holds what the spec declares. The output's
columns are followed through the transforms (select, rename, cast, derive, fill, mask, dedupe keep them
knowable; a ``sql`` step makes them unknown again); the input's are the columns the first steps read
(a leading ``select`` and ``cast``) and the quality rules check. Types are known where a ``cast`` says
them. No known column: no schema facet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shared.redaction import redact
from shared.spec.models import (
    CastStep,
    CsvSource,
    DeriveStep,
    DuckDBDestination,
    EventSource,
    HttpSource,
    JsonlDestination,
    JsonlSource,
    KafkaDestination,
    KafkaSource,
    ParquetDestination,
    ParquetSource,
    PipelineSpec,
    PostgresDestination,
    PostgresSource,
    RenameStep,
    SelectStep,
    SqlStep,
)

FILE_NAMESPACE = "file"
EVENT_NAMESPACE = "aoetl"


@dataclass(frozen=True)
class Column:
    name: str
    type: str | None = None


@dataclass(frozen=True)
class Dataset:
    namespace: str
    name: str
    columns: tuple[Column, ...] = field(default_factory=tuple)

    def to_table(self) -> dict[str, object]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "columns": [[c.name, c.type] for c in self.columns],
        }

    @classmethod
    def from_table(cls, data: dict[str, object]) -> Dataset:
        columns = data.get("columns") or []
        assert isinstance(columns, list)
        return cls(
            str(data["namespace"]),
            str(data["name"]),
            tuple(Column(str(name), None if kind is None else str(kind)) for name, kind in columns),
        )


def _path(path: str) -> str:
    return urlsplit(path).path if path.startswith("file://") else path


def _http(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}", parts.path or "/"


def _clean(namespace: str, name: str, columns: tuple[Column, ...]) -> Dataset:
    return Dataset(redact(namespace), redact(name), columns)


def source_dataset(spec: PipelineSpec, kafka_bootstrap: str) -> Dataset:
    source = spec.source
    columns = input_columns(spec)
    if isinstance(source, CsvSource | JsonlSource | ParquetSource):
        return _clean(FILE_NAMESPACE, _path(source.path), columns)
    if isinstance(source, HttpSource):
        return _clean(*_http(source.url), columns)
    if isinstance(source, KafkaSource):
        return _clean(f"kafka://{kafka_bootstrap}", source.topic, columns)
    if isinstance(source, PostgresSource):
        return _clean(f"postgres://{source.connection or 'default'}", source.table or "query", columns)
    assert isinstance(source, EventSource)
    return _clean(EVENT_NAMESPACE, f"event:{spec.name}", columns)


def destination_dataset(spec: PipelineSpec, kafka_bootstrap: str) -> Dataset:
    destination = spec.destination
    columns = output_columns(spec)
    if isinstance(destination, ParquetDestination | JsonlDestination):
        return _clean(FILE_NAMESPACE, _path(destination.path), columns)
    if isinstance(destination, KafkaDestination):
        return _clean(f"kafka://{kafka_bootstrap}", destination.topic, columns)
    if isinstance(destination, PostgresDestination):
        return _clean(f"postgres://{destination.connection or 'default'}", destination.table, columns)
    assert isinstance(destination, DuckDBDestination)
    return _clean(f"duckdb://{_path(destination.path)}", destination.table, columns)


def input_columns(spec: PipelineSpec) -> tuple[Column, ...]:
    """The columns the spec says it reads: a leading select's and cast's, then the quality rules'."""
    names: dict[str, str | None] = {}
    for step in spec.transforms:
        if isinstance(step, SelectStep):
            names.update((c, names.get(c)) for c in step.columns)
        elif isinstance(step, CastStep):
            names.update((c, t.value) for c, t in step.columns.items())
        else:
            break  # later steps read columns earlier steps made
    if not spec.transforms:
        for rule in spec.quality:
            for column in _rule_columns(rule):
                names.setdefault(column, None)
    return tuple(Column(n, t) for n, t in names.items())


def _rule_columns(rule: object) -> list[str]:
    column = getattr(rule, "column", None)
    columns = getattr(rule, "columns", None)
    found = [column] if isinstance(column, str) else []
    if isinstance(columns, list):
        found += [c for c in columns if isinstance(c, str)]
    return found


def output_columns(spec: PipelineSpec) -> tuple[Column, ...]:
    """The columns after every transform, as far as the steps say (unknown after a ``sql`` step)."""
    columns: dict[str, str | None] | None = None  # None: not known
    for step in spec.transforms:
        if isinstance(step, SelectStep):
            known = columns or {}
            columns = {c: known.get(c) for c in step.columns}
        elif isinstance(step, RenameStep) and columns is not None:
            columns = {step.mapping.get(c, c): t for c, t in columns.items()}
        elif isinstance(step, CastStep):
            columns = {**(columns or {}), **{c: t.value for c, t in step.columns.items()}}
        elif isinstance(step, DeriveStep) and columns is not None:
            columns[step.column] = None
        elif isinstance(step, SqlStep):
            columns = None
    return tuple(Column(n, t) for n, t in (columns or {}).items())
