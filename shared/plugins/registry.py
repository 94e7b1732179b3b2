"""The plugin registry: sources, transform steps and destinations installed as Python entry points.

A distribution registers its types in three entry-point groups, the entry point's name being the type
(``op`` for a step) and its value the object implementing the protocol the built-ins implement:

* ``aoetl.sources``: a ``shared.connectors.base.Connector`` (``model``, ``info``, ``plan``, ``read``);
* ``aoetl.transforms``: a ``shared.transform.steps.StepKind`` (``model``, ``description``, ``apply``);
* ``aoetl.destinations``: a ``shared.destinations.DestinationKind`` (``model``, ``description``, ``open``).

Each is checked when it is loaded: it imports, it has the protocol's members, its ``model`` derives from
``shared.spec.plugins.PluginSource``/``PluginStep``/``PluginDestination``, narrows the discriminator to
exactly its entry point's name, is not a built-in type nor one another plugin already provides, marks
every field whose name says it is a path, URL, query, topic or secret reference with its ``Checked`` kind
(so the policy checks it, ``shared.policy.plugins``), and its JSON Schema can be generated (what the
catalog and ``aoetl validate`` show). A plugin that fails any check is *not* registered: it is kept as a
:class:`PluginFailure` (one line: group, name, target, why) that :func:`report_plugins` logs at start-up,
and the process carries on; a spec naming its type is then rejected as naming an unknown type. Loading
never raises.

The registry is loaded once per process, on first use (a spec naming a non-built-in type, the catalog, a
service's start-up), under a lock; ``load_plugins`` builds one from given entry points (tests).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, get_args

from pydantic import BaseModel

from shared.policy.plugins import declared_fields
from shared.spec.models import Destination, Source, TransformStep
from shared.spec.plugins import DISCRIMINATOR, PLUGIN_BASES, PluginKind, PluginUnion, literal_tag

GROUPS: dict[PluginKind, str] = {
    "source": "aoetl.sources",
    "step": "aoetl.transforms",
    "destination": "aoetl.destinations",
}
_MEMBERS: dict[PluginKind, tuple[str, ...]] = {
    "source": ("model", "info", "plan", "read"),
    "step": ("model", "description", "apply"),
    "destination": ("model", "description", "open"),
}
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that was not registered, and why (one line)."""

    group: str
    name: str
    target: str
    reason: str

    def __str__(self) -> str:
        return f"plugin {self.name!r} ({self.group} = {self.target}) not loaded: {self.reason}"


@dataclass(frozen=True)
class InstalledPlugins:
    """The registered plugin objects by type, per kind, and the entry points that failed."""

    sources: Mapping[str, Any] = field(default_factory=dict)
    steps: Mapping[str, Any] = field(default_factory=dict)
    destinations: Mapping[str, Any] = field(default_factory=dict)
    failures: tuple[PluginFailure, ...] = ()
    origins: Mapping[str, str] = field(default_factory=dict)  # "<kind>:<type>" -> "<dist> <version>"

    def of(self, kind: PluginKind) -> Mapping[str, Any]:
        return {"source": self.sources, "step": self.steps, "destination": self.destinations}[kind]

    def failures_of(self, kind: PluginKind, name: str) -> list[PluginFailure]:
        """Why the entry point(s) of ``kind`` named ``name`` were not registered (empty: none failed)."""
        return [f for f in self.failures if f.group == GROUPS[kind] and f.name == name]

    def models(self, kind: PluginKind) -> dict[str, type[BaseModel]]:
        """The spec model of every registered plugin of ``kind``, by type."""
        return {name: plugin.model for name, plugin in self.of(kind).items()}


def _builtin_tags(kind: PluginKind) -> list[str]:
    union = {"source": Source, "step": TransformStep, "destination": Destination}[kind]
    marker = get_args(union)[1]
    assert isinstance(marker, PluginUnion)
    return marker.builtin_tags()


