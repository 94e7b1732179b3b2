"""Named CLI contexts: which deployment an ``aoetl`` command talks to, chosen by name.

The CLI's config file (``$AOETL_CONFIG``, else ``$XDG_CONFIG_HOME/aoetl/config.toml``, else
``~/.config/aoetl/config.toml``) may hold, beside its ``[gateway]`` table, contexts and the one in use::

    current_context = "staging"

    [contexts.staging]
    bootstrap_servers = "kafka.staging.example.com:9093"
    topic_suffix = ".staging"
    sasl_username = "cli"
    gateway_url = "https://aoetl.staging.example.com"
    token = "aoetl_..."
    tenant = "acme"
    via = "gateway"   # commands go through the gateway's REST API (aoetl.transport); default "kafka"

The context used is ``aoetl --context NAME``, else ``$AOETL_CONTEXT``, else ``current_context`` (``aoetl
context use NAME`` sets it); none is used when none is named. Environment variables still win: a context
only fills the variables the environment leaves unset (``AOETL_KAFKA_BOOTSTRAP_SERVERS`` or its alias
``KAFKA_BOOTSTRAP_SERVERS``, ``AOETL_TOPIC_SUFFIX``, ``AOETL_KAFKA_SASL_USERNAME``), for the duration of the
command, so every settings class (``shared.settings``, pydantic-settings) reads one environment and there
is no second order of precedence to learn. Its gateway fields (``gateway_url``, ``token``, ``tenant``) are
read by the CLI's config (``aoetl.commands.config``) over the ``[gateway]`` table and under
``AOETL_GATEWAY_URL`` / ``AOETL_TOKEN``; the token never enters the environment (where child processes
would inherit it). The SASL password is not a context field: it stays in ``AOETL_KAFKA_SASL_PASSWORD``.
``aoetl dev`` ignores contexts: the dev stack is local by definition, and a context naming a remote broker
must never leak into the services it starts.

The file holds credentials: it is read only when no other user may read it (mode 0600), and written
atomically with that mode. Cold start (``aoetl.cli``): this module is read before every command, so it
imports only the standard library; the few fields are checked here by hand.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from shared.errors import ConfigurationError

CONTEXT_ENV = "AOETL_CONTEXT"
CURRENT_KEY = "current_context"
CONTEXTS_KEY = "contexts"
VIA = ("kafka", "gateway")

# a context field -> the environment variables that set it (the first is the one a context fills)
KAFKA_VARIABLES: dict[str, tuple[str, ...]] = {
    "bootstrap_servers": ("AOETL_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    "topic_suffix": ("AOETL_TOPIC_SUFFIX",),
    "sasl_username": ("AOETL_KAFKA_SASL_USERNAME",),
}
GATEWAY_VARIABLES: dict[str, tuple[str, ...]] = {
    "gateway_url": ("AOETL_GATEWAY_URL",),
    "token": ("AOETL_TOKEN",),
}


@dataclass
class _Selection:
    """What the root callback decided for the command being run (and clears when it ends)."""

    chosen: str | None = None  # ``--context NAME``
    ignored: bool = False  # ``aoetl dev``: no context at all


_selection = _Selection()


@dataclass(frozen=True)
class Context:
    name: str
    bootstrap_servers: str | None = None
    topic_suffix: str | None = None
    sasl_username: str | None = None
    gateway_url: str | None = None
    token: str | None = None
    tenant: str | None = None
    via: str | None = None  # "kafka" (the default) or "gateway": how commands reach it (aoetl.transport)

    def shown(self) -> dict[str, str | None]:
        """The fields as they may be printed: the token only as set or not."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["token"] = "(set)" if self.token else None
        return values


FIELD_NAMES = tuple(f.name for f in fields(Context) if f.name != "name")


def config_path() -> Path:
    override = os.environ.get("AOETL_CONFIG")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aoetl" / "config.toml"


def read_config_data(path: Path | None = None) -> dict[str, Any]:
    """The config file's TOML ({} when there is none); ``ConfigurationError`` when others may read it or it
    does not parse."""
    path = path or config_path()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"{path} can be read by other users (mode {stat.S_IMODE(mode):o}): consider its token leaked,"
            f" revoke it, and `chmod 600 {path}`"
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path} is not readable TOML: {exc}") from exc


