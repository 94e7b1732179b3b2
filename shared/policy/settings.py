"""What the operator allows a pipeline spec to do: ``PolicySettings`` (environment prefix ``AOETL_POLICY_``).

Production default: no data root, so no file source or file destination is allowed at all until the
operator names the directories pipelines may read and write (``AOETL_POLICY_DATA_ROOTS``: a JSON list, or
paths separated by ``os.pathsep``). The local development tools (the dev stack's service supervisor, the
``aoetl`` CLI and the test suite) put :func:`dev_data_roots` there when it is unset: the working
directory's ``data``, ``examples`` and ``.state`` folders and the system temp directory, which is where
``make demo``, the README examples and the tests keep their files. The working directory itself is not a
root: it holds the code, the virtualenv and any ``.env`` file, which no pipeline should read or overwrite.

The other limits are safe by default: PostgreSQL source statements are cancelled after
``postgres_statement_timeout_s``; the transform's DuckDB has no temp directory, a memory cap, a thread cap
and a time limit per batch.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DATA_ROOTS_ENV = "AOETL_POLICY_DATA_ROOTS"
DEV_DATA_FOLDERS = ("data", "examples", ".state")

# Topics the system owns: its own (``aoetl.*`` with any suffix), the monitor's faust changelogs
# (``aoetl-monitor-*``), Kafka's internal topics (``__consumer_offsets``, ``__transaction_state``) and a
# Schema Registry's store. A spec that wrote them could forge requests, results or offsets.
INTERNAL_TOPIC_PREFIXES = ("aoetl.", "aoetl-", "__", "_schemas", "_confluent")


class PolicySettings(BaseSettings):
    """The spec policy's settings. Every field has a safe default; see the module docstring."""

    model_config = SettingsConfigDict(env_prefix="AOETL_POLICY_", frozen=True, extra="ignore")

    data_roots: Annotated[tuple[Path, ...], NoDecode] = Field(
        (), description="directories file sources and destinations may use; none = no file access"
    )
    internal_topic_prefixes: tuple[str, ...] = Field(
        INTERNAL_TOPIC_PREFIXES, description="topic name prefixes no spec or trigger may read or write"
    )
    postgres_statement_timeout_s: float = Field(
        300.0, gt=0, le=86_400, description="statement_timeout of every PostgreSQL source statement"
    )
    transform_memory_limit: str = Field(
        "1GB", pattern=r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", description="DuckDB memory_limit"
    )
    transform_threads: int = Field(2, ge=1, le=64, description="DuckDB threads of the transform")
    transform_timeout_s: float = Field(
        120.0, gt=0, le=86_400, description="longest one batch may spend in the transform's DuckDB"
    )

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return ()
            return json.loads(text) if text.startswith("[") else [p for p in text.split(os.pathsep) if p]
        return value

    @field_validator("data_roots")
    @classmethod
    def _absolute_roots(cls, roots: tuple[Path, ...]) -> tuple[Path, ...]:
        # Symlinks resolved once here: every later check compares real paths with real paths.
        return tuple(Path(os.path.realpath(root.expanduser())) for root in roots)


def dev_data_roots(cwd: Path | None = None) -> tuple[Path, ...]:
    """The data roots of local development (see the module docstring)."""
    base = Path.cwd() if cwd is None else cwd
    return (*(base / folder for folder in DEV_DATA_FOLDERS), Path(tempfile.gettempdir()))


def dev_data_roots_env(cwd: Path | None = None) -> str:
    """:func:`dev_data_roots` as the value of ``AOETL_POLICY_DATA_ROOTS``."""
    return json.dumps([str(root) for root in dev_data_roots(cwd)])


def load_policy() -> PolicySettings:
    """The policy of this process, read from the environment now (a bad value is a ConfigurationError
    naming the variable). Cheap enough to call where a connector acts, so a test or an operator who
    changes the environment is seen without a restart of anything cached."""
    from shared.settings import load_settings  # here: shared.settings imports the Kafka package

    return load_settings(PolicySettings)
