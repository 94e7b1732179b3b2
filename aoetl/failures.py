"""The one place where the CLI turns a failure into a one-line error and an exit code.

``aoetl.cli`` catches every exception a command lets escape and hands it to ``report``: it prints one line
on stderr that says what failed and how to fix it, and returns the exit code of that kind of failure. A
traceback is printed only with ``aoetl --debug`` or ``AOETL_DEBUG=1`` (then the exception is re-raised as
it is). Every text printed goes through ``shared.redaction.redact`` first: a DSN's password or a token
quoted by a library never reaches the terminal.

Exit codes (``EXIT_CODES`` documents them; ``aoetl --help`` and the README list them): a run's own codes
are 0-6 (``aoetl.commands.run_display.EXIT_CODES`` by final status, 5 no result in time, 6 unknown run) and
2 is also a usage or validation error; the codes of this module start at 10 so that a caller (a script, a
scheduler) never takes "the broker is down" for "the run FAILED".

Cold start: this module imports only the standard library and ``shared.errors`` at its top. Whether an
exception is one of httpx, psycopg or confluent-kafka is asked of ``sys.modules``: a library nobody
imported cannot have raised, so classifying never imports one.
"""

from __future__ import annotations

import sys
from typing import Any

from shared.errors import ConfigurationError, TransientError

EXIT_CONFIGURATION = 10
EXIT_KAFKA_UNAVAILABLE = 11
EXIT_POSTGRES_UNAVAILABLE = 12
EXIT_GATEWAY_UNAVAILABLE = 13
EXIT_AUTHENTICATION = 14
EXIT_NOT_AUTHORIZED = 15
EXIT_STACK_STARTUP = 16
EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE: a bug of ours, not something the user's settings can fix

# Every exit code of the CLI, in the order ``aoetl --help`` and the README list them.
EXIT_CODES: dict[int, str] = {
    0: "success; a run COMPLETED",
    1: (
        "the run FAILED; or a command's own refusal (`dev status`: unhealthy; nothing to delete, show or "
        "replay; a declined prompt)"
    ),
    2: "the run was REJECTED; or invalid usage, spec or policy",
    3: "the run TIMED_OUT",
    4: "the run was CANCELLED",
    5: "no result within --timeout",
    6: "unknown run id",
    EXIT_CONFIGURATION: "configuration error (settings, the config file...)",
    EXIT_KAFKA_UNAVAILABLE: "Kafka cannot be reached (or did not acknowledge a record)",
    EXIT_POSTGRES_UNAVAILABLE: "PostgreSQL cannot be reached",
    EXIT_GATEWAY_UNAVAILABLE: "the gateway cannot be reached, or answered 5xx",
    EXIT_AUTHENTICATION: "authentication refused (gateway 401, Kafka SASL)",
    EXIT_NOT_AUTHORIZED: "not authorized (gateway 403, a Kafka topic ACL)",
    EXIT_STACK_STARTUP: "`aoetl dev up`: a component of the dev stack did not start",
    EXIT_INTERNAL: "unexpected error (a bug: rerun with --debug, report it)",
}

DEBUG_HINT = "rerun with --debug (or AOETL_DEBUG=1) for the traceback"
# a message of more lines than this (a process's log tail) is cut to its first line on the one line
MAX_JOINED_LINES = 3


class CliFailure(Exception):
    """A failure the CLI already knows how to explain: ``str(self)`` is the line, ``exit_code`` the code."""

    exit_code: int = EXIT_INTERNAL


class KafkaUnreachableError(CliFailure, TransientError):
    """No broker answered within the connect timeout (refused, unresolvable, TLS handshake failed...)."""

    exit_code = EXIT_KAFKA_UNAVAILABLE

    def __init__(self, bootstrap: str, reason: str):
        super().__init__(
            f"cannot reach Kafka at {bootstrap} ({reason}) — is the broker running? `aoetl dev up` starts "
            "one; elsewhere set AOETL_KAFKA_BOOTSTRAP_SERVERS"
        )


class KafkaAuthenticationError(CliFailure, ConfigurationError):
    """The broker refused the SASL credentials."""

    exit_code = EXIT_AUTHENTICATION

    def __init__(self, bootstrap: str, user: str | None, reason: str):
        who = f"user {user!r}" if user else "this client (no AOETL_KAFKA_SASL_USERNAME set)"
        super().__init__(
            f"Kafka at {bootstrap} refused the credentials of {who} ({reason}) — check "
            'AOETL_KAFKA_SASL_USERNAME / AOETL_KAFKA_SASL_PASSWORD (`eval "$(aoetl dev up)"` sets them '
            "for the dev stack)"
        )


