"""The CLI's own configuration: the gateway to talk to, the token to send it, the tenant to name.

Read from ``$AOETL_CONFIG``, else ``$XDG_CONFIG_HOME/aoetl/config.toml``, else
``~/.config/aoetl/config.toml``::

    [gateway]
    url = "http://127.0.0.1:8000"
    token = "aoetl_..."
    tenant = "local"

``AOETL_TOKEN`` wins over the file's token, ``AOETL_GATEWAY_URL`` over its url. The file holds a
credential, so it is written with mode 0600 (its folder 0700), and a file that others may read is refused,
as ssh refuses such a key: the token in it must be considered leaked. The token is sent only to the
gateway's REST API (never to its webhook endpoints, which authenticate by signature) and printed only
when a key is created.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

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


def config_path() -> Path:
    override = os.environ.get("AOETL_CONFIG")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aoetl" / "config.toml"


def read_config_file(path: Path | None = None) -> CliConfig:
    path = path or config_path()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return CliConfig()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"{path} can be read by other users (mode {stat.S_IMODE(mode):o}): consider its token leaked,"
            f" revoke it, and `chmod 600 {path}`"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path} is not readable TOML: {exc}") from exc
    gateway = data.get("gateway", {})
    if not isinstance(gateway, dict):
        raise ConfigurationError(f"{path}: [gateway] must be a table")
    return CliConfig(
        token=_str(gateway, "token", path),
        tenant=_str(gateway, "tenant", path),
        gateway_url=_str(gateway, "url", path),
    )


def load_config() -> CliConfig:
    """The file, then the environment over it."""
    config = read_config_file()
    token = os.environ.get("AOETL_TOKEN") or config.token
    url = os.environ.get("AOETL_GATEWAY_URL") or config.gateway_url
    return replace(config, token=token, gateway_url=url)


def save_config(config: CliConfig, path: Path | None = None) -> Path:
    """Write atomically with mode 0600: the file is never readable by others, not even for a moment."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    gateway = {
        k: v
        for k, v in (("url", config.gateway_url), ("token", config.token), ("tenant", config.tenant))
        if v is not None
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # O_EXCL below: the mode is the one given here, not a stale file's
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            tomli_w.dump({"gateway": gateway}, out)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
