"""The metrics the services export, read from the code's own registries (one source of truth for the
dashboards' and the alert rules' tests): importing every service's entry module defines every metric
family that service can serve, on the process-wide registry, with its label names."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from aoetl.devstack import SERVICE_NAMES

# The series names a family of each type is exposed under (the text format's suffixes).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    labels: tuple[str, ...]

    @property
    def series(self) -> tuple[str, ...]:
        return tuple(self.name + suffix for suffix in _SUFFIXES[self.type])


def load_services() -> None:
    for name in SERVICE_NAMES:
        importlib.import_module(f"services.{name}.service")


def exported_families() -> dict[str, Family]:
    """Every family on the default registry once each service's modules are imported, by name."""
    load_services()
    label_names: dict[str, tuple[str, ...]] = {}
    # The registry maps each series name to its collector; the label names are the collector's own
    # (prometheus_client keeps them on the wrapper, for families that have no child yet to show them).
    for collector in set(REGISTRY._names_to_collectors.values()):
        if isinstance(collector, MetricWrapperBase):
            label_names[collector._name] = tuple(collector._labelnames)
    families: dict[str, Family] = {}
    for family in REGISTRY.collect():
        labels = label_names.get(family.name) or tuple(
            sorted({label for sample in family.samples for label in sample.labels if label != "le"})
        )
        families[family.name] = Family(family.name, family.type, labels)
    return families


def exported_series() -> set[str]:
    """Every series name a scrape of some service can show."""
    return {series for family in exported_families().values() for series in family.series}


TARGET_LABELS = frozenset({"job", "instance"})  # added by the scrape to every series


def series_labels() -> dict[str, frozenset[str]]:
    """Every series name a scrape can show, with the label names a query can match on it (its own, the
    target's, and ``le`` on a histogram's buckets); ``up``, which Prometheus writes itself, included."""
    labels: dict[str, frozenset[str]] = {"up": TARGET_LABELS}
    for family in exported_families().values():
        for series in family.series:
            extra = {"le"} if series.endswith("_bucket") else set()
            labels[series] = frozenset(family.labels) | TARGET_LABELS | extra
    return labels
