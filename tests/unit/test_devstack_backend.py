from __future__ import annotations

from pathlib import Path

import pytest

from aoetl.devstack import Backend, backend, choose_backend, running_stack
from shared.errors import ConfigurationError

pytestmark = pytest.mark.unit


def test_auto_picks_testcontainers_only_when_docker_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AOETL_STACK_BACKEND", raising=False)
    monkeypatch.setattr(backend, "docker_available", lambda: False)
    assert choose_backend() is Backend.LOCAL
    monkeypatch.setattr(backend, "docker_available", lambda: True)
    assert choose_backend() is Backend.TESTCONTAINERS


def test_explicit_backend_wins_and_unknown_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOETL_STACK_BACKEND", "external")
    assert choose_backend() is Backend.EXTERNAL
    assert choose_backend("local") is Backend.LOCAL
    with pytest.raises(ConfigurationError):
        choose_backend("podman")


def test_external_backend_requires_both_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.delenv("AOETL_POSTGRES_DSN", raising=False)
    with pytest.raises(ConfigurationError, match="AOETL_POSTGRES_DSN"), running_stack(tmp_path, "external"):
        pass
