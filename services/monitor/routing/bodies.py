"""What an alert looks like on the wire to a receiver: the HTTP body of each endpoint format.

* ``json``: the Standard Webhooks payload shape, ``{"type": "aoetl.alert.<kind>", "timestamp": ...,
  "data": {...}}``, ``data`` holding every field of the ``Alert`` record (its JSON form). The body is
  built once per delivery and signed as these exact bytes.
* ``slack``: a Slack incoming-webhook body, ``{"text": ..., "blocks": [...]}``: ``text`` is the
  notification's fallback line, ``blocks`` a header, the message and a context line (run, pipeline,
  tenant, alert id). Texts are escaped as Slack's mrkdwn requires (``&``, ``<``, ``>``: otherwise an
  alert message could forge a link or a mention) and cut to Slack's block limits.

Alert messages are ``RedactedText`` (masked when the record was built); bodies add no other text.
"""

from __future__ import annotations

import json
from typing import Any

from shared.contracts import Alert

SLACK_HEADER_MAX = 150  # Slack's limit for a plain_text header
SLACK_TEXT_MAX = 3000  # and for a section's text
SEVERITY_EMOJI = {"INFO": ":information_source:", "WARNING": ":warning:", "CRITICAL": ":rotating_light:"}


def event_type(alert: Alert) -> str:
    return f"aoetl.alert.{alert.kind.value.lower()}"


def json_body(alert: Alert) -> dict[str, Any]:
    return {
        "type": event_type(alert),
        "timestamp": alert.at.isoformat(),
        "data": alert.model_dump(mode="json"),
    }


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_body(alert: Alert) -> dict[str, Any]:
    severity = alert.severity.value
    headline = f"{severity} {alert.kind.value}" + (f" — {alert.pipeline}" if alert.pipeline else "")
    message = _slack_escape(alert.message)
    context = [f"alert `{alert.alert_id}`", f"tenant `{_slack_escape(alert.tenant)}`"]
    if alert.run_id:
        context.insert(0, f"run `{_slack_escape(alert.run_id)}`")
    if alert.pipeline:
        context.insert(1 if alert.run_id else 0, f"pipeline `{_slack_escape(alert.pipeline)}`")
    return {
        "text": _cut(f"{SEVERITY_EMOJI.get(severity, '')} {headline}: {message}".strip(), SLACK_TEXT_MAX),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": _cut(headline, SLACK_HEADER_MAX)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(message or "-", SLACK_TEXT_MAX)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]},
        ],
    }


def render(alert: Alert, format: str) -> bytes:
    """The body's bytes (compact JSON, UTF-8) in the endpoint's ``format``."""
    body = slack_body(alert) if format == "slack" else json_body(alert)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