class NotAuthorizedError(CliFailure, ConfigurationError):
    """The broker or the gateway knows who we are and does not allow what was asked."""

    exit_code = EXIT_NOT_AUTHORIZED


def gateway_exit_code(status: int, other: int = 2) -> int:
    """The exit code of a gateway's error answer: 401 and 403 have their own, 5xx is an unavailable
    gateway, any other 4xx (a refusal of the request itself) is the command's ``other``."""
    if status == 401:
        return EXIT_AUTHENTICATION
    if status == 403:
        return EXIT_NOT_AUTHORIZED
    return EXIT_GATEWAY_UNAVAILABLE if status >= 500 else other


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line (not yet redacted) for ``exc``."""
    if isinstance(exc, CliFailure):
        return exc.exit_code, str(exc)
    kafka = _kafka_error_code(exc)
    if kafka is not None:
        return _classify_kafka(kafka, exc)
    http = _module("httpx")
    if http is not None and isinstance(exc, http.TransportError):
        url = _request_url(exc)
        return EXIT_GATEWAY_UNAVAILABLE, (
            f"cannot reach the gateway at {url} ({type(exc).__name__}: {exc}) — is it running? "
            "`aoetl dev up --services` starts one; elsewhere pass --gateway URL or set AOETL_GATEWAY_URL"
        )
    pg = _module("psycopg")
    if pg is not None and isinstance(exc, pg.OperationalError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return EXIT_POSTGRES_UNAVAILABLE, (
            f"cannot reach PostgreSQL ({first}) — is it running? `aoetl dev up` starts one; elsewhere "
            "check the DSN (AOETL_POSTGRES_DSN)"
        )
    stack = _module("aoetl.devstack.errors")
    if stack is not None and isinstance(exc, stack.StackStartupError):
        return EXIT_STACK_STARTUP, (
            "the dev stack did not start (`aoetl dev status` shows each component; `aoetl dev down` then "
            f"`aoetl dev up` starts afresh): {exc}"
        )
    if isinstance(exc, ConfigurationError):
        return EXIT_CONFIGURATION, f"configuration error: {exc}"
    if isinstance(exc, TransientError) and "deliver" in str(exc):
        # shared.kafka.delivery.KafkaDeliveryError: the broker took the connection, not the record
        return EXIT_KAFKA_UNAVAILABLE, f"Kafka did not acknowledge a record: {exc} — is the broker healthy?"
    return EXIT_INTERNAL, f"unexpected error: {type(exc).__name__}: {exc} ({DEBUG_HINT})"


def report(exc: BaseException) -> int:
    """Print the one line for ``exc`` on stderr (redacted, on one line); return its exit code."""
    from shared.redaction import redact

    code, message = classify(exc)
    lines = [line.strip() for line in redact(message).splitlines() if line.strip()]
    if len(lines) > MAX_JOINED_LINES:  # a log tail: its first line, and where the rest is
        lines = [lines[0], f"({len(lines) - 1} more lines: {DEBUG_HINT})"]
    text = " ".join(" ".join(lines).split())  # one line, whatever the library's message held
    print(f"aoetl: error: {text}", file=sys.stderr, flush=True)
    return code


def _module(name: str) -> Any:
    return sys.modules.get(name)


def _kafka_error_code(exc: BaseException) -> int | None:
    """The librdkafka error code of a ``KafkaException`` (or of a ``KafkaError`` it carries), else None."""
    confluent = _module("confluent_kafka")
    if confluent is None or not isinstance(exc, confluent.KafkaException):
        return None
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, confluent.KafkaError) else None


def _classify_kafka(code: int, exc: BaseException) -> tuple[int, str]:
    from confluent_kafka import KafkaError

    reason = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else str(exc)
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        return EXIT_AUTHENTICATION, f"Kafka refused this client's credentials ({reason})"
    if code in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    ):
        return EXIT_NOT_AUTHORIZED, f"Kafka: not authorized ({reason}) — ask for an ACL, or use another user"
    if code in _unreachable_codes():
        return EXIT_KAFKA_UNAVAILABLE, (
            f"cannot reach Kafka ({reason}) — is the broker running? `aoetl dev up` starts one"
        )
    return EXIT_INTERNAL, f"Kafka error: {reason} ({DEBUG_HINT})"


def _unreachable_codes() -> frozenset[int]:
    """librdkafka's codes for "no broker could be talked to"."""
    from confluent_kafka import KafkaError

    return frozenset(
        {
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError._RESOLVE,
            KafkaError._TRANSPORT,
            KafkaError._TIMED_OUT,
            KafkaError._SSL,
        }
    )


def _request_url(exc: BaseException) -> str:
    try:
        return str(exc.request.url)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when no request is attached
        return "the configured URL"
