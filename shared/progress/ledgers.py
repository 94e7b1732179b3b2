"""The ledgers a run's progress fold (``shared.progress.folding``) keeps: one per stage (``StageLedger``:
every unit counted once into the stage's ``Figures``) and one per quality rule (``RuleLedger``), plus the
read-only views of a rule's outcome (``RuleQuality``, ``RuleTotals``).

A ledger decides what counts; the fold decides which event feeds which ledger. **Counted once**: a unit
(a batch id, or a one-shot extract's task id) is counted the first time it is recorded; recording it again
changes nothing, except that an *applied* load delivery replaces a non-applied stand-in (the precedence of
``Figures.applied``, explained in the fold's docstring). **Bounded**: ``settle`` forgets the oldest units
beyond a window, their figures staying in the total.

Pure and serialisable like the fold (pydantic models and a NamedTuple, JSON arrays in the stored form).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import Stage, StageStats
from shared.spec.models import OnFail


class Figures(NamedTuple):
    """A unit's figures, or a stage's totals (a JSON array in the stored form)."""

    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    batches: int = 0
    duration_ms: int = 0
    applied: bool = True  # a unit's precedence: an applied delivery beats a non-applied one
    # Load only: the bytes the units put in the destination, and how many units did not say (their sink
    # does not know, or an event before RunEvent v11). Two sums, so a stand-in's share can be taken back.
    bytes_written: int = 0
    bytes_unknown: int = 0

    @property
    def bytes(self) -> int | None:
        """The bytes of all the units, None if any of them is unknown."""
        return None if self.bytes_unknown else self.bytes_written

    def plus(self, other: Figures, sign: int = 1) -> Figures:
        """The sum (``sign=-1``: the difference) of two figures, as a total (precedence does not add)."""
        return Figures(
            rows_in=self.rows_in + sign * other.rows_in,
            rows_out=self.rows_out + sign * other.rows_out,
            rows_rejected=self.rows_rejected + sign * other.rows_rejected,
            batches=self.batches + sign * other.batches,
            duration_ms=self.duration_ms + sign * other.duration_ms,
            bytes_written=self.bytes_written + sign * other.bytes_written,
            bytes_unknown=self.bytes_unknown + sign * other.bytes_unknown,
        )


class StageLedger(BaseModel):
    """One stage: every unit counted once into ``total``; the newest units' keys remembered (oldest first)
    to recognise their duplicates, with their batch count (what a one-shot task's split produced), and a
    non-applied load unit's figures until an applied delivery may replace them."""

    model_config = ConfigDict(extra="ignore")

    seen: dict[str, int] = Field(default_factory=dict, description="tracked unit -> its batches")
    stand_ins: dict[str, Figures] = Field(default_factory=dict, description="tracked non-applied units")
    total: Figures = Figures()
    counted: int = Field(0, description="units counted, tracked or settled")

    def record(self, key: str, figures: Figures) -> bool:
        """Count a unit's figures; True if they count now (a new unit, or an applied delivery replacing
        the non-applied stand-in)."""
        if key not in self.seen:
            self.seen[key] = figures.batches
            self.total = self.total.plus(figures)
            self.counted += 1
            if not figures.applied:
                self.stand_ins[key] = figures
            return True
        stand_in = self.stand_ins.get(key)
        if figures.applied and stand_in is not None:
            del self.stand_ins[key]
            self.seen[key] = figures.batches
            self.total = self.total.plus(figures).plus(stand_in, -1)
            return True
        return False

    def settle(self, window: int | None) -> list[str]:
        """Forget the oldest units beyond ``window`` (their figures stay in the total); their keys."""
        excess = 0 if window is None else len(self.seen) - window
        if excess <= 0:
            return []
        oldest = [key for key, _ in zip(self.seen, range(excess), strict=False)]
        for key in oldest:
            del self.seen[key]
            self.stand_ins.pop(key, None)
        return oldest

    def forget(self) -> None:
        self.seen.clear()
        self.stand_ins.clear()

    def stats(self, stage: Stage) -> StageStats:
        t = self.total
        return StageStats(
            stage=stage,
            rows_in=t.rows_in,
            rows_out=t.rows_out,
            rows_rejected=t.rows_rejected,
            batches=t.batches,
            duration_ms=t.duration_ms,
        )


class RuleLedger(BaseModel):
    model_config = ConfigDict(extra="ignore")

    on_fail: OnFail = Field(description="the level of its latest violation (healing may lower it)")
    reason: str
    failed: bool = Field(False, description="violated at level fail: the run failed or was healed")
    failed_rows: int = Field(0, description="failed rows of transformed batches, counted once")
    samples: list[str] = Field(default_factory=list, description="its first distinct failing values")


@dataclass(frozen=True)
class RuleQuality:
    """A rule's outcome so far."""

    rule: str
    on_fail: OnFail
    failed: bool
    reason: str
    failed_rows: int
    checked_rows: int

    @property
    def fraction(self) -> float:
        return self.failed_rows / self.checked_rows if self.checked_rows else 0.0


@dataclass(frozen=True)
class RuleTotals:
    """A rule's rows checked and failed as the transform evaluated it (see "Per rule" above)."""

    rule: str
    on_fail: OnFail
    failed: bool
    rows_checked: int
    rows_failed: int
    samples: tuple[str, ...]

    @property
    def fraction(self) -> float:
        return self.rows_failed / self.rows_checked if self.rows_checked else 0.0
