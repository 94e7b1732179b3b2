"""A hung commit under the topic readers: the first transactional producer of a continuous pipeline's
stream reader, or of a topic trigger's runner, blocks in ``send_offsets_to_transaction`` and never comes
back by itself, as librdkafka's can after a broker restart (issues #5456, #5511).

The service that holds the reader runs inside the test process (the fault is injected by wrapping that
producer, see ``tests.support.hung_calls``; its task loop is untouched), the other services as processes.
The engine must give the hung producer up after its bounded wait, fence it with a new producer of the same
transactional id, rewind to what the group committed and go on, while the hung call is still blocked: the
test releases it only after it has seen every event arrive, exactly once in PostgreSQL, and (for the
trigger) exactly one run per window.

In `make chaos`, not `make test` (a minute of the suite for two cases): the engine's guard itself is in
`make test` through tests/integration/test_processing_aborts.py (a hung send_offsets abandoned, exactly once).
"""

from __future__ import annotations

import pytest

from tests.faults.harness import SHORT_KAFKA_CALLS, running_system, service_in_process
from tests.faults.topic_readers import READERS, TopicReader
from tests.helpers import wait_until
from tests.support.hung_calls import READER_PRODUCERS, hung_send_offsets

pytestmark = [pytest.mark.faults, pytest.mark.slow]

# The bound on the recovery: the engine's bounded call (its Kafka timeout, 30 s unless the shorter one of
# SHORT_KAFKA_CALLS reaches the readers, plus the shortened grace), the fencing, and the catch-up after it.
# An engine without the guard never recovers: the test fails here, with this message, not at pytest's
# timeout.
RECOVERY_S = 90.0
NOT_RECOVERED = " while the first producer is still hung (its send_offsets_to_transaction never abandoned)"


@pytest.fixture(autouse=True)
def short_kafka_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(*SHORT_KAFKA_CALLS)


@pytest.mark.parametrize("reader", READERS, ids=lambda reader: reader.id)
def test_a_topic_reader_whose_commit_hangs_fences_its_producer_and_goes_on_exactly_once(
    kafka_bootstrap: str, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch, reader: TopicReader
) -> None:
    with (
        running_system(kafka_bootstrap, postgres_dsn, reader.replicas_besides_its_service()) as system,
        hung_send_offsets(monkeypatch, READER_PRODUCERS, prefix=reader.transactional_prefix) as hung,
        service_in_process(system, reader.service, before_stop=hung.release.set),
        reader.feed(system, kafka_bootstrap, postgres_dsn, "hung") as feed,
    ):
        wait_until(hung.hung, 60, message=f"the first commit of the {reader.id} reader to hang")
        feed.wait_delivered(timeout=RECOVERY_S, why=NOT_RECOVERED)
        assert hung.hung(), "the hung call returned: the test must not release it before the verdict"
        assert len(hung.made) >= 2, "the hung producer was never replaced by a new one"
        feed.assert_exactly_once()
