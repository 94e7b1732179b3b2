"""The monitor's faust topics (changelogs, housekeeping, the assignor's leader topic) follow the one
replication rule of ``shared.kafka.replication``, as every topic of ``shared.kafka.topics``: 3 replicas and
``min.insync.replicas=2`` on a cluster of three brokers, 1 on a single broker (issue 14: they had 1 on the
cluster). Each topic faust declares is driven through the transport with faust's own arguments; only the
broker's side of topic creation is faked."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka

from services.monitor.app import MonitorApp
from services.monitor.cluster import InputPartitions, monitor_replication
from services.monitor.configuration import MonitorSettings
from services.monitor.exceptions import MonitorTransientError
from shared.avro import AvroSerde
from shared.kafka import admin
from shared.kafka.replication import Replication
from shared.settings import KafkaSettings

pytestmark = pytest.mark.unit

KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1")


class _Metadata:
    def __init__(self, brokers: int) -> None:
        self.brokers = {n: object() for n in range(brokers)}


class _Admin:
    def __init__(self, brokers: int) -> None:
        self.brokers, self.calls = brokers, 0

    def list_topics(self, timeout: float) -> _Metadata:
        self.calls += 1
        return _Metadata(self.brokers)


@pytest.mark.parametrize(("brokers", "rule"), [(1, Replication(1, 1)), (3, Replication(3, 2))])
def test_unset_the_broker_count_decides(
    monkeypatch: pytest.MonkeyPatch, brokers: int, rule: Replication
) -> None:
    monkeypatch.setattr(admin.KafkaClients, "admin", lambda self, **_: _Admin(brokers))
    assert MonitorSettings(kafka=KAFKA).replication_factor is None
    assert monitor_replication(MonitorSettings(kafka=KAFKA)) == rule


def test_an_explicit_factor_wins_and_brings_its_min_insync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin.KafkaClients, "admin", lambda self, **_: _Admin(3))
    assert monitor_replication(MonitorSettings(kafka=KAFKA, replication_factor=2)) == Replication(2, 1)
    assert monitor_replication(MonitorSettings(kafka=KAFKA, replication_factor=3)) == Replication(3, 2)


def test_an_explicit_factor_above_the_live_brokers_stops_the_start_with_its_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admin.KafkaClients, "admin", lambda self, **_: _Admin(2))
    with pytest.raises(MonitorTransientError, match="set AOETL_REPLICATION_FACTOR to 2 or less"):
        monitor_replication(MonitorSettings(kafka=KAFKA, replication_factor=3))


def declared_topics(tmp_path: Path, rule: Replication, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the broker is asked for each topic the monitor's faust app declares: name -> (factor, config)."""
    asked: dict[str, Any] = {}

    async def broker_side(
        self: Any, owner: Any, client: Any, topic: str, partitions: int, replication: int, **kw: Any
    ) -> None:
        asked[topic] = (replication, dict(kw.get("config") or {}), kw.get("compacting"))

    monkeypatch.setattr(faust_aiokafka.Transport, "_create_topic", broker_side)
    settings = MonitorSettings(kafka=KAFKA, data_dir=tmp_path)

    async def declare_all() -> None:
        monitor = MonitorApp(
            settings, AvroSerde(), InputPartitions(events=3, results=3, dead_letters=3), replication=rule
        )
        app = monitor.app

        class Producer:  # faust's Producer.create_topic hands its arguments on to the transport
            async def create_topic(self, topic: str, partitions: int, replication: int, **kw: Any) -> None:
                transport: Any = app.transport
                await transport._create_topic(None, None, topic, partitions, replication, **kw)

        async def producer() -> Producer:
            return Producer()

        app.maybe_start_producer = producer
        topics = [table.changelog_topic for table in app.tables.values()]
        topics += [monitor.housekeeping_topic, app._leader_assignor._leader_topic]  # type: ignore[attr-defined]
        for topic in topics:
            await topic.declare()
        assert app.conf.topic_replication_factor == rule.factor

    asyncio.run(declare_all())
    return asked


@pytest.mark.parametrize(
    ("rule", "extra"), [(Replication(3, 2), {"min.insync.replicas": "2"}), (Replication(1, 1), {})]
)
def test_every_faust_topic_follows_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule: Replication, extra: dict[str, str]
) -> None:
    asked = declared_topics(tmp_path, rule, monkeypatch)
    changelogs = [name for name in asked if name.endswith("-changelog")]
    assert len(changelogs) >= 3 and any(name.endswith("-__assignor-__leader") for name in asked)
    assert any(name.endswith("-housekeeping") for name in asked)
    for name, (factor, config, _) in asked.items():
        assert factor == rule.factor, name
        assert {k: v for k, v in config.items() if k == "min.insync.replicas"} == extra, name
    runs = next(name for name in changelogs if name.endswith("-runs-changelog"))
    assert asked[runs][2] is True, "the changelog keeps faust's own settings (compacted)"
