"""The one redaction point: what may never leave this process in a text (a result, an error, a dead letter,
a log line, an alert), and the two functions that take it out.

* ``redact(text)``: every secret this process knows is masked (below). Safe on any text; applied to every
  error and alert text whatever its origin, and to every log line.
* ``scrub(text)``: for the error texts of libraries that quote the *data* they failed on (a CSV row, a
  value DuckDB could not cast, a PostgreSQL key): the quoted values are replaced by a description of their
  shape, the text is capped, and it is ``redact``-ed too. Where a connector, the transform or a sink
  raises from such a library error, it builds the message with ``scrub``.

Secrets
-------

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

Data values
-----------
An error travels far: into the run's result (``GET /runs/{id}``, ``aoetl status``), its events, dead
letters, alerts and logs, all of which reach people who may not read the source. So where a library's
message quotes a value it could not read or convert (pyarrow: ``Expected 2 columns, got 3: <the row>``,
DuckDB: ``Could not convert string '<value>' to INT32``, PostgreSQL: ``invalid input syntax ... "<value>"``,
``Key (id)=(<value>) already exists``), ``scrub`` replaces the value by a description of its shape (length
and kinds of characters) and caps the whole text. A file's bytes never reach an error this way, nor does a
secret that happens to sit in a data file.
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


# ------------------------------------------------------------------------------------------- data values
MAX_ERROR_CHARS = 400

# Values are 'single quoted' (DuckDB, pyarrow) or, in PostgreSQL's messages, "double quoted" after a colon
# or the word value (``invalid input syntax for type integer: "abc"``, ``value "99999" is out of range``).
# Other double-quoted words are identifiers (``column "amount" is of type integer``): kept, they name the
# spec's or the table's columns, and the message is useless without them.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.|'')*'|(?:(?<=: )|(?<=value ))\"(?:[^\"\\]|\\.|\"\")*\"")
# pyarrow's CSV reader appends the offending row: "Expected 2 columns, got 3: a,b,c".
_ROW_ECHO = re.compile(r"(got \d+)\s*:\s.*", re.DOTALL)
# DuckDB's conversion errors, greedy so that a value holding a quote is taken whole.
_CONVERT = re.compile(r"(Could not convert string )'(.*)'( to )")
# PostgreSQL's key details: "Key (id, day)=(5, 2024-01-01) already exists".
_KEY_DETAIL = re.compile(r"\)=\((.*?)\)")
# pyarrow JSON/CSV conversion errors end with the raw value after a colon ("couldn't parse:abc").
_PARSE_TAIL = re.compile(r"(couldn't parse|invalid value)\s*:\s*\S.*", re.IGNORECASE | re.DOTALL)


def describe_text(value: str) -> str:
    """A value's shape, not its content: ``<12 characters: letters, digits>``."""
    kinds = [
        name
        for name, present in (
            ("letters", any(ch.isalpha() for ch in value)),
            ("digits", any(ch.isdigit() for ch in value)),
            ("spaces", any(ch.isspace() for ch in value)),
            ("symbols", any(not (ch.isalnum() or ch.isspace()) for ch in value)),
        )
        if present
    ]
    size = f"{len(value)} character" + ("" if len(value) == 1 else "s")
    return f"<{size}: {', '.join(kinds)}>" if kinds else f"<{size}>"


def _described(match: re.Match[str]) -> str:
    return describe_text(match.group(0)[1:-1])


def scrub(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` with known secrets masked, quoted values, echoed rows and key values described, at most
    ``limit`` characters."""
    # Secrets first, while the text still has the shape their patterns know (a conninfo's quotes...).
    cleaned = redact(text)
    cleaned = _CONVERT.sub(lambda m: m.group(1) + describe_text(m.group(2)) + m.group(3), cleaned)
    cleaned = _ROW_ECHO.sub(r"\1 (row not shown)", cleaned)
    cleaned = _PARSE_TAIL.sub(lambda m: f"{m.group(1)} a value (not shown)", cleaned)
    cleaned = _KEY_DETAIL.sub(")=(<values not shown>)", cleaned)
    cleaned = _QUOTED.sub(_described, cleaned)
    if "'" in cleaned:  # an unbalanced quote (a value holding one): whatever follows may be data
        cleaned = cleaned[: cleaned.index("'")] + "<rest not shown>"
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


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
