"""Plugin objects for the registry's unit tests, named by fabricated entry points
(``tests.unit.plugin_fakes:<name>``): one good plugin per declared field kind, and one broken plugin per
check the registry makes at load."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import Field

from shared.connectors.base import describe, whole_split
from shared.contracts import Split, SplitKind
from shared.spec.base import StrictModel
from shared.spec.plugins import Checked, PluginSource, PluginStep


class GuardedSource(PluginSource):
    """Every kind of declared field, for the policy tests."""

    type: Literal["guarded"] = "guarded"
    input_path: Annotated[str | None, Checked.INPUT_PATH] = None
    url: Annotated[str | None, Checked.URL] = None
    query: Annotated[str | None, Checked.SQL] = None
    topic: Annotated[str | None, Checked.TOPIC] = None
    connection: Annotated[str | None, Checked.HTTP_CONNECTION] = None
    extra_paths: Annotated[list[str], Checked.INPUT_PATH] = Field(default_factory=list)


class _Source:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.info = describe(model, "a test source", (SplitKind.WHOLE,))

    def plan(
        self, source: Any, parallelism: int | None, *, payload: bytes | None, batch_rows: int
    ) -> list[Split]:
        return whole_split()

    def read(
        self, source: Any, split: Split, batch_rows: int, *, payload: bytes | None
    ) -> Iterator[pa.Table]:
        yield pa.table({"x": [1]})


guarded = _Source(GuardedSource)


class ExplodingStep(PluginStep):
    op: Literal["explode"] = "explode"


class _Exploding:
    model = ExplodingStep
    description = "raises whatever third-party code raises"

    def apply(self, step: Any, table: pa.Table, *, where: str) -> pa.Table:
        raise KeyError("a bug in the plugin")


explode = _Exploding()


# ----------------------------------------------------------------------------------------- broken ones
class _NoRead:
    model = GuardedSource
    info = guarded.info

    def plan(self, *args: Any, **kwargs: Any) -> list[Split]:
        return whole_split()


no_read = _NoRead()


class NotAPluginModel(StrictModel):
    type: Literal["plain"] = "plain"


plain_model = _Source(NotAPluginModel)


class OtherName(PluginSource):
    type: Literal["someone_else"] = "someone_else"


wrong_name = _Source(OtherName)


class CsvAgain(PluginSource):
    type: Literal["csv"] = "csv"


builtin_clash = _Source(CsvAgain)


class UndeclaredPath(PluginSource):
    type: Literal["sneaky"] = "sneaky"
    output_dir: str  # a directory written, without Checked.OUTPUT_PATH: the policy could not see it
    token_env: str | None = None


sneaky = _Source(UndeclaredPath)


class NoSchema(PluginSource):
    type: Literal["opaque"] = "opaque"
    hook: Any = Field(default=None, json_schema_extra=lambda schema: (_ for _ in ()).throw(TypeError("no")))


opaque = _Source(NoSchema)
