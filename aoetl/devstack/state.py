"""The state folder: where the stack keeps data, logs and ``stack.json`` (PIDs, ports, addresses)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "stack.json"


def repo_root() -> Path:
    """The checkout this package lives in (``aoetl/devstack/state.py`` -> three levels up)."""
    return Path(__file__).resolve().parents[2]


def default_state_dir() -> Path:
    override = os.environ.get("AOETL_STATE_DIR")
    return Path(override).expanduser() if override else repo_root() / ".state" / "dev"


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic replace, so a reader in another process never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)
