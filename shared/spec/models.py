"""The declarative pipeline spec: source, transform steps, quality rules, destination, run parameters.

These pydantic models are the single source of truth for what a pipeline may say. The same shape travels
on Kafka as typed Avro records (``schemas/io.aoetl.spec.*.avsc``); ``tests/unit/test_contracts.py`` proves
the two agree. Every union is discriminated by one literal field (``type``, ``op`` or ``rule``) so that a
validation error names the exact branch and field that is wrong. Installed plugins add their own types
to the source, step and destination unions (``shared.spec.plugins``). The quality rules are in
``shared.spec.quality`` (``OnFail`` is importable from here too, as most of its users do).

Secrets never travel in a spec: a connector names a *connection* (``connection``) that the operator
declared, and the service that needs its secret reads it locally (``shared.policy.connections``). The
older ``dsn_env`` / ``auth_env`` (an environment variable's name) are deprecated: still read, so specs and
messages written before connections decode, but accepted by the policy only when they name the variable
of a declared connection.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from shared.spec.base import StrictModel
from shared.spec.plugins import PluginDestination, PluginSource, PluginStep, PluginUnion
from shared.spec.quality import OnFail as OnFail  # re-exported: most of its users import it from here
from shared.spec.quality import QualityRule, RowCountRule

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
PIPELINE_NAME = r"^[a-z][a-z0-9_\-]{0,62}$"
CONNECTION_NAME = r"^[A-Za-z][A-Za-z0-9_.\-]{0,62}$"


# --------------------------------------------------------------------------------------------- types
class DataType(StrEnum):
    STRING = "string"
    INT64 = "int64"
    FLOAT64 = "float64"
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMP = "timestamp"


class WriteMode(StrEnum):
    APPEND = "append"
    REPLACE = "replace"  # atomic swap at the end of the run
    MERGE = "merge"  # upsert on ``keys``


class MaskMethod(StrEnum):
    HASH = "hash"  # salted SHA-256 hex, stable across runs so joins still work
    REDACT = "redact"  # replaced by a fixed marker
    PARTIAL = "partial"  # keep the last 4 characters


class Pagination(StrEnum):
    NONE = "none"
    PAGE = "page"  # ?page=N until an empty page
    CURSOR = "cursor"  # next cursor read from a response field
    LINK = "link"  # RFC 8288 Link: <...>; rel="next"


class StreamFormat(StrEnum):
    AVRO = "avro"
    JSON = "json"


# ------------------------------------------------------------------------------------------- sources
class CsvSource(StrictModel):
    type: Literal["csv"] = "csv"
    path: str = Field(description="file path, file:// URL or glob; or s3://bucket/key (a glob in the key)")
    connection: str | None = Field(
        None, pattern=CONNECTION_NAME, description="s3:// paths only: the declared s3 connection"
    )
    delimiter: str = Field(",", min_length=1, max_length=1)
    has_header: bool = True
    null_values: list[str] = Field(default_factory=lambda: ["", "NA", "null", "NULL"])


class JsonlSource(StrictModel):
    type: Literal["jsonl"] = "jsonl"
    path: str = Field(description="file path, file:// URL or glob; or s3://bucket/key (a glob in the key)")
    connection: str | None = Field(
        None, pattern=CONNECTION_NAME, description="s3:// paths only: the declared s3 connection"
    )


class ParquetSource(StrictModel):
    type: Literal["parquet"] = "parquet"
    path: str = Field(description="file path, file:// URL or glob; or s3://bucket/key (a glob in the key)")
    connection: str | None = Field(
        None, pattern=CONNECTION_NAME, description="s3:// paths only: the declared s3 connection"
    )


_DEPRECATED = "deprecated: use 'connection' (accepted only as the variable of a declared connection)"


def _one_way_to_name_a_connection(connection: str | None, deprecated: str | None, old: str) -> None:
    if connection is not None and deprecated is not None:
        raise ValueError(f"give 'connection' only: '{old}' is deprecated and means the same thing")


class PostgresSource(StrictModel):
    type: Literal["postgres"] = "postgres"
    connection: str | None = Field(
        None, pattern=CONNECTION_NAME, description="declared connection holding the DSN; unset: 'default'"
    )
    table: str | None = Field(None, description="schema-qualified table; or give query")
    query: str | None = Field(None, description="a SELECT; or give table")
    cursor_column: str | None = Field(None, description="incremental: only rows with cursor > last value")
    cursor_start: str | None = Field(None, description="exclusive lower bound for cursor_column")
    split_column: str | None = Field(None, description="integer column used to split into key ranges")
    dsn_env: str | None = Field(None, description=_DEPRECATED)

    @model_validator(mode="after")
    def _one_connection(self) -> PostgresSource:
        _one_way_to_name_a_connection(self.connection, self.dsn_env, "dsn_env")
        return self

    @model_validator(mode="after")
    def _table_xor_query(self) -> PostgresSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.query is not None and not re.match(r"(?is)^\s*(select|with)\b", self.query):
            raise ValueError("'query' must be a SELECT (or WITH ... SELECT)")
        return self


class HttpSource(StrictModel):
    type: Literal["http"] = "http"
    url: str = Field(pattern=r"^https?://")
    records_path: str | None = Field(None, description="dotted path to the record list in each response")
    pagination: Pagination = Pagination.NONE
    page_param: str = "page"
    cursor_param: str = "cursor"
    cursor_path: str | None = Field(None, description="dotted path to the next cursor in each response")
    connection: str | None = Field(
        None,
        pattern=CONNECTION_NAME,
        description="declared http connection holding the Authorization header; unset: no credentials",
    )
    rate_limit_per_s: float | None = Field(None, gt=0)
    max_pages: int | None = Field(None, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    auth_env: str | None = Field(None, description=_DEPRECATED)

    @model_validator(mode="after")
    def _one_connection(self) -> HttpSource:
        _one_way_to_name_a_connection(self.connection, self.auth_env, "auth_env")
        return self

    @model_validator(mode="after")
    def _cursor_needs_path(self) -> HttpSource:
        if self.pagination is Pagination.CURSOR and not self.cursor_path:
            raise ValueError("pagination 'cursor' needs 'cursor_path'")
        return self


class KafkaSource(StrictModel):
    """A continuous pipeline reads a topic until it is stopped."""

    type: Literal["kafka"] = "kafka"
    topic: str = Field(min_length=1)
    format: StreamFormat = StreamFormat.JSON


class EventSource(StrictModel):
    """The records carried by the triggering event (webhook body or topic event)."""

    type: Literal["event"] = "event"
    records_path: str | None = Field(None, description="dotted path to the record list in the payload")


BuiltinSource = Annotated[
    CsvSource | JsonlSource | ParquetSource | PostgresSource | HttpSource | KafkaSource | EventSource,
    Field(discriminator="type"),
]
# Installed plugin sources join the union at validation time (``shared.spec.plugins``).
Source = Annotated[BuiltinSource | PluginSource, PluginUnion.of("source", BuiltinSource)]


# ---------------------------------------------------------------------------------------- transforms
class SelectStep(StrictModel):
    op: Literal["select"] = "select"
    columns: list[Annotated[str, Field(pattern=IDENTIFIER)]] = Field(min_length=1)


class RenameStep(StrictModel):
    op: Literal["rename"] = "rename"
    mapping: dict[str, Annotated[str, Field(pattern=IDENTIFIER)]] = Field(min_length=1)


class CastStep(StrictModel):
    op: Literal["cast"] = "cast"
    columns: dict[str, DataType] = Field(min_length=1)
    formats: dict[str, str] = Field(
        default_factory=dict, description="strptime format per date/timestamp column"
    )


class FilterStep(StrictModel):
    op: Literal["filter"] = "filter"
    expr: str = Field(min_length=1, description="SQL boolean expression; rows where it is true are kept")


class DeriveStep(StrictModel):
    op: Literal["derive"] = "derive"
    column: str = Field(pattern=IDENTIFIER)
    expr: str = Field(min_length=1, description="SQL expression over the batch's columns")


class SqlStep(StrictModel):
    op: Literal["sql"] = "sql"
    query: str = Field(description="a SELECT over the table named 'batch'")

    @field_validator("query")
    @classmethod
    def _select_only(cls, v: str) -> str:
        if not re.match(r"(?is)^\s*(select|with)\b", v):
            raise ValueError("must be a SELECT (or WITH ... SELECT) over 'batch'")
        return v


class DedupeStep(StrictModel):
    op: Literal["dedupe"] = "dedupe"
    keys: list[str] = Field(min_length=1)


class MaskStep(StrictModel):
    op: Literal["mask"] = "mask"
    columns: list[str] = Field(min_length=1)
    method: MaskMethod = MaskMethod.HASH


FillValue = str | int | float | bool


class FillStep(StrictModel):
    op: Literal["fill"] = "fill"
    values: dict[str, FillValue] = Field(min_length=1)


BuiltinStep = Annotated[
    SelectStep | RenameStep | CastStep | FilterStep | DeriveStep | SqlStep | DedupeStep | MaskStep | FillStep,
    Field(discriminator="op"),
]
TransformStep = Annotated[BuiltinStep | PluginStep, PluginUnion.of("step", BuiltinStep)]


# -------------------------------------------------------------------------------------- destinations
class PostgresDestination(StrictModel):
    type: Literal["postgres"] = "postgres"
    connection: str | None = Field(
        None, pattern=CONNECTION_NAME, description="declared connection holding the DSN; unset: 'default'"
    )
    table: str = Field(pattern=r"^([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*$")
    mode: WriteMode = WriteMode.APPEND
    keys: list[str] = Field(default_factory=list, description="merge keys")
    dsn_env: str | None = Field(None, description=_DEPRECATED)

    @model_validator(mode="after")
    def _one_connection(self) -> PostgresDestination:
        _one_way_to_name_a_connection(self.connection, self.dsn_env, "dsn_env")
        return self

    @model_validator(mode="after")
    def _merge_keys(self) -> PostgresDestination:
        if self.mode is WriteMode.MERGE and not self.keys:
            raise ValueError("mode 'merge' needs 'keys'")
        return self


class DuckDBDestination(StrictModel):
    type: Literal["duckdb"] = "duckdb"
    path: str
    table: str = Field(pattern=IDENTIFIER)
    mode: WriteMode = WriteMode.APPEND
    keys: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _merge_keys(self) -> DuckDBDestination:
        if self.mode is WriteMode.MERGE and not self.keys:
            raise ValueError("mode 'merge' needs 'keys'")
        return self


class ParquetDestination(StrictModel):
    type: Literal["parquet"] = "parquet"
    path: str = Field(
        description="a directory (or an s3://bucket/prefix); one file (object) per batch, written atomically"
    )
    connection: str | None = Field(
        None, pattern=CONNECTION_NAME, description="s3:// paths only: the declared s3 connection"
    )


class JsonlDestination(StrictModel):
    type: Literal["jsonl"] = "jsonl"
    path: str = Field(
        description="a directory (or an s3://bucket/prefix); one file (object) per batch, written atomically"
    )
    connection: str | None = Field(
        None, pattern=CONNECTION_NAME, description="s3:// paths only: the declared s3 connection"
    )


class KafkaDestination(StrictModel):
    type: Literal["kafka"] = "kafka"
    topic: str = Field(min_length=1)


BuiltinDestination = Annotated[
    PostgresDestination | DuckDBDestination | ParquetDestination | JsonlDestination | KafkaDestination,
    Field(discriminator="type"),
]
Destination = Annotated[
    BuiltinDestination | PluginDestination, PluginUnion.of("destination", BuiltinDestination)
]


# ------------------------------------------------------------------------------------------ the spec
class RunParameters(StrictModel):
    parallelism: int | None = Field(None, ge=1, le=1024, description="splits; None lets the planner pick")
    batch_rows: int = Field(50_000, ge=1, le=1_000_000)
    timeout_s: int = Field(3600, ge=1)
    max_retries: int = Field(3, ge=0, le=20)
    stuck_after_s: int = Field(300, ge=1, description="no progress for this long raises an alert")


class PipelineSpec(StrictModel):
    name: str = Field(pattern=PIPELINE_NAME)
    description: str | None = None
    source: Source
    transforms: list[TransformStep] = Field(default_factory=list)
    quality: list[QualityRule] = Field(default_factory=list)
    destination: Destination
    run: RunParameters = Field(default_factory=RunParameters)

    @property
    def continuous(self) -> bool:
        """A kafka source never ends: the run reads its topic until it is stopped."""
        return isinstance(self.source, KafkaSource)

    @model_validator(mode="after")
    def _continuous_needs_an_open_end(self) -> PipelineSpec:
        # Both need the end of the run, which a continuous pipeline never reaches.
        if not self.continuous:
            return self
        if getattr(self.destination, "mode", None) is WriteMode.REPLACE:
            raise ValueError(
                "a kafka source never ends, so it cannot 'replace' its destination: use append or merge"
            )
        if any(isinstance(rule, RowCountRule) for rule in self.quality):
            raise ValueError("row_count is checked at the end of a run, and a kafka source never ends")
        return self
