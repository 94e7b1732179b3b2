"""The CLI's own configuration: the gateway to talk to, the token to send it, the tenant to name.

Read from ``$AOETL_CONFIG``, else ``$XDG_CONFIG_HOME/aoetl/config.toml``, else
``~/.config/aoetl/config.toml``::

    [gateway]
    url = "http://127.0.0.1:8000"
    token = "aoetl_..."
    tenant = "local"

A named context in use (``aoetl.contexts``: ``aoetl --context NAME``, ``aoetl context use NAME``) gives its
``gateway_url``, ``token`` and ``tenant`` over the ``[gateway]`` table's. ``AOETL_TOKEN`` wins over the
file's token, ``AOETL_GATEWAY_URL`` over its url. The file holds a
credential, so it is written with mode 0600 (its folder 0700), and a file that others may read is refused,
as ssh refuses such a key: the token in it must be considered leaked. The token is sent only to the
gateway's REST API (never to its webhook endpoints, which authenticate by signature) and printed only
when a key is created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aoetl.contexts import active_context, read_config_data, write_config_data
from aoetl.contexts import config_path as config_path
from shared.errors import ConfigurationError

if TYPE_CHECKING:
    import httpx

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8000"
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class CliConfig:
    token: str | None = None
    tenant: str | None = None
    gateway_url: str | None = None

    @property
    def tenant_or_default(self) -> str:
        return self.tenant or DEFAULT_TENANT

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def read_config_file(path: Path | None = None) -> CliConfig:
    """The ``[gateway]`` table, with the context in use over it."""
    data = read_config_data(path)
    gateway = data.get("gateway", {})
    path = path or config_path()
    if not isinstance(gateway, dict):
        raise ConfigurationError(f"{path}: [gateway] must be a table")
    config = CliConfig(
        token=_str(gateway, "token", path),
        tenant=_str(gateway, "tenant", path),
        gateway_url=_str(gateway, "url", path),
    )
    context = active_context(data)
    if context is None:
        return config
    return CliConfig(
        token=context.token or config.token,
        tenant=context.tenant or config.tenant,
        gateway_url=context.gateway_url or config.gateway_url,
    )


def load_config() -> CliConfig:
    """The file, then the environment over it."""
    config = read_config_file()
    token = os.environ.get("AOETL_TOKEN") or config.token
    url = os.environ.get("AOETL_GATEWAY_URL") or config.gateway_url
    return replace(config, token=token, gateway_url=url)


def save_config(config: CliConfig, path: Path | None = None) -> Path:
    """Write the ``[gateway]`` table (atomically, mode 0600), keeping the file's contexts."""
    path = path or config_path()
    try:
        data = read_config_data(path)
    except ConfigurationError:
        data = {}  # an unsafe or broken file is replaced (its token must be considered leaked anyway)
    data["gateway"] = {
        k: v
        for k, v in (("url", config.gateway_url), ("token", config.token), ("tenant", config.tenant))
        if v is not None
    }
    return write_config_data(data, path)


def gateway_client(url: str, config: CliConfig | None = None, *, timeout: float = 30.0) -> httpx.Client:
    """An HTTP client of the gateway's REST API that sends the configured token."""
    # imported here: every Kafka-door command reads this module's config, few talk to a gateway, and httpx
    # costs a tenth of a second at start (cold start, see ``aoetl.cli``)
    import httpx

    config = config or load_config()
    return httpx.Client(base_url=url.rstrip("/"), headers=config.auth_headers(), timeout=timeout)


def refusal_hint(status: int) -> str:
    if status == 401:
        return " (no valid token: set AOETL_TOKEN, or run `aoetl auth login`)"
    if status == 403:
        return " (the token's role does not allow this)"
    return ""


def _str(table: dict[str, Any], key: str, path: Path) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"{path}: gateway.{key} must be a string")
    return value