def write_config_data(data: Mapping[str, Any], path: Path | None = None) -> Path:
    """Write atomically with mode 0600: the file is never readable by others, not even for a moment."""
    import tomli_w  # only when writing (cold start)

    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # O_EXCL below: the mode is the one given here, not a stale file's
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            tomli_w.dump(dict(data), out)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def contexts(data: Mapping[str, Any]) -> dict[str, Context]:
    """Every context of the file's ``data``, checked: tables of known string fields."""
    table = data.get(CONTEXTS_KEY, {})
    if not isinstance(table, dict):
        raise ConfigurationError(f"{config_path()}: [{CONTEXTS_KEY}] must be a table of contexts")
    found: dict[str, Context] = {}
    for name, values in table.items():
        if not isinstance(values, dict):
            raise ConfigurationError(f"{config_path()}: {CONTEXTS_KEY}.{name} must be a table")
        unknown = sorted(set(values) - set(FIELD_NAMES))
        if unknown:
            raise ConfigurationError(
                f"{config_path()}: {CONTEXTS_KEY}.{name}: unknown field(s) {', '.join(unknown)}; "
                f"known: {', '.join(FIELD_NAMES)}"
            )
        for key, value in values.items():
            if not isinstance(value, str):
                raise ConfigurationError(f"{config_path()}: {CONTEXTS_KEY}.{name}.{key} must be a string")
        if values.get("via") not in (None, *VIA):
            raise ConfigurationError(
                f"{config_path()}: {CONTEXTS_KEY}.{name}.via must be one of {', '.join(VIA)}"
            )
        found[name] = Context(name, **values)
    return found


def selected_name(data: Mapping[str, Any]) -> str | None:
    """The context asked for: ``--context``, else ``$AOETL_CONTEXT``, else the file's current one."""
    current = data.get(CURRENT_KEY)
    if current is not None and not isinstance(current, str):
        raise ConfigurationError(f"{config_path()}: {CURRENT_KEY} must be a string")
    if _selection.ignored:
        return None
    return _selection.chosen or os.environ.get(CONTEXT_ENV) or current or None


def asked_by_name() -> bool:
    """Whether this command names a context (``--context`` or ``$AOETL_CONTEXT``), not only the file."""
    return bool(_selection.chosen or os.environ.get(CONTEXT_ENV))


def active_context(data: Mapping[str, Any] | None = None) -> Context | None:
    """The context in use, or None; ``ConfigurationError`` naming the known ones for an unknown name."""
    data = read_config_data() if data is None else data
    name = selected_name(data)
    if name is None:
        return None
    known = contexts(data)
    if name not in known:
        listed = ", ".join(sorted(known)) or "none defined"
        raise ConfigurationError(
            f"no context named {name!r} in {config_path()} (contexts: {listed}); `aoetl context list`"
        )
    return known[name]


def overridden(field: str) -> str | None:
    """The environment variable that sets ``field`` now (so wins over any context), if any."""
    names = KAFKA_VARIABLES.get(field, ()) + GATEWAY_VARIABLES.get(field, ())
    return next((name for name in names if os.environ.get(name)), None)


def enter(chosen: str | None, *, ignored: bool = False, apply: bool = True) -> Callable[[], None]:
    """Use the context of this command (``--context`` given as ``chosen``; none at all when ``ignored``):
    when ``apply``, fill the Kafka variables the environment leaves unset (``aoetl context`` itself only
    reads the file, so that ``context use`` can repair a ``current_context`` naming no context). Returns
    what undoes it (the root callback calls it when the command ends, so a CLI run in process, as tests
    do, leaves the environment as it found it)."""
    _selection.chosen, _selection.ignored = chosen, ignored
    context = None
    if apply and not ignored:
        try:
            data = read_config_data()
        except ConfigurationError:
            if asked_by_name():
                raise
            # no context asked for by name: a command that needs the file (a token) says why it is
            # refused; one that does not (a Kafka command) runs as it did before contexts
            data = {}
        context = active_context(data)
    filled: list[str] = []
    if context is not None:
        for field, names in KAFKA_VARIABLES.items():
            value = getattr(context, field)
            if value is not None and overridden(field) is None:
                os.environ[names[0]] = value
                filled.append(names[0])

    def leave() -> None:
        _selection.chosen, _selection.ignored = None, False
        for name in filled:
            os.environ.pop(name, None)

    return leave
