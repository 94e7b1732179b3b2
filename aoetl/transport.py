"""How a CLI command reaches a deployment: straight on Kafka (the Kafka door), or through the gateway's REST
API (for a deployment whose broker a laptop cannot reach). One ``Transport`` protocol, two strategies;
a command asks ``open_transport`` for the one in use and never branches on which it got.

Which one: ``--gateway URL`` (or ``AOETL_GATEWAY_URL``) on the command, else the context's ``via =
"gateway"`` (``aoetl.contexts``: its ``gateway_url``), else Kafka. Through the gateway every call carries the
configured token and is decided by the gateway's own authentication, roles and audit (``services/gateway``);
on Kafka the door's audit record (``aoetl.commands.door``) comes first, as before.

What the strategies answer is the same: a run id for a submission, ``None`` for an unknown run or
definition, the system's own contracts (``PipelineDefinition``, ``RunSummary``, ``Alert``, ``PipelineResult``;
a dead letter as the document ``aoetl dlq list`` prints, without its payload) for listings, records oldest
first and runs newest first, as the Kafka side reads them; a run's state is the
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
    from shared.contracts import Alert, PipelineDefinition, PipelineResult, RunSummary
    from shared.spec.models import PipelineSpec

MAX_PAGE = 500  # the gateway's largest page (services.gateway.records_api)
POLL_S = 0.5  # how often a stop waiting through the gateway asks for the run's result
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

    @property
    def asks_only(self) -> bool:
        """True: this caller may ask for a stop but not read results (a tenant's Kafka user)."""
        ...

    def result(self, run_id: str) -> PipelineResult | None:
        """The run's result, once published."""
        ...

    def stop_and_wait(self, run_id: str, timeout: float) -> PipelineResult | None:
        """Ask the run to stop and wait up to ``timeout`` seconds for its result; None: none came."""
        ...

    def run_state(self, run_id: str) -> RunState | None: ...

    def definitions(self) -> list[PipelineDefinition]: ...

    def runs(self, pipeline: str | None, status: str | None, limit: int | None) -> list[RunSummary]:
        """Run summaries, filtered (``status``: RUNNING or a final one), newest first, at most ``limit``
        (through the gateway: its recent runs of the caller's tenant, in the run history's shape)."""
        ...

    def alerts(self, run_id: str | None = None) -> list[Alert]:
        """Alerts, oldest first (through the gateway: the caller's tenant's it keeps)."""
        ...

    def dead_letters(
        self, run_id: str | None = None, stage: str | None = None, error_class: str | None = None
    ) -> list[dict[str, Any]]:
        """Dead letters, oldest first, as documents without their payload's bytes (``payload_bytes``)."""
        ...

    def kafka_only(self, what: str) -> None:
        """Refuse ``what`` (a stream to follow, say) where only Kafka can do it."""
        ...

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
    ``GET /definitions``, ``GET /runs``, ``GET /alerts``, ``GET /dead-letters``), with the configured
    token."""

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

    asks_only = False

    def result(self, run_id: str) -> PipelineResult | None:
        from shared.contracts import PipelineResult

        state = self.run_state(run_id)
        found = state.document.get("result") if state is not None else None
        return PipelineResult.model_validate(found) if found else None

    def stop_and_wait(self, run_id: str, timeout: float) -> PipelineResult | None:
        import time

        self.stop(run_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # the gateway has no stream of results to wait on: it is asked
            found = self.result(run_id)
            if found is not None:
                return found
            time.sleep(POLL_S)
        return None

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

    def _listing(
        self, path: str, key: str, params: dict[str, str], at_most: int | None = None
    ) -> list[dict[str, Any]]:
        """The pages of a ``GET /alerts``-like listing, newest first as the gateway answers, all of them or
        the first ``at_most`` records."""
        rows: list[dict[str, Any]] = []
        while True:
            size = MAX_PAGE if at_most is None else min(MAX_PAGE, at_most - len(rows))
            query = {**params, "limit": str(size), "offset": str(len(rows))}
            page = self._checked(path, self._http.get(path, params=query)).json()
            rows.extend(page[key])
            if not page[key] or len(rows) >= page["total"] or (at_most is not None and len(rows) >= at_most):
                return rows

    def runs(self, pipeline: str | None, status: str | None, limit: int | None) -> list[RunSummary]:
        from aoetl.commands.runs import RUNNING, select, summary_of_view

        params = {"pipeline": pipeline} if pipeline else {}
        if status is not None and status != RUNNING:  # RUNNING: not finished, SUBMITTED or RUNNING here
            params["status"] = status
        rows = self._listing("/runs", "runs", params, at_most=limit if status != RUNNING else None)
        return select([summary_of_view(row) for row in rows], status=status, limit=limit)

    def alerts(self, run_id: str | None = None) -> list[Alert]:
        from shared.contracts import Alert

        rows = self._listing("/alerts", "alerts", {"run_id": run_id} if run_id else {})
        return [Alert.model_validate(row) for row in reversed(rows)]

    def dead_letters(
        self, run_id: str | None = None, stage: str | None = None, error_class: str | None = None
    ) -> list[dict[str, Any]]:
        rows = self._listing("/dead-letters", "dead_letters", {"run_id": run_id} if run_id else {})
        return [
            row
            for row in reversed(rows)
            if (stage is None or row["stage"] == stage)
            and (error_class is None or row["error"]["error_class"] == error_class)
        ]

    def kafka_only(self, what: str) -> None:
        raise CliFailure(f"{what} reads Kafka; the gateway's REST API has no such stream (drop --gateway)")

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

    @property
    def asks_only(self) -> bool:
        return self.client.door_tenant is not None

    def result(self, run_id: str) -> PipelineResult | None:
        return self.client.find_result(run_id)

    def stop_and_wait(self, run_id: str, timeout: float) -> PipelineResult | None:
        import time

        from aoetl.commands.door import stop_audited
        from shared.contracts import PipelineResult
        from shared.kafka.topics import Topics

        with self.client.reader(Topics.RESULTS, from_beginning=False) as reader:  # before the request
            stop_audited(self.client, run_id)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for _, value in reader.poll({Topics.RESULTS: PipelineResult}):
                    if isinstance(value, PipelineResult) and value.run_id == run_id:
                        return value
        return None

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

    def runs(self, pipeline: str | None, status: str | None, limit: int | None) -> list[RunSummary]:
        from aoetl.commands.runs import latest_summaries, select

        return select(latest_summaries(self.client).values(), pipeline=pipeline, status=status, limit=limit)

    def alerts(self, run_id: str | None = None) -> list[Alert]:
        from shared.contracts import Alert
        from shared.kafka.topics import Topics

        with self.client.reader(Topics.ALERTS, from_beginning=True) as reader:
            found = [v for _, v in reader.drain({Topics.ALERTS: Alert}) if isinstance(v, Alert)]
        return [a for a in found if run_id is None or a.run_id == run_id]

    def dead_letters(
        self, run_id: str | None = None, stage: str | None = None, error_class: str | None = None
    ) -> list[dict[str, Any]]:
        from aoetl.commands.dlq import described, matching_letters

        return [described(d) for d in matching_letters(self.client, run_id, stage, error_class)]

    def kafka_only(self, what: str) -> None:
        return None

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
