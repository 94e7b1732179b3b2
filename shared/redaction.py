"""The one redaction point: the secret values this process knows, and ``redact`` that masks them in text.

A secret must never reach a result, an error, a dead letter, a log line or an alert. Errors that carry
connection material are built from ``redact``-ed text where they are raised (the connectors, the sinks);
the text of every ``ErrorInfo`` (which every result, run event and dead letter carries) and ``Alert``
(``shared.contracts.base.RedactedText``, applied whenever such a record is built) and the logging filter
(``shared.logging.SecretMaskingFilter``) apply it again, so a secret that slips into an unexpected message
is still masked on the way out.

Which values are secret: every value ``register_secret`` was given. A service registers its own secrets at
start-up (every ``SecretStr`` of its settings: the Kafka SASL password, the webhook secrets) and the
secrets of the connections the operator declared (``shared.policy.connections``); a connection registers
its secret again whenever it is read. Each value is registered with the forms in which it tends to be
echoed: a DSN's password (URL userinfo, raw and percent-decoded, or ``password=`` of a key/value DSN), the
token of an ``Authorization`` value (``Bearer x``; the password of ``Basic``), and their JSON- and
repr-escaped spellings. Values shorter than ``MIN_SECRET_LENGTH`` are not masked: masking "ab" everywhere
would make every message unreadable, and such a value is no secret anyway.

Independently of what is registered, ``redact`` also masks the password of any URL userinfo
(``scheme://user:password@``) and of any ``password=`` key of a conninfo string, so a DSN of another
process (``aoetl dev status`` of an external PostgreSQL) is masked too.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote

from pydantic import BaseModel, SecretStr

MASK = "***"
MIN_SECRET_LENGTH = 4

_URL_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<password>[^@/\s]+)(?=@)")
_CONNINFO_PASSWORD = re.compile(
    r"(?P<head>\bpassword\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|[^\s&'\"]+)", re.IGNORECASE
)
_AUTH_SCHEME = re.compile(r"^\s*(?P<scheme>[A-Za-z][A-Za-z0-9_\-]*)\s+(?P<token>\S.*?)\s*$")

_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str | SecretStr | None) -> None:
    """Mask ``value`` (and the forms it is echoed in) in everything ``redact`` sees from now on."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not value:
        return
    forms = {variant for form in _derived_forms(value) for variant in _spellings(form)}
    forms = {f for f in forms if len(f) >= MIN_SECRET_LENGTH}
    global _pattern
    with _lock:
        if forms <= _known:
            return
        _known.update(forms)
        # Longest first, so a whole DSN is masked as one rather than around its masked password.
        _pattern = re.compile("|".join(re.escape(s) for s in sorted(_known, key=len, reverse=True)))


def register_secrets_of(settings: BaseModel) -> None:
    """Register every ``SecretStr`` found in ``settings`` (nested models, lists and maps included)."""
    for value in _secret_values(settings):
        register_secret(value)


def redact(text: str) -> str:
    """``text`` with every known secret and every URL or conninfo password replaced by ``MASK``."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _URL_USERINFO.sub(lambda m: m.group("head") + MASK, text)
    return _CONNINFO_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def forget_all_secrets() -> None:
    """For tests: start from no known secret."""
    global _pattern
    with _lock:
        _known.clear()
        _pattern = None


# ------------------------------------------------------------------------------------------- forms
def _derived_forms(value: str) -> set[str]:
    forms = {value, value.strip()}
    for match in _URL_USERINFO.finditer(value):
        password = match.group("password")
        forms.update({password, unquote(password)})
    for match in _CONNINFO_PASSWORD.finditer(value):
        password = match.group("password")
        if password.startswith("'") and password.endswith("'") and len(password) >= 2:
            password = re.sub(r"\\(.)", r"\1", password[1:-1])
        forms.add(password)
    auth = _AUTH_SCHEME.match(value)
    if auth is not None:
        token = auth.group("token")
        forms.add(token)
        if auth.group("scheme").lower() == "basic":
            forms.update(_basic_password(token))
    return {f for f in forms if f}


def _basic_password(token: str) -> set[str]:
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return set()
    _, _, password = decoded.partition(":")
    return {decoded, password} if password else {decoded}


def _spellings(form: str) -> set[str]:
    """How a value looks once it has been JSON-encoded, repr-ed or percent-encoded into a message."""
    return {form, json.dumps(form)[1:-1], repr(form)[1:-1], quote(form, safe="")}


def _secret_values(value: object) -> Iterable[SecretStr]:
    if isinstance(value, SecretStr):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secret_values(getattr(value, name, None))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _secret_values(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _secret_values(item)
