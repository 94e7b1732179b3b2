"""``aoetl dlq show``, ``dlq replay`` and ``results [--follow]`` through the REST strategy, on a fake gateway
(``httpx.MockTransport``, as tests/unit/test_cli_rest.py): the detail rebuilt into the contract (payload and
key from base64), one replay call a letter with ``dry_run`` as asked, results read page by page along the
cursor and followed from ``end``; and ``dlq show -o json`` with a key that is not UTF-8, on Kafka and over
REST alike. tests/e2e/test_cli_rest.py runs them against the real gateway."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import aoetl.client
import aoetl.commands.config
import aoetl.rest_transport
from aoetl.cli import app
from aoetl.commands import dlq
from shared.contracts import DeadLetter, ErrorInfo, Origin, Stage

pytestmark = pytest.mark.unit

URL = "http://gateway.test"
KEY = b"\xff\x00not-utf8"
AT = "2026-01-01T00:00:01+00:00"
ERROR = {"error_class": "CastError", "message": "bad", "transient": False}


def _view(letter_id: str) -> dict[str, Any]:
    return {
        "dead_letter_id": letter_id,
        "tenant": "default",
        "stage": "load",
        "at": AT,
        "origin": {"topic": "aoetl.data.transformed", "partition": 1, "offset": 7, "key_base64": None},
        "error": ERROR,
        "run_id": "r1",
        "rule": None,
        "payload_format": "raw",
        "payload_bytes": 5,
        "attempt": 1,
    }


def _result(run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "request_id": "q",
        "pipeline": "orders",
        "tenant": "default",
        "status": "COMPLETED",
        "started_at": AT,
        "finished_at": AT,
    }


class FakeGateway:
    """Dead letters d1 (a non-UTF-8 key) and d2; results r1..r3 on partition 0, one a page."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.results = [_result(f"r{n}") for n in (1, 2, 3)]
        self.follows = 0  # ``cursor=...`` asks once caught up; the third ends the follow as ^C does

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, query = request.url.path, request.url.params
        self.asked.append(f"{request.method} {path}?{request.url.query.decode()}")
        if path == "/dead-letters":
            letters = [_view("d2"), _view("d1")]  # newest first
            return httpx.Response(200, json={"total": 2, "limit": 500, "offset": 0, "dead_letters": letters})
        if path == "/dead-letters/d1":
            detail = _view("d1")
            detail["origin"] = {**detail["origin"], "key_base64": base64.b64encode(KEY).decode()}
            return httpx.Response(200, json={**detail, "payload_base64": base64.b64encode(b"bytes").decode()})
        if path.endswith("/replay"):
            dry = query["dry_run"] == "true"
            letter_id = path.split("/")[2]
            answer = {"dead_letter_id": letter_id, "dry_run": dry, "topic": "aoetl.data.transformed"}
            where = {"partition": None, "offset": None} if dry else {"partition": 1, "offset": 99}
            return httpx.Response(200, json={**answer, "key_base64": None, "payload_bytes": 5, **where})
        if path == "/results":
            return self._results(query["cursor"])
        return httpx.Response(404, json={"detail": f"no dead letter {path.rsplit('/', 1)[-1]!r}"})

    def _results(self, cursor: str) -> httpx.Response:
        at = len(self.results) if cursor == "end" else int(cursor.split(":")[1]) if cursor else 0
        if at >= len(self.results):
            self.follows += 1
            if self.follows == 2:
                self.results.append(_result("r4"))  # a run finishes while the CLI follows
            if self.follows == 3:
                raise KeyboardInterrupt  # the user stops following
        page = self.results[at : at + 1]
        more = at + len(page) < len(self.results)
        return httpx.Response(200, json={"results": page, "next_cursor": f"0:{at + len(page)}", "more": more})


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> FakeGateway:
    fake = FakeGateway()

    def client(url: str, config: object = None) -> httpx.Client:
        return httpx.Client(base_url=URL, transport=httpx.MockTransport(fake))

    monkeypatch.setattr(aoetl.commands.config, "gateway_client", client)
    monkeypatch.setattr(aoetl.rest_transport, "POLL_S", 0.0)
    return fake


