"""The run history's record: one ``RunSummary`` per run on the compacted runs topic (``Topics.RUNS``,
key run id), the latest replacing the earlier ones, kept beyond the events' retention.

It is written by the monitor (``services.monitor.history``) from the one fold of the run's events
(``shared.progress``) and read by ``aoetl runs list`` and by ``aoetl status`` once a run's events are gone.
A summary says what a listing needs and no more: who, which pipeline, when, how it ended, how many rows,
the bytes loaded (v2; None when a sink cannot say), the latest error (its message redacted again here, as
every ``ErrorInfo`` is, and cut short).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from shared.contracts.base import DEFAULT_TENANT, Contract, ErrorInfo, RunStatus, utcnow


class RunSummary(Contract):
    """The latest summary of one run (see the module docstring)."""

    avro_name: ClassVar[str] = "io.aoetl.RunSummary"
    run_id: str
    pipeline: str | None = None
    tenant: str = DEFAULT_TENANT
    status: RunStatus | None = Field(None, description="None while the run is in progress")
    continuous: bool = False
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rows_extracted: int = 0
    rows_transformed: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    batches_loaded: int = 0
    bytes_loaded: int | None = Field(None, description="None when a batch could not say (v2)")
    rules_violated: int = 0
    rows_failed_quality: int = 0
    error: ErrorInfo | None = None
    as_of: datetime = Field(default_factory=utcnow, description="when the summary was written")

    @property
    def finished(self) -> bool:
        return self.status is not None

    @property
    def newest_first_key(self) -> datetime:
        """What a listing sorts by, newest first: submission, else the earliest time the summary knows."""
        return self.submitted_at or self.started_at or self.finished_at or self.as_of
