"""How a CLI command reaches a deployment: straight on Kafka (the Kafka door), or through the gateway's REST
API (for a deployment whose broker a laptop cannot reach). One ``Transport`` protocol, two strategies;
a command asks ``open_transport`` for the one in use and never branches on which it got.

Which one: ``--gateway URL`` (or ``AOETL_GATEWAY_URL``) on the command, else the context's ``via =
"gateway"`` (``aoetl.contexts``: its ``gateway_url``), else Kafka. Through the gateway every call carries the
configured token and is decided by the gateway's own authentication, roles and audit (``services/gateway``);
on Kafka the door's audit record (``aoetl.commands.door``) comes first, as before.

What the strategies answer is the same: a run id for a submission, ``None`` for an unknown run or
definition, the system's own contracts (``PipelineDefinition``) for listings; a run's state is the
document the command prints (``RunState``: the Kafka side's result or folded progress, the gateway's
``GET /runs/{id}`` view), with its status name for the exit code. Cold start: httpx and the Kafka client
are imported by the strategy that needs them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aoetl.commands.config import CliConfig, load_config, refusal_hint
from aoetl.failures import CliFailure, gateway_exit_code
from shared.errors import ConfigurationError

if TYPE_CHECKING:
    import httpx

    from aoetl.client import AoetlClient
    from shared.contracts import PipelineDefinition
    from shared.spec.models import PipelineSpec

FINAL = ("COMPLETED", "COMPLETED_WITH_WARNINGS", "FAILED", "REJECTED", "TIMED_OUT", "CANCELLED")


@dataclass(frozen=True)
class RunState:
    """A run as a command shows it: ``status`` (SUBMITTED, RUNNING or a final RunStatus name) and the
    document ``-o json|yaml`` prints."""

    run_id: str
    status: str
    document: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.status in FINAL


class Transport(Protocol):
    """What a command asks of a deployment."""

    where: str  # "Kafka" or "the gateway at URL": named in what a command prints

    def submit(self, spec: PipelineSpec) -> str: ...

    def stop(self, run_id: str) -> None: ...

    def run_state(self, run_id: str) -> RunState | None: ...

    def definitions(self) -> list[PipelineDefinition]: ...

    def close(self) -> None: ...


class GatewayRefusedError(CliFailure):
    """The gateway answered an error: its status, its text, the hint, the exit code of its kind."""

    def __init__(self, what: str, response: httpx.Response):
        detail = response.text
        with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not a Problem
            detail = str(response.json().get("detail", detail))
        super().__init__(f"{what}: {response.status_code} {detail}{refusal_hint(response.status_code)}")
        self.exit_code = gateway_exit_code(response.status_code)


class RestTransport:
    """The gateway's REST API (``POST /runs``, ``GET /runs/{id}``, ``POST /runs/{id}/stop``,
    ``GET /definitions``), with the configured token."""

    def __init__(self, url: str, config: CliConfig | None = None):
        from aoetl.commands.config import gateway_client

        self.where = f"the gateway at {url}"
        self._http = gateway_client(url, config)

    def _checked(self, what: str, response: httpx.Response, *, missing_ok: bool = False) -> httpx.Response:
        if response.status_code >= 300 and not (missing_ok and response.status_code == 404):
            raise GatewayRefusedError(what, response)
        return response

    def submit(self, spec: PipelineSpec) -> str:
        body = {"spec": spec.model_dump(mode="json", exclude_none=True)}
        answer = self._checked(f"submit {spec.name}", self._http.post("/runs", json=body))
        return str(answer.json()["run_id"])

    def stop(self, run_id: str) -> None:
        self._checked(f"stop {run_id}", self._http.post(f"/runs/{run_id}/stop"))

    def run_state(self, run_id: str) -> RunState | None:
        response = self._checked(f"run {run_id}", self._http.get(f"/runs/{run_id}"), missing_ok=True)
        if response.status_code == 404:
            return None
        view = response.json()
        return RunState(run_id, str(view["status"]), view)

    def definitions(self) -> list[PipelineDefinition]:
        from shared.contracts import PipelineDefinition

        rows = self._checked("definitions", self._http.get("/definitions")).json()
        return sorted((PipelineDefinition.model_validate(r) for r in rows), key=lambda d: d.name)

    def close(self) -> None:
        self._http.close()


class KafkaTransport:
    """The Kafka door: requests and tombstones produced behind the door's audit record, state read from
    the results, events and run-history topics."""

    where = "Kafka"

    def __init__(self, client: AoetlClient | None = None):
        from aoetl.client import AoetlClient

        self.client = client or AoetlClient()

    def submit(self, spec: PipelineSpec) -> str:
        from aoetl.commands.door import submit_audited

        return submit_audited(self.client, spec).run_id

    def stop(self, run_id: str) -> None:
        from aoetl.commands.door import stop_audited

        stop_audited(self.client, run_id)

    def run_state(self, run_id: str) -> RunState | None:
        from aoetl.commands.runs import find_summary, summary_document
        from shared.progress import fold

        result = self.client.find_result(run_id)
        if result is not None:
            return RunState(run_id, result.status.value, result.model_dump(mode="json"))
        events = self.client.run_events(run_id)
        if events:
            progress = fold(run_id, events)
            status = progress.status.value if progress.status is not None else "RUNNING"
            return RunState(run_id, status, {"run_id": run_id, "status": status, "events": len(events)})
        summary = find_summary(self.client, run_id)
        if summary is None:
            return None
        status = summary.status.value if summary.status is not None else "RUNNING"
        return RunState(run_id, status, summary_document(summary))

    def definitions(self) -> list[PipelineDefinition]:
        from aoetl.commands.definitions import read_definitions

        return sorted(read_definitions(self.client).values(), key=lambda d: d.name)

    def close(self) -> None:
        self.client.close()


def gateway_in_use(gateway: str | None, config: CliConfig | None = None) -> str | None:
    """The gateway URL a command goes through: ``--gateway``/``AOETL_GATEWAY_URL``, else the context's when
    it says ``via = "gateway"``; None: Kafka."""
    if gateway:
        return gateway
    from aoetl.contexts import active_context, asked_by_name

    try:
        context = active_context()
    except ConfigurationError:
        if asked_by_name():
            raise
        return None  # as ``aoetl.contexts.enter``: an unreadable file stops only a command that needs it
    if context is not None and context.via == "gateway":
        url = (config or load_config()).gateway_url
        if not url:
            raise ConfigurationError(f"context {context.name!r} says via = 'gateway' but has no gateway_url")
        return url
    return None


def open_transport(gateway: str | None = None) -> Transport:
    """The strategy in use (see the module docstring)."""
    url = gateway_in_use(gateway)
    return RestTransport(url) if url else KafkaTransport()
