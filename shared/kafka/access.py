"""Can this process use the cluster with its credentials? Asked once at start-up, before any work.

Why a separate check: librdkafka treats a refused password or an untrusted broker certificate like a
broker outage. It logs the failure, reconnects with backoff forever, and a metadata request only times
out ("broker transport failure"), so a service with a wrong password would wait for a broker that is
up, retrying silently. Here the connection errors reported during one metadata request are looked at:

* SASL authentication refused (``_AUTHENTICATION``) or the TLS handshake failed (``_SSL``: the broker's
  certificate does not verify against ``ssl.ca.location``): ``KafkaAccessDeniedError``, a configuration
  error. Retrying cannot help; the service exits with its configuration exit code;
* one of ``topics`` the principal may not even describe (``TOPIC_AUTHORIZATION_FAILED``): the same, naming
  the principal and the topic, because its ACLs do not match what it is configured to use;
* no answer for another reason: ``KafkaUnreachableError`` (transient); the caller waits and asks again.

The messages carry the broker's own words and the user name, never the password.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Final

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from shared.errors import ConfigurationError, TransientError
from shared.kafka.clients import KafkaClients
from shared.settings import KafkaSettings

# Connection errors that mean "these credentials / this trust store will never work".
_REFUSED: Final = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})


class KafkaAccessDeniedError(ConfigurationError):
    """The cluster refused who we are (credentials, certificate) or what we are configured to use."""


class KafkaUnreachableError(TransientError):
    """No broker answered; it may be starting or restarting."""


def _who(settings: KafkaSettings) -> str:
    if settings.uses_sasl:
        mechanism, protocol = settings.sasl_mechanism, settings.security_protocol
        return f"user {settings.sasl_username!r} ({mechanism} over {protocol})"
    return f"an unauthenticated {settings.security_protocol} client"


def check_access(settings: KafkaSettings, topics: Iterable[str] = (), timeout: float = 10.0) -> None:
    """Return when the cluster answers a metadata request as ``settings`` and lets it see ``topics``."""
    errors: list[KafkaError] = []
    admin = KafkaClients(settings).admin(error_cb=errors.append)
    deadline = time.monotonic() + timeout
    while True:
        # short requests, so a refusal (reported a few hundred ms after connecting) ends the wait early
        remaining = deadline - time.monotonic()
        try:
            admin.list_topics(timeout=max(min(remaining, 1.0), 0.1))
            answered = True
        except KafkaException:
            answered = False
        admin.poll(0)  # connection errors reach error_cb only from poll()
        refused = [error for error in errors if error.code() in _REFUSED]
        if refused:
            raise KafkaAccessDeniedError(
                f"Kafka at {settings.bootstrap_servers} refused {_who(settings)}: {refused[-1].str()}"
            )
        if answered:
            break
        if time.monotonic() >= deadline:
            detail = errors[-1].str() if errors else "no broker answered"
            raise KafkaUnreachableError(f"Kafka at {settings.bootstrap_servers} did not answer: {detail}")
    wanted = list(topics)
    if wanted:
        _check_topics(admin, settings, wanted, max(deadline - time.monotonic(), 1.0))


def _check_topics(admin: AdminClient, settings: KafkaSettings, topics: list[str], timeout: float) -> None:
    # describe_topics never creates a topic (a metadata request for one name may, on a broker that
    # auto-creates topics); a topic that does not exist yet is not an access problem
    futures = admin.describe_topics(TopicCollection(topics), request_timeout=timeout)
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise KafkaAccessDeniedError(
                    f"Kafka at {settings.bootstrap_servers} does not authorize {_who(settings)} to use "
                    f"topic {topic!r} (its ACLs do not cover it): {error.str()}"
                ) from None
            if error is None or error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise KafkaUnreachableError(f"describing topic {topic!r}: {exc}") from exc