def invoke(*args: str) -> Any:
    env = {"COLUMNS": "200", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "AOETL_GATEWAY_URL": URL}
    return CliRunner().invoke(app, list(args), env=env)


def test_dlq_show_rebuilds_the_letter_and_prints_its_key_as_base64(gateway: FakeGateway) -> None:
    shown = invoke("dlq", "show", "d1", "-o", "json")
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert (
        document["origin"]["key_base64"] == base64.b64encode(KEY).decode() and "key" not in document["origin"]
    )
    assert document["payload_bytes"] == len(b"bytes") and document["tenant"] == "default"
    table = invoke("dlq", "show", "d1")
    assert table.exit_code == 0 and "CastError" in table.stdout, table.output
    missing = invoke("dlq", "show", "nope")
    assert missing.exit_code == 1 and "no dead letter nope" in missing.stdout


def test_dlq_replay_asks_the_gateway_once_a_letter(gateway: FakeGateway) -> None:
    planned = invoke("dlq", "replay", "d1", "--dry-run", "-o", "json")
    assert planned.exit_code == 0, planned.output
    [plan] = json.loads(planned.stdout)
    assert plan["dead_letter_id"] == "d1" and plan["dry_run"] is True
    assert plan["replayed_to"] == {"topic": "aoetl.data.transformed", "partition": None, "offset": None}
    assert "POST /dead-letters/d1/replay?dry_run=true" in gateway.asked
    replayed = invoke("dlq", "replay", "--run", "r1", "--yes")
    assert replayed.exit_code == 0 and "replayed 2 dead letter(s)" in replayed.stdout, replayed.output
    posts = [a for a in gateway.asked if a.startswith("POST")]
    assert posts[1:] == [
        "POST /dead-letters/d1/replay?dry_run=false",
        "POST /dead-letters/d2/replay?dry_run=false",
    ]
    assert invoke("dlq", "replay").exit_code == 2  # says which


def test_results_are_read_along_the_cursor_and_followed_from_the_end(gateway: FakeGateway) -> None:
    listed = invoke("results", "-o", "json")
    assert listed.exit_code == 0, listed.output
    assert [r["run_id"] for r in json.loads(listed.stdout)] == ["r1", "r2", "r3"]
    cursors = [a.split("cursor=")[1].split("&")[0] for a in gateway.asked]
    assert cursors == ["", "0%3A1", "0%3A2"]  # each page from the last one's next_cursor
    gateway.asked.clear()
    followed = invoke("results", "--follow", "--json")
    assert followed.exit_code == 0, followed.output
    assert [json.loads(line)["run_id"] for line in followed.stdout.splitlines()] == ["r4"]  # only the new one
    assert "cursor=end" in gateway.asked[0]


def test_dlq_show_json_with_a_key_that_is_not_utf8_on_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    letter = DeadLetter(
        origin=Origin(topic="aoetl.batches", partition=0, offset=3, key=KEY),
        stage=Stage.LOAD,
        error=ErrorInfo(error_class="CastError", message="bad"),
        payload=b"the original bytes",
    )
    monkeypatch.setattr(aoetl.client, "AoetlClient", lambda: _NoBroker())
    monkeypatch.setattr(dlq, "matching_letters", lambda *_: iter([letter]))
    shown = CliRunner().invoke(
        app, ["dlq", "show", letter.dead_letter_id, "-o", "json"], env={"COLUMNS": None}
    )
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["origin"]["key_base64"] == base64.b64encode(KEY).decode()
    listed = CliRunner().invoke(app, ["dlq", "list", "-o", "yaml"], env={"COLUMNS": None})
    assert listed.exit_code == 0 and base64.b64encode(KEY).decode() in listed.stdout, listed.output


class _NoBroker:
    """The Kafka client the commands make, for a test that reads no topic."""

    def close(self) -> None:
        return None
