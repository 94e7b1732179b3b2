"""The metric names a PromQL expression selects, for the tests that hold the alert rules and the
dashboards to the metrics the services export.

Hand-written: no maintained PromQL parser is on PyPI (Prometheus's own is Go), and this needs only the
selectors' names. It drops what may hold identifiers that are not metrics (string literals, label
matchers, ranges and subqueries, grouping label lists, function calls' names, keywords), and what stays is
a metric name. promtool (and, in the scrape test, a real Prometheus) checks that the expressions parse.
"""

from __future__ import annotations

import re

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# Not preceded by a character of a name, a number or a Grafana variable ($pipeline): "10m" holds no "m".
_IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*(?![A-Za-z0-9_:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"offset", "inf", "nan", "start", "end"}
)


_SELECTOR = re.compile(
    r'(?<![A-Za-z0-9_:.$])(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)\s*\{(?P<matchers>(?:[^{}"]|"(?:[^"\\]|\\.)*")*)\}'
)
_MATCHER_LABEL = re.compile(r"(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")


def matched_labels(expression: str) -> dict[str, set[str]]:
    """The label names each selector's matchers use (``metric{a="x", b=~"y"}`` -> {metric: {a, b}})."""
    found: dict[str, set[str]] = {}
    for selector in _SELECTOR.finditer(expression):
        matchers = _STRINGS.sub('""', selector["matchers"])
        found.setdefault(selector["name"], set()).update(_MATCHER_LABEL.findall(matchers))
    return found


def metric_names(expression: str) -> set[str]:
    text = _STRINGS.sub('""', expression)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}
