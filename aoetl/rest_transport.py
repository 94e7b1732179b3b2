"""The REST strategy of ``aoetl.transport``: every call a request to the gateway's API with the configured
token, decided by the gateway's own authentication, roles, tenants and audit (``services/gateway``). Its
refusals are one line with the exit code of their kind (``GatewayRefusedError``). Listings are paged
(``MAX_PAGE``) until the gateway's total; what the gateway has no stream for (a stop's result, followed
results) is asked again every ``POLL_S``: over HTTP there is nothing local to wait on.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aoetl.commands.config import CliConfig, refusal_hint
from aoetl.failures import CliFailure, gateway_exit_code
from aoetl.transport import RunState, replayed

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import httpx

    from shared.contracts import Alert, DeadLetter, PipelineDefinition, PipelineResult, RunSummary
    from shared.spec.models import PipelineSpec

MAX_PAGE = 500  # the gateway's largest page (services.gateway.records_api)
POLL_S = 0.5  # how often a stop or a follow through the gateway asks again


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
        self.stop(run_id)
        return self.wait_result(run_id, timeout)

    def wait_result(
        self, run_id: str, timeout: float, seen: Callable[[RunState], None] | None = None
    ) -> PipelineResult | None:
        """The run's result, asked for every ``POLL_S`` (the gateway has no stream of results to wait on)
        for up to ``timeout`` seconds; None: none came. ``seen`` is given each state the gateway answers."""
        import time

        from shared.contracts import PipelineResult

        deadline = time.monotonic() + timeout
        while True:
            state = self.run_state(run_id)
            found = state.document.get("result") if state is not None else None
            if found:
                return PipelineResult.model_validate(found)
            if state is not None and seen is not None:
                seen(state)
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_S)

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

    def alert_stream(self, follow: bool, from_beginning: bool) -> Iterator[Alert]:
        """The alerts the gateway keeps, oldest first; with ``follow`` then each new one once. It has no
        stream of them, so its listing is asked for every ``POLL_S`` and what was not shown is shown. Not
        the cheapest way (each time the whole listing, bounded by what the gateway keeps), but exact: an
        alert that arrives late with an older ``at`` is not skipped, and the ids remembered are only those
        still listed (an evicted alert never comes back). Following without ``from_beginning`` shows
        only alerts that arrive after it starts."""
        import time

        listed = self.alerts()
        if not follow:
            yield from listed
            return
        if from_beginning:
            yield from listed
        while True:
            shown = {a.alert_id for a in listed}
            time.sleep(POLL_S)
            listed = self.alerts()
            yield from (a for a in listed if a.alert_id not in shown)

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

    def dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        import base64

        from shared.contracts import DeadLetter

        path = f"/dead-letters/{quote(dead_letter_id, safe='')}"
        response = self._checked(f"dead letter {dead_letter_id}", self._http.get(path), missing_ok=True)
        if response.status_code == 404:
            return None
        detail = response.json()
        origin, key = dict(detail["origin"]), detail["origin"].get("key_base64")
        origin.pop("key_base64", None)
        origin["key"] = base64.b64decode(key) if key is not None else None
        fields = {k: v for k, v in detail.items() if k in DeadLetter.model_fields}
        payload = base64.b64decode(detail["payload_base64"])
        return DeadLetter.model_validate({**fields, "origin": origin, "payload": payload})

    def replay(self, letters: list[dict[str, Any]], dry_run: bool) -> list[dict[str, Any]]:
        done = []
        for letter in letters:  # one call a letter: each is decided and audited by the gateway on its own
            letter_id = letter["dead_letter_id"]
            path = f"/dead-letters/{quote(letter_id, safe='')}/replay"
            params = {"dry_run": "true" if dry_run else "false"}
            answer = self._checked(f"replay {letter_id}", self._http.post(path, params=params)).json()
            done.append(replayed(letter, dry_run, answer["partition"], answer["offset"]))
        return done

    def results(self, follow: bool, from_beginning: bool) -> Iterator[PipelineResult]:
        import time

        from shared.contracts import PipelineResult

        cursor = "" if from_beginning or not follow else "end"
        while True:
            params = {"cursor": cursor, "limit": str(MAX_PAGE)}
            page = self._checked("results", self._http.get("/results", params=params)).json()
            yield from (PipelineResult.model_validate(r) for r in page["results"])
            cursor = page["next_cursor"]
            if not page["more"]:
                if not follow:
                    return
                time.sleep(POLL_S)  # caught up: the gateway is asked again, there is nothing here to wait on

    def close(self) -> None:
        self._http.close()
