"""Errors of the transform engine and the quality checker.

Used by the transform service, the orchestrator (run-level rules) and the agent (dry runs on sample
rows), which is why they live in the common library. Everything here is terminal: a spec that does not fit
the data, or data that does not fit the spec, cannot be fixed by retrying. ``where`` always names the spec
location (``transforms[2] (filter)`` or ``quality[0] (range:amount)``) so that a user, or the agent, can
find the step to change.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.errors import ConfigurationError, DataError

_MAX_LISTED = 20


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


class UnknownColumnError(ConfigurationError):
    """A step or rule names a column that the table does not have at that point of the pipeline."""

    def __init__(self, where: str, column: str, available: Sequence[str]) -> None:
        self.where = where
        self.column = column
        self.available = list(available)
        super().__init__(f"{where}: unknown column {column!r}; available columns: {_listing(self.available)}")


class InvalidExpressionError(ConfigurationError):
    """A SQL expression or query does not parse, does not bind, or is not allowed (not a single SELECT)."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        self.detail = detail
        super().__init__(f"{where}: {detail}")


class ForbiddenSqlError(InvalidExpressionError):
    """The SQL tried to reach outside the in-memory batch (files, network, extensions, settings)."""


class InvalidStepError(ConfigurationError):
    """A step cannot work on this table (a rename that makes two columns of one name, a fill value that
    does not fit the column type...)."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        self.detail = detail
        super().__init__(f"{where}: {detail}")


class InvalidRuleError(InvalidStepError):
    """A quality rule cannot be evaluated on this column (range over text, a regex the engine lacks...)."""


class CastError(DataError):
    """Some values of a column cannot be converted to the requested type. ``examples`` are descriptions of
    the first bad values (``casting.describe_bad_value``), never the values: they are shown as given."""

    def __init__(self, where: str, column: str, target: str, bad_count: int, examples: Sequence[str]) -> None:
        self.where = where
        self.column = column
        self.target = target
        self.bad_count = bad_count
        self.examples = list(examples)
        shown = ", ".join(self.examples)
        super().__init__(
            f"{where}: cannot cast column {column!r} to {target}: {bad_count} bad value(s), e.g. {shown}"
        )


class SandboxLimitError(DataError):
    """A batch exceeded what the transform's DuckDB may use (memory, time): a smaller batch or a cheaper
    step, or a higher limit from the operator, is needed."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        self.detail = detail
        super().__init__(f"{where}: {detail}")


class ExpressionError(DataError):
    """A SQL expression failed on the data itself (a cast inside the expression, an overflow...)."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        self.detail = detail
        super().__init__(f"{where}: {detail}")