def _problem(kind: PluginKind, name: str, plugin: Any, taken: Mapping[str, Any]) -> str | None:
    """Why ``plugin`` cannot be registered as type ``name`` of ``kind``, or None."""
    missing = [m for m in _MEMBERS[kind] if not hasattr(plugin, m)]
    if missing:
        return f"it lacks {', '.join(missing)} (a {kind} plugin provides {', '.join(_MEMBERS[kind])})"
    model = plugin.model
    base = PLUGIN_BASES[kind]
    if not (isinstance(model, type) and issubclass(model, base)):
        return f"its model must be a subclass of shared.spec.plugins.{base.__name__}, got {model!r}"
    discriminator = DISCRIMINATOR[kind]
    tag = literal_tag(model, discriminator)
    if tag != name:
        return (
            f"its model's {discriminator!r} must be Literal[{name!r}] (the entry point's name), got {tag!r}"
        )
    if name in _builtin_tags(kind):
        return f"{name!r} is a built-in {kind} type"
    if name in taken:
        return f"{name!r} is already provided by another plugin"
    undeclared = _undeclared_fields(model)
    if undeclared:
        return (
            f"its model's field(s) {', '.join(undeclared)} look like paths, URLs, SQL, topics or secret"
            " references but carry no shared.spec.plugins.Checked marker, so the policy could not check them"
        )
    try:
        model.model_json_schema()
    except Exception as exc:  # a model pydantic cannot describe is unusable in the catalog and validate
        return f"its model has no JSON Schema: {type(exc).__name__}: {exc}"
    return None


# Field names that say what the policy must check. A plugin field named so without a ``Checked`` marker is
# refused at load: silently unchecked, it would be a way around the policy (a ``*_env`` field naming an
# environment variable, the way secrets reached specs before connections, is refused the same way).
_SENSITIVE_NAME = re.compile(
    r"^(.*_)?(path|paths|file|files|dir|directory|url|urls|uri|query|sql|topic|topics|connection|dsn|env)$"
)


def _undeclared_fields(model: type[BaseModel]) -> list[str]:
    declared = declared_fields(model)
    return [n for n in model.model_fields if _SENSITIVE_NAME.match(n) and n not in declared]


def load_plugins(points: Iterable[EntryPoint] | None = None) -> InstalledPlugins:
    """A registry of ``points`` (default: every installed entry point of the three groups). Never raises:
    an entry point that cannot be used is recorded as a failure."""
    by_group = {group: kind for kind, group in GROUPS.items()}
    if points is None:
        points = [ep for group in GROUPS.values() for ep in entry_points(group=group)]
    found: dict[PluginKind, dict[str, Any]] = {kind: {} for kind in GROUPS}
    failures: list[PluginFailure] = []
    origins: dict[str, str] = {}
    for point in points:
        kind = by_group.get(point.group)
        if kind is None:
            continue
        try:
            plugin = point.load()
        except Exception as exc:  # any error of third-party code at import: reported, never fatal
            failures.append(PluginFailure(point.group, point.name, point.value, _why(exc)))
            continue
        problem = _problem(kind, point.name, plugin, found[kind])
        if problem:
            failures.append(PluginFailure(point.group, point.name, point.value, problem))
            continue
        found[kind][point.name] = plugin
        dist = point.dist
        origins[f"{kind}:{point.name}"] = f"{dist.name} {dist.version}" if dist is not None else point.value
    return InstalledPlugins(
        sources=found["source"],
        steps=found["step"],
        destinations=found["destination"],
        failures=tuple(failures),
        origins=origins,
    )


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"cannot import it: {type(exc).__name__}: {text[0]}" if text else f"cannot import it: {exc!r}"


_lock = threading.RLock()
_installed: InstalledPlugins | None = None
_loading = False


def installed() -> InstalledPlugins:
    """This process's registry, loaded at the first call. A call made while it loads (a plugin module
    that validates a spec at import time) sees no plugins rather than loading them again or deadlocking."""
    global _installed, _loading
    if _installed is None:
        with _lock:
            if _loading:
                return InstalledPlugins()
            if _installed is None:
                _loading = True
                try:
                    _installed = load_plugins()
                finally:
                    _loading = False
    return _installed


def report_plugins(log: logging.Logger = _log) -> InstalledPlugins:
    """Load the registry now (a service's start-up) and log what it holds: one info line for what was
    registered, one error line per entry point that failed."""
    plugins = installed()
    for failure in plugins.failures:
        log.error("%s", failure)
    if plugins.origins:
        log.info("plugins: %s", ", ".join(f"{k} ({v})" for k, v in sorted(plugins.origins.items())))
    return plugins
