"""The deploy init (``python -m shared.kafka.admin``, run by compose's and k8s' topic-init job) creates the
system's topics and, named with ``--tenant``, each tenant's request topic laid out as the shared one; a
name that cannot be a tenant is refused before anything is created."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient

from shared.kafka.admin import main
from shared.kafka.topics import Topics, tenant_requests_topic
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def test_the_topic_init_creates_a_named_tenants_request_topic(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = f"t{uuid.uuid4().hex[:12]}"
    main(["--bootstrap", kafka_bootstrap, "--tenant", tenant])
    assert tenant_requests_topic(tenant) in capsys.readouterr().out
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})

    def listed() -> bool:  # a new topic's metadata reaches every broker view shortly after creation
        return tenant_requests_topic(tenant) in admin.list_topics(timeout=10).topics

    wait_until(listed, timeout=30, message="the tenant's request topic in the metadata")
    topics = admin.list_topics(timeout=10).topics
    shared, own = topics[Topics.REQUESTS], topics[tenant_requests_topic(tenant)]
    assert len(own.partitions) == len(shared.partitions)


def test_the_topic_init_refuses_a_tenant_name_that_cannot_be_a_topic(kafka_bootstrap: str) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["--bootstrap", kafka_bootstrap, "--tenant", "Acme.Corp"])
    assert refused.value.code == 2
