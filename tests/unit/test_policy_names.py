"""Names the system owns (shared.policy.names) and the policy framework that composes the rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.policy import (
    RULES,
    PolicySettings,
    PolicyViolation,
    check_run_id,
    check_spec,
    check_triggers,
    require_allowed,
)
from shared.policy.names import RUN_ID, require_safe_run_id, table_problem, topic_problem
from shared.policy.settings import INTERNAL_TOPIC_PREFIXES
from shared.spec import SpecError, parse_spec
from shared.triggers import split_definition_document

pytestmark = pytest.mark.unit


def spec(**parts: Any) -> Any:
    data: dict[str, Any] = {
        "name": "p",
        "source": {"type": "event"},
        "destination": {"type": "postgres", "table": "public.orders"},
    }
    data.update(parts)
    return parse_spec(data)


@pytest.mark.parametrize(
    ("table", "refused"),
    [
        ("orders", False),
        ("public.orders", False),
        ("analytics.orders", False),
        ("aoetl.aoetl_ledger", True),
        ("aoetl.dedupe", True),
        ("aoetl.anything_new", True),
        ("AOETL.aoetl_ledger", True),
        ("pg_catalog.pg_authid", True),
        ("pg_toast.t", True),
        ("pg_temp.t", True),
        ("information_schema.tables", True),
        ("orders__aoetl_1a2b3c4d", True),  # another run's staging table
        ("public.orders__aoetl_retired", True),
        ("Orders__AOETL_x", True),
    ],
)
def test_destination_tables_of_the_system_are_refused(table: str, refused: bool) -> None:
    assert (table_problem(table) is not None) is refused


@pytest.mark.parametrize("mode", ["append", "replace", "merge"])
def test_no_mode_can_touch_the_ledger(mode: str) -> None:
    destination = {"type": "postgres", "table": "aoetl.aoetl_ledger", "mode": mode}
    if mode == "merge":
        destination["keys"] = ["batch_id"]
    issues = check_spec(spec(destination=destination), PolicySettings())
    assert [i.path for i in issues] == ["destination.postgres.table"]


def test_a_duckdb_destination_cannot_take_a_reserved_table_name() -> None:
    destination = {"type": "duckdb", "path": "/data/w.duckdb", "table": "orders__aoetl_0000"}
    issues = check_spec(spec(destination=destination), PolicySettings(data_roots=(Path("/data"),)))
    assert [i.path for i in issues] == ["destination.duckdb.table"]


@pytest.mark.parametrize(
    ("topic", "internal"),
    [
        ("orders", False),
        ("aoetl", False),
        ("aoetlish.events", False),
        ("aoetl.requests", True),
        ("aoetl.events.e2e1234", True),  # with a topic suffix
        ("aoetl.deadletters", True),
        ("aoetl.audit", True),  # topics added later share the prefix
        ("aoetl-monitor-runs-changelog", True),
        ("__consumer_offsets", True),
        ("__transaction_state", True),
        ("_schemas", True),
    ],
)
def test_internal_topics(topic: str, internal: bool) -> None:
    assert (topic_problem(topic, INTERNAL_TOPIC_PREFIXES) is not None) is internal


def test_kafka_destinations_and_sources_cannot_name_internal_topics() -> None:
    policy = PolicySettings()
    to_requests = spec(destination={"type": "kafka", "topic": "aoetl.requests"})
    from_events = spec(source={"type": "kafka", "topic": "aoetl.events"})
    assert [i.path for i in check_spec(to_requests, policy)] == ["destination.kafka.topic"]
    assert [i.path for i in check_spec(from_events, policy)] == ["source.kafka.topic"]
    assert check_spec(spec(destination={"type": "kafka", "topic": "orders-out"}), policy) == []


def test_topic_triggers_cannot_read_internal_topics() -> None:
    _, triggers = split_definition_document(
        {
            "name": "p",
            "triggers": [
                {"type": "topic", "topic": "orders"},
                {"type": "webhook", "source": "github"},
                {"type": "topic", "topic": "aoetl.results"},
            ],
        }
    )
    issues = check_triggers(triggers, PolicySettings())
    assert [i.path for i in issues] == ["triggers[2].topic"]


def test_the_internal_prefixes_are_the_operators_to_extend() -> None:
    policy = PolicySettings(internal_topic_prefixes=(*INTERNAL_TOPIC_PREFIXES, "billing."))
    assert check_spec(spec(destination={"type": "kafka", "topic": "billing.invoices"}), policy)


@pytest.mark.parametrize(
    ("run_id", "valid"),
    [
        ("0f8c3a7e9b2d4c1aa5e6f7d8c9b0a1e2", True),
        ("r-1", True),
        ("run_2024.01:retry", True),
        ("..", False),
        (".", False),
        ("", False),
        ("../../etc", False),
        ("a/b", False),
        ("-rf", False),
        ("a\x00b", False),
        ("x" * 201, False),
    ],
)
def test_run_ids(run_id: str, valid: bool) -> None:
    assert bool(RUN_ID.match(run_id)) is valid
    assert (check_run_id(run_id) == []) is valid
    if valid:
        assert require_safe_run_id(run_id) == run_id
    else:
        with pytest.raises(PolicyViolation, match="run id"):
            require_safe_run_id(run_id)


def test_check_spec_reports_every_rule_with_field_paths() -> None:
    policy = PolicySettings(data_roots=(Path("/srv/data"),))
    bad = spec(
        source={"type": "csv", "path": "/etc/passwd"},
        destination={"type": "postgres", "table": "aoetl.aoetl_ledger", "mode": "replace"},
    )
    issues = check_spec(bad, policy)
    assert [i.path for i in issues] == ["source.csv.path", "destination.postgres.table"]
    with pytest.raises(SpecError) as info:
        require_allowed(bad, policy)
    assert [i.path for i in info.value.issues] == ["source.csv.path", "destination.postgres.table"]
    require_allowed(spec(), policy)  # nothing to refuse


def test_the_rules_are_one_list_to_extend() -> None:
    assert len(RULES) >= 3 and all(callable(rule) for rule in RULES)
    assert all(rule(spec(), PolicySettings()) == [] for rule in RULES)
