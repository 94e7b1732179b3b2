"""Settings of the monitor service (prefix ``AOETL_``): rule thresholds, timer intervals, the consumer
groups whose lag it reports, where alerts are delivered (``alert_routing``, prefix
``AOETL_ALERT_ROUTING_``: ``services.monitor.routing``) and lineage (``lineage``, ``AOETL_LINEAGE_``:
``services.monitor.lineage``). Every interval is configurable so tests can run
the rules in seconds."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field

from services.monitor.lineage.settings import LineageSettings
from services.monitor.routing.settings import AlertRoutingSettings
from shared.settings import LogLevel, ServiceSettings

DEFAULT_LAG_GROUPS = ("aoetl-extract", "aoetl-transform", "aoetl-load", "aoetl-orchestrator")


class MonitorSettings(ServiceSettings):
    group_id: str = Field(
        "aoetl-monitor",
        min_length=1,
        description="the faust app id (plus topic_suffix): consumer group and changelog topic prefix",
    )
    replication_factor: int | None = Field(
        None,
        ge=1,
        description="of the changelog and internal topics faust creates (min.insync.replicas follows:"
        " shared.kafka.replication); unset, the cluster's broker count decides, as for every other topic",
    )
    stuck_after_s: float = Field(300.0, gt=0, description="when RUN_ACCEPTED does not carry the run's own")
    stuck_check_interval_s: float = Field(5.0, gt=0)
    quality_max_failed_fraction: float = Field(
        0.05, ge=0, le=1, description="failed rows / checked rows of a run above this alerts"
    )
    dead_letter_window_s: float = Field(300.0, gt=0, description="tumbling window of the dead-letter count")
    dead_letter_max_per_window: int = Field(100, ge=0, description="more dead letters in a window alert")
    lag_groups: list[str] = Field(default_factory=lambda: list(DEFAULT_LAG_GROUPS))
    lag_check_interval_s: float = Field(15.0, gt=0)
    runs_flush_interval_s: float = Field(
        1.0,
        gt=0,
        description="how often a run's changed counts reach the run history (services.monitor.history)",
    )
    finished_retention_s: float = Field(
        3600.0, gt=0, description="how long a finished run stays in the table (late events stay silent)"
    )
    faust_log_level: LogLevel = Field(
        "WARNING", description="of the faust, mode and aiokafka loggers (their INFO is a line per step)"
    )
    kafka_timeout_s: float = Field(10.0, gt=0, description="bound on admin calls (metadata, offsets)")
    # Same variable as the processing services (AOETL_SESSION_TIMEOUT_MS): how fast a crashed replica's
    # partitions move to a live one. faust's own default is 60 s.
    session_timeout_ms: int = Field(45_000, ge=1_000, description="consumer group session timeout")
    # faust keeps a directory per app even with in-memory tables; its default is the working directory,
    # which filled checkouts and containers with `<app id>-data` folders.
    data_dir: Path = Field(
        Path(tempfile.gettempdir()) / "aoetl-monitor", description="where faust keeps its app directory"
    )

    alert_routing: AlertRoutingSettings = Field(
        default_factory=AlertRoutingSettings, description="alert endpoints (AOETL_ALERT_ROUTING_*)"
    )
    lineage: LineageSettings = Field(default_factory=LineageSettings, description="AOETL_LINEAGE_*")

    @property
    def app_id(self) -> str:
        # The suffix isolates state too: a test run or tenant gets its own group and changelogs.
        return f"{self.group_id}{self.topic_suffix}"
