"""The one redaction point: known secrets and the forms they are echoed in, URL and conninfo passwords,
the errors every result and dead letter is built from, and the logging filter of every service."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from services.gateway.configuration import GatewaySettings
from shared.contracts import Alert, AlertKind, ErrorInfo, Severity
from shared.logging import configure_logging
from shared.redaction import MASK, forget_all_secrets, redact, register_secret, register_secrets_of, scrub
from shared.settings import KafkaSettings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def no_known_secrets() -> Iterator[None]:
    forget_all_secrets()
    yield
    forget_all_secrets()


def test_a_registered_dsn_is_masked_whole_and_by_its_password() -> None:
    register_secret("postgresql://etl:p%40ss-W0rd@db.example:5432/wh")
    assert redact("cannot use postgresql://etl:p%40ss-W0rd@db.example:5432/wh") == f"cannot use {MASK}"
    assert (
        redact('invalid percent-encoded token: "p%40ss-W0rd"') == f'invalid percent-encoded token: "{MASK}"'
    )
    assert redact("the password p@ss-W0rd was wrong") == f"the password {MASK} was wrong"  # decoded too


def test_conninfo_passwords_and_authorization_values() -> None:
    register_secret("host=db port=5432 password='it\\'s s3cret' user=etl")  # libpq quoting
    register_secret("Bearer tok-123456")
    basic = base64.b64encode(b"svc:basic-pw-99").decode()
    register_secret(f"Basic {basic}")
    text = redact("it's s3cret / tok-123456 / basic-pw-99 / " + basic)
    assert (
        "s3cret" not in text and "tok-123456" not in text and "basic-pw-99" not in text and basic not in text
    )


def test_escaped_spellings_are_masked() -> None:
    register_secret('we"ird\\pw')
    assert "ird" not in redact(json.dumps({"error": 'login with we"ird\\pw failed'}))
    assert "ird" not in redact(repr('we"ird\\pw'))


def test_short_values_are_not_masked_everywhere() -> None:
    register_secret("ab")
    register_secret("")
    register_secret(None)
    assert redact("about a bag") == "about a bag"


def test_url_and_conninfo_passwords_are_masked_without_registration() -> None:
    assert redact("at postgresql://u:unknown-pw@h/db") == f"at postgresql://u:{MASK}@h/db"
    assert redact("dsn host=h password=unknown-pw dbname=x") == f"dsn host=h password={MASK} dbname=x"
    assert redact("http://user@h/ and https://h/path") == "http://user@h/ and https://h/path"


def test_every_secret_of_a_settings_model_is_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOETL_KAFKA_SASL_PASSWORD", "sasl-pw-2024")
    monkeypatch.setenv(
        "AOETL_WEBHOOKS",
        json.dumps({"billing": {"scheme": "stripe", "secrets": ["whsec_x1y2z3-sixteen-bytes"]}}),
    )
    register_secrets_of(GatewaySettings())
    assert redact("sasl-pw-2024 whsec_x1y2z3-sixteen-bytes") == f"{MASK} {MASK}"
    register_secrets_of(KafkaSettings(sasl_password=SecretStr("other-pw-1")))
    assert redact("other-pw-1") == MASK


def test_error_info_is_built_from_the_redacted_text() -> None:
    register_secret("Bearer leaked-token-1")
    info = ErrorInfo.from_exception(RuntimeError("server said: leaked-token-1 is invalid"))
    assert info.message == f"server said: {MASK} is invalid"
    assert "hunter22" not in ErrorInfo.from_exception(ValueError("postgresql://a:hunter22@h/db")).message


def test_error_and_alert_texts_are_masked_however_the_record_is_built() -> None:
    """Not only ``from_exception``: an ErrorInfo or Alert built by hand (a rejection's reasons, an alert
    composed from a result's errors) or decoded from a topic is masked too."""
    register_secret("hand-built-secret-7")
    by_hand = ErrorInfo(error_class="InvalidRequest", message="bad value hand-built-secret-7")
    assert by_hand.message == f"bad value {MASK}"
    decoded = ErrorInfo.model_validate({"error_class": "X", "message": "hand-built-secret-7"})
    assert decoded.message == MASK
    alert = Alert(kind=AlertKind.RUN_FAILED, severity=Severity.CRITICAL, message="run r: hand-built-secret-7")
    assert alert.message == f"run r: {MASK}"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buffer = io.StringIO()
    yield buffer
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_log_lines_never_carry_a_known_secret(stream: io.StringIO, log_format: str) -> None:
    configure_logging(service="extract", instance="i", log_format=log_format, stream=stream)  # type: ignore[arg-type]
    register_secret("Planted-Secret-42")
    log = logging.getLogger("aoetl.test.redaction")
    log.warning("in the message Planted-Secret-42")
    log.warning("in an argument %s", "Planted-Secret-42")
    log.warning("in an extra", extra={"detail": "x Planted-Secret-42"})
    try:
        raise RuntimeError("in a traceback Planted-Secret-42")
    except RuntimeError:
        log.exception("failed")
    log.warning("bad %s %s", "arity")  # a broken call still logs, masked
    output = stream.getvalue()
    assert "Planted-Secret-42" not in output
    assert output.count(MASK) >= 4 and "RuntimeError" in output
    assert "arity" in output


def test_scrub_masks_secrets_as_well_as_describing_values() -> None:
    """The one module's two functions agree: ``scrub`` (data values) never lets a known secret through."""
    register_secret("postgresql://etl:scrub-pw-2718@db/x")
    text = scrub("connection to postgresql://etl:scrub-pw-2718@db/x failed: invalid value 'abc'")
    assert "scrub-pw-2718" not in text and "abc" not in text
    assert MASK in text and "<3 characters: letters>" in text
