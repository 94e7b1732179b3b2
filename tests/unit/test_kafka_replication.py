"""The one replication rule (``shared.kafka.replication``) and how ``ensure_topics`` applies it."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from shared.errors import is_transient
from shared.kafka import admin
from shared.kafka.replication import Replication
from shared.kafka.topics import TopicSpec
from shared.settings import KafkaSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("brokers", "factor", "min_insync"), [(1, 1, 1), (2, 1, 1), (3, 3, 2), (5, 3, 2)])
def test_the_broker_count_decides_factor_and_min_insync(brokers: int, factor: int, min_insync: int) -> None:
    assert Replication.for_brokers(brokers) == Replication(factor, min_insync)


def test_an_explicit_factor_keeps_one_replica_spare_from_three_on() -> None:
    assert Replication.for_factor(1) == Replication(1, 1)
    assert Replication.for_factor(2) == Replication(2, 1)
    assert Replication.for_factor(3) == Replication(3, 2)
    assert Replication.for_factor(5) == Replication(5, 4)


@pytest.mark.parametrize(("factor", "min_insync"), [(0, 1), (3, 0), (3, 4), (1, 2)])
def test_impossible_combinations_are_refused(factor: int, min_insync: int) -> None:
    with pytest.raises(ValueError):
        Replication(factor, min_insync)
    with pytest.raises(ValueError):
        Replication.for_brokers(0)


def test_a_single_broker_topic_gets_no_extra_config() -> None:
    assert Replication.for_brokers(1).topic_config() == {}
    assert Replication.for_brokers(3).topic_config() == {"min.insync.replicas": "2"}


class _Future:
    def result(self, timeout: float | None = None) -> None:
        return None


class _Metadata:
    def __init__(self, brokers: int) -> None:
        self.brokers = {n: object() for n in range(brokers)}
        self.topics: dict[str, object] = {"exists": object()}


class _Admin:
    def __init__(self, brokers: int | None) -> None:
        self.brokers = brokers  # None: no broker answers
        self.created: list[Any] = []

    def list_topics(self, timeout: float) -> _Metadata:
        if self.brokers is None:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "all brokers down"))
        return _Metadata(self.brokers)

    def create_topics(self, topics: list[Any], **_: Any) -> dict[str, _Future]:
        self.created += topics
        return {topic.topic: _Future() for topic in topics}


def _created(monkeypatch: pytest.MonkeyPatch, brokers: int, **options: Any) -> list[Any]:
    fake = _Admin(brokers)
    monkeypatch.setattr(admin.KafkaClients, "admin", lambda self, **_: fake)
    specs = [TopicSpec("exists", 1), TopicSpec("plain", 3), TopicSpec("own", 1, {"min.insync.replicas": "3"})]
    names = admin.ensure_topics(KafkaSettings(bootstrap_servers="x:1"), specs, **options)
    assert names == ["plain", "own"]
    return fake.created


@pytest.mark.parametrize(("brokers", "factor", "config"), [(1, 1, {}), (3, 3, {"min.insync.replicas": "2"})])
def test_ensure_topics_derives_the_rule_from_the_cluster(
    monkeypatch: pytest.MonkeyPatch, brokers: int, factor: int, config: dict[str, str]
) -> None:
    plain, own = _created(monkeypatch, brokers)
    assert (plain.replication_factor, plain.config) == (factor, config)
    assert own.replication_factor == factor
    assert own.config == {"min.insync.replicas": "3"}  # a topic's own setting wins


def test_explicit_settings_win_over_the_broker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    plain, _ = _created(monkeypatch, 1, replication_factor=3)
    assert (plain.replication_factor, plain.config) == (3, {"min.insync.replicas": "2"})
    plain, _ = _created(monkeypatch, 3, replication_factor=3, min_insync_replicas=3)
    assert plain.config == {"min.insync.replicas": "3"}
    with pytest.raises(ValueError):
        _created(monkeypatch, 3, replication_factor=1, min_insync_replicas=2)


def test_the_admin_command_takes_both_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(admin, "ensure_topics", lambda kafka, specs, **options: seen.update(options) or [])
    admin.main(["--bootstrap", "x:1", "--replication-factor", "3", "--min-insync-replicas", "2"])
    assert seen == {"replication_factor": 3, "min_insync_replicas": 2}
    admin.main(["--bootstrap", "x:1"])
    assert seen == {"replication_factor": None, "min_insync_replicas": None}


def _cluster_rule(monkeypatch: pytest.MonkeyPatch, brokers: int | None, factor: int | None) -> Replication:
    monkeypatch.setattr(admin.KafkaClients, "admin", lambda self, **_: _Admin(brokers))
    return admin.cluster_replication(KafkaSettings(bootstrap_servers="x:1"), replication_factor=factor)


@pytest.mark.parametrize(
    ("brokers", "factor", "rule"),
    [
        (3, None, Replication(3, 2)),
        (1, None, Replication(1, 1)),
        (0, None, Replication(1, 1)),  # the broker that answered counts
        (3, 1, Replication(1, 1)),
        (3, 2, Replication(2, 1)),
        (3, 3, Replication(3, 2)),
        (5, 3, Replication(3, 2)),
    ],
)
def test_a_configured_factor_wins_over_the_broker_count(
    monkeypatch: pytest.MonkeyPatch, brokers: int, factor: int | None, rule: Replication
) -> None:
    assert _cluster_rule(monkeypatch, brokers, factor) == rule


@pytest.mark.parametrize(("brokers", "factor"), [(2, 3), (1, 3), (0, 2)])
def test_a_factor_above_the_live_brokers_is_refused_with_its_fix(
    monkeypatch: pytest.MonkeyPatch, brokers: int, factor: int
) -> None:
    with pytest.raises(admin.TooFewBrokersError) as refused:
        _cluster_rule(monkeypatch, brokers, factor)
    message = str(refused.value)
    live = max(brokers, 1)
    assert "\n" not in message
    assert f"AOETL_REPLICATION_FACTOR={factor}" in message and f"has {live} live broker(s)" in message
    assert f"start the missing brokers or set AOETL_REPLICATION_FACTOR to {live} or less" in message
    assert is_transient(refused.value), "a broker coming back fixes it: the caller may retry"


def test_an_unreachable_cluster_is_a_transient_admin_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for factor in (None, 3):
        with pytest.raises(admin.TopicAdminError, match="cannot read the metadata of x:1"):
            _cluster_rule(monkeypatch, None, factor)
