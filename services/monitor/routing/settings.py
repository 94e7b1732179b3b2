"""Where alerts go: ``AlertRoutingSettings`` (environment prefix ``AOETL_ALERT_ROUTING_``), nested in the
monitor's settings as ``alert_routing``.

``AOETL_ALERT_ROUTING_ENDPOINTS`` is JSON, endpoint name -> ``AlertEndpoint``::

    {"ops-slack": {"url": {"env": "OPS_SLACK_WEBHOOK"}, "format": "slack", "min_severity": "CRITICAL"},
     "pager":     {"url": {"file": "/run/secrets/pager-url"}, "secret": {"env": "PAGER_WHSEC"},
                   "tenants": ["acme"], "kinds": ["RUN_FAILED", "RUN_STUCK"], "pipelines": ["orders-*"]}}

An endpoint's URL and signing secret are *references* (``SecretRef``: an environment variable or a file,
as the policy's named connections reference their secrets), never values in the configuration itself: a
Slack incoming-webhook URL is a bearer credential in its path. They are read when a delivery is made (a
rotated file is picked up), registered with ``shared.redaction`` so no log line can show them, and no log
line, metric or error of the router names more than the endpoint's name.

Egress: an endpoint URL is checked like an ``http`` source's (``shared.policy.egress``): http(s) only, no
userinfo, and every address it resolves to must be public unless ``AOETL_ALERT_ROUTING_EGRESS_ALLOW``
names it (hosts, addresses or networks, optionally ``:port``; JSON list or comma-separated). The list is
the alert router's own, not the http sources' one: allowing an internal alert receiver must not open
the internal network to pipeline specs.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.contracts import Alert, AlertKind, Severity
from shared.errors import ConfigurationError
from shared.policy.egress import AllowEntry
from shared.redaction import register_secret
from shared.webhooks.signatures import standard_key

ENDPOINT_NAME = r"^[a-z][a-z0-9-]{0,39}$"  # a metrics label and a consumer group suffix: short and plain
SEVERITY_ORDER = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class SecretRef(BaseModel):
    """Where a secret lives: an environment variable or a file (e.g. a mounted Kubernetes Secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = Field(None, min_length=1)
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file' (where the secret lives)")
        return self

    @property
    def where(self) -> str:
        return f"environment variable {self.env}" if self.env else f"file {self.file}"

    def read(self, what: str) -> str:
        """The current value, registered for redaction; a ``ConfigurationError`` naming where it should be
        (never the value) when it is missing."""
        if self.env is not None:
            value = os.environ.get(self.env, "").strip()
        else:
            assert self.file is not None
            try:
                value = self.file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigurationError(f"{what}: cannot read {self.where}: {exc.strerror}") from None
        if not value:
            raise ConfigurationError(f"{what}: {self.where} is not set")
        register_secret(value)
        return value


class AlertEndpoint(BaseModel):
    """One HTTP receiver of alerts and the alerts it wants. Empty filter lists match everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: SecretRef = Field(description="where the URL lives (it may hold a token: it is a secret)")
    secret: SecretRef | None = Field(
        None, description="Standard Webhooks signing secret (whsec_<base64>); none: the body is not signed"
    )
    format: Literal["json", "slack"] = Field("json", description="generic JSON or a Slack incoming webhook")
    min_severity: Severity = Severity.INFO
    tenants: list[str] = Field(default_factory=list)
    pipelines: list[str] = Field(default_factory=list, description="names or fnmatch patterns ('orders-*')")
    kinds: list[AlertKind] = Field(default_factory=list)
    timeout_s: float = Field(10.0, gt=0, le=120, description="of one HTTP attempt")

    def wants(self, alert: Alert) -> bool:
        """Whether the alert passes this endpoint's filters."""
        if SEVERITY_ORDER[alert.severity] < SEVERITY_ORDER[self.min_severity]:
            return False
        if self.kinds and alert.kind not in self.kinds:
            return False
        if self.tenants and alert.tenant not in self.tenants:
            return False
        if self.pipelines:
            name = alert.pipeline or ""
            return bool(name) and any(fnmatch.fnmatchcase(name, pattern) for pattern in self.pipelines)
        return True

    def signing_key_problem(self, name: str) -> str | None:
        """Why the signing secret, when it can be read now, is not a Standard Webhooks one."""
        if self.secret is None:
            return None
        try:
            standard_key(self.secret.read(f"alert endpoint {name!r} secret"))
        except ConfigurationError:
            return None  # not readable by this process yet: reported at delivery time
        except ValueError as exc:
            return str(exc)
        return None


def _list_from_text(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class AlertRoutingSettings(BaseSettings):
    """The alert router's settings. No endpoint (the default): no router runs."""

    model_config = SettingsConfigDict(env_prefix="AOETL_ALERT_ROUTING_", frozen=True, extra="ignore")

    endpoints: dict[Annotated[str, Field(pattern=ENDPOINT_NAME)], AlertEndpoint] = Field(
        default_factory=dict, description="JSON: endpoint name -> {url, secret, format, filters}"
    )
    egress_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="non-public hosts/networks (optionally :port) endpoints may reach"
    )
    max_attempts: int = Field(8, ge=1, le=100, description="HTTP attempts per alert and endpoint")
    initial_backoff_s: float = Field(1.0, gt=0, description="first retry waits up to this long (jittered)")
    max_backoff_s: float = Field(60.0, gt=0, description="cap of one wait, Retry-After included")
    max_elapsed_s: float = Field(600.0, gt=0, description="give up on an alert after this long")
    max_alert_age_s: float = Field(
        86_400.0, gt=0, description="older alerts are not delivered (a new endpoint is not flooded)"
    )
    group_prefix: str = Field(
        "aoetl-alert-route", min_length=1, description="consumer groups: <prefix>.<endpoint><topic suffix>"
    )

    @field_validator("egress_allow", mode="before")
    @classmethod
    def _split_allow_list(cls, value: Any) -> Any:
        return _list_from_text(value)

    @field_validator("egress_allow")
    @classmethod
    def _entries_parse(cls, value: list[str]) -> list[str]:
        for entry in value:
            AllowEntry.parse(entry)  # ValueError names the entry
        return value

    @model_validator(mode="after")
    def _keys_are_standard(self) -> AlertRoutingSettings:
        for name, endpoint in self.endpoints.items():
            problem = endpoint.signing_key_problem(name)
            if problem:
                raise ValueError(f"alert endpoint {name!r}: {problem}")
        return self
