"""Topic administration: make the declared topics exist. Idempotent, so the dev stack, the test fixtures and
the deployment init job can all call it on every start. The admin client comes from ``KafkaClients``, so
it carries the same security settings as every other client.

New topics follow ``shared.kafka.replication``: unless a replication factor is given, it is derived from
the number of brokers the cluster's metadata reports (3 replicas, ``min.insync.replicas=2`` from 3 on).
For the topics a client creates itself (``cluster_replication``), a configured factor wins, and one above
the live brokers is refused with its fix in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from shared.errors import TransientError
from shared.kafka.clients import KafkaClients
from shared.kafka.replication import Replication
from shared.kafka.topics import TOPICS, TopicSpec, checked_tenant, tenant_request_topics
from shared.settings import KafkaSettings

_log = logging.getLogger(__name__)


class TopicAdminError(TransientError):
    """The broker refused or did not answer a topic operation; retrying later may succeed."""


class TooFewBrokersError(TopicAdminError):
    """A configured replication factor the cluster's live brokers cannot hold (transient: a broker that
    comes back fixes it, as does a lower factor)."""


def cluster_replication(
    kafka: KafkaSettings, *, replication_factor: int | None = None, timeout: float = 30.0
) -> Replication:
    """The rule for the topics a client creates outside ``ensure_topics`` (the monitor's faust topics): a
    configured ``replication_factor`` (``AOETL_REPLICATION_FACTOR``) wins over the broker count, else the
    broker count of the cluster's metadata decides, as here. Either way the live brokers are counted: a
    factor above them is refused at once with the fix, rather than left to fail on the first topic faust
    creates (the broker refuses a factor above its live brokers) deep in its start-up."""
    try:
        metadata = KafkaClients(kafka).admin().list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicAdminError(f"cannot read the metadata of {kafka.bootstrap_servers}: {exc}") from exc
    live = max(len(metadata.brokers), 1)  # an answer came from a broker, even one listing none
    if replication_factor is not None and replication_factor > live:
        raise TooFewBrokersError(
            f"AOETL_REPLICATION_FACTOR={replication_factor} but {kafka.bootstrap_servers} has {live} live "
            f"broker(s): start the missing brokers or set AOETL_REPLICATION_FACTOR to {live} or less "
            "(unset, the broker count decides)"
        )
    return _rule(live, replication_factor)


def _rule(brokers: int, replication_factor: int | None) -> Replication:
    if replication_factor is not None:
        return Replication.for_factor(replication_factor)
    # the brokers of the metadata answer: the live, registered ones (no ACL beyond a metadata request); an
    # answer came from a broker, so one listing none counts the one that answered
    return Replication.for_brokers(max(brokers, 1))


def ensure_topics(
    kafka: KafkaSettings,
    topics: Iterable[TopicSpec] = TOPICS,
    *,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create every topic in ``topics`` that does not exist yet; return the names actually created.

    ``replication_factor`` None: the cluster's broker count decides (``Replication.for_brokers``);
    ``min_insync_replicas`` None: the rule's for that factor (a ``ValueError`` when it exceeds the factor).

    Existing topics are left untouched (their partitions and configs are not altered): changing a live
    topic's layout is a migration decision, not something a start-up hook should do silently.
    """
    specs = list(topics)
    bootstrap = kafka.bootstrap_servers
    admin = KafkaClients(kafka).admin()
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicAdminError(f"cannot list topics on {bootstrap}: {exc}") from exc
    missing = [spec for spec in specs if spec.name not in metadata.topics]
    if not missing:
        return []
    replication = _rule(len(metadata.brokers), replication_factor)
    if min_insync_replicas is not None:
        replication = Replication(replication.factor, min_insync_replicas)
    new_topics = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=replication.factor,
            # the topic's own settings win: a topic that needs another min.insync says so in its spec
            config=replication.topic_config() | dict(spec.config),
        )
        for spec in missing
    ]
    futures = admin.create_topics(new_topics, request_timeout=timeout, operation_timeout=timeout)
    created: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            # A concurrent caller created it between our listing and our request: that is success.
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise TopicAdminError(f"creating topic {name!r} on {bootstrap} failed: {exc}") from exc
        except TimeoutError as exc:
            raise TopicAdminError(f"creating topic {name!r} on {bootstrap} timed out") from exc
    _log.info("created topics %s", created)
    return created


def main(argv: list[str] | None = None) -> None:
    """``python -m shared.kafka.admin [--bootstrap kafka:9092] [--tenant NAME ...]``: create the declared
    topics (deploy init), and the request topic of each tenant named (its Kafka door). The connection and
    its security come from the ``AOETL_KAFKA_*`` environment, as for the services."""
    import argparse

    from shared.settings import load_settings

    def tenant(name: str) -> str:
        try:
            return checked_tenant(name)
        except ValueError as exc:  # argparse's own "invalid tenant value" message and exit 2
            raise argparse.ArgumentTypeError(str(exc)) from exc

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--bootstrap", help="instead of AOETL_KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument(
        "--replication-factor",
        type=int,
        default=None,
        help="default: 3 on a cluster of three brokers or more, else 1; min.insync.replicas follows "
        "(factor - 1 from 3 on) unless --min-insync-replicas is given",
    )
    parser.add_argument("--min-insync-replicas", type=int, default=None)
    parser.add_argument("--tenant", type=tenant, action="append", default=[], help="repeatable")
    args = parser.parse_args(argv)
    given = {"bootstrap_servers": args.bootstrap} if args.bootstrap else {}
    kafka = load_settings(KafkaSettings, **given)
    specs = [*TOPICS, *tenant_request_topics(args.tenant)]
    try:
        created = ensure_topics(
            kafka,
            specs,
            replication_factor=args.replication_factor,
            min_insync_replicas=args.min_insync_replicas,
        )
    except ValueError as exc:  # a factor and a min.insync that do not fit together
        parser.error(str(exc))
    print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


if __name__ == "__main__":
    main()
