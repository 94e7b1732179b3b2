"""Histograms read off the services' own ``/metrics`` (Prometheus text format), for the benches that say
where the time goes: a bench scrapes before and after a step, and the difference is that step's work
alone (the services' counters are cumulative since they started).

Quantiles are the upper bound of the bucket the quantile falls in: an upper estimate, what a Prometheus
user would read with ``histogram_quantile``'s worst case; the mean (sum / count) is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Histogram:
    """Cumulative bucket counts by upper bound, with the sum and count, summed over processes."""

    buckets: dict[float, float] = field(default_factory=dict)
    sum: float = 0.0
    count: float = 0.0

    def minus(self, before: Histogram) -> Histogram:
        return Histogram(
            {b: c - before.buckets.get(b, 0.0) for b, c in self.buckets.items()},
            self.sum - before.sum,
            self.count - before.count,
        )


def scrape(ports: Iterable[int], name: str, **labels: str) -> Histogram:
    """The histogram family ``name`` (e.g. ``aoetl_batch_seconds``) of every process on ``ports``, its
    series with ``labels`` only (all of them without)."""
    out = Histogram()
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            if family.name != name:
                continue
            for sample in family.samples:
                if any(sample.labels.get(k) != v for k, v in labels.items()):
                    continue
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    out.buckets[bound] = out.buckets.get(bound, 0.0) + sample.value
                elif sample.name.endswith("_sum"):
                    out.sum += sample.value
                elif sample.name.endswith("_count"):
                    out.count += sample.value
    return out


def counter_total(ports: Iterable[int], name: str) -> float:
    """The counter family ``name`` (e.g. ``aoetl_stream_batches``), all its labels, summed over processes."""
    total = 0.0
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            if family.name == name:
                total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def quantiles_ms(buckets: Mapping[float, float], qs: Mapping[str, float]) -> dict[str, float | None]:
    """Bucket upper bounds (ms) of the quantiles ``qs`` (name -> q) of cumulative ``buckets``."""
    counts = sorted(buckets.items())
    total = counts[-1][1] if counts else 0.0
    out: dict[str, float | None] = {}
    for name, q in qs.items():
        bound = next((b for b, c in counts if total and c >= q * total), None)
        out[name] = None if bound is None else round(bound * 1000, 2)
    return out


def summary(step: Histogram) -> dict[str, float | int | None]:
    """One step's observations: how many, their exact mean and bucketed p50/p99 (ms)."""
    return {
        "n": int(step.count),
        "mean_ms": round(1000 * step.sum / step.count, 2) if step.count else None,
        **quantiles_ms(step.buckets, {"p50_ms": 0.5, "p99_ms": 0.99}),
    }
