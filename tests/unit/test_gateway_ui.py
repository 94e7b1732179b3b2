"""The web console's door (``services/gateway/ui``), in process over the fake bus: no page without a
principal (a browser is sent to the sign-in form, any other client gets the REST API's 401), the sign-in
form's cookie is the bearer token for the console only, forms carry a CSRF token bound to the session, a
viewer pressing replay is refused (403, audited), an operator's replay re-drives the letter's own bytes,
and a tenant sees none of another tenant's runs, alerts or dead letters on any page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.core import Gateway
from shared.auth.keys import IssuedKey
from shared.contracts import (
    Alert,
    AlertKind,
    AuditOutcome,
    DeadLetter,
    ErrorInfo,
    Origin,
    PipelineRequest,
    Severity,
    Stage,
)
from shared.dead_letters import REDRIVE_HEADER
from shared.kafka.topics import Topics
from shared.spec import parse_spec
from tests.unit.gateway_support import (
    ADMIN,
    OPERATOR,
    OTHER_ADMIN,
    TENANT,
    VIEWER,
    FakeBus,
    bearer,
    make_gateway,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HTML = {"Accept": "text/html,application/xhtml+xml"}
RUN_ID = "acme-run-1"
LETTER_ID = "letter-of-acme-run-1"
SPEC = parse_spec(
    {"name": "orders", "source": {"type": "event"}, "destination": {"type": "jsonl", "path": "/tmp/o"}}
)


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def gateway(bus: FakeBus) -> Gateway:
    gateway = make_gateway(bus)
    add_run(gateway, RUN_ID, TENANT)
    add_letter(gateway, bus, RUN_ID, LETTER_ID)
    gateway.records.on_alert(
        Alert(
            kind=AlertKind.RUN_FAILED,
            severity=Severity.CRITICAL,
            message=f"run {RUN_ID} failed",
            run_id=RUN_ID,
            tenant=TENANT,
        ),
        gateway.runs.tenant_of,
    )
    return gateway


def add_run(gateway: Gateway, run_id: str, tenant: str, minutes: int = 0, spec: object = SPEC) -> None:
    gateway.runs.on_request(
        PipelineRequest(run_id=run_id, spec=spec, tenant=tenant, submitted_at=T0 + timedelta(minutes=minutes))
    )


def add_letter(
    gateway: Gateway, bus: FakeBus, run_id: str, letter_id: str, message: str = "bad"
) -> DeadLetter:
    """A dead letter of load, on the dead-letters topic (where a replay reads it back) and in the view."""
    letter = DeadLetter(
        dead_letter_id=letter_id,
        origin=Origin(
            topic=gateway.settings.topic(Topics.DATA_TRANSFORMED), partition=2, offset=41, key=b"batch-key"
        ),
        stage=Stage.LOAD,
        error=ErrorInfo(error_class="CastError", message=message),
        run_id=run_id,
        payload=b"the original batch bytes",
    )
    stored = bus.store(gateway.settings.topic(Topics.DEAD_LETTERS), letter)
    gateway.records.on_dead_letter(letter, gateway.runs.tenant_of, (stored.partition, stored.offset))
    return letter


@pytest.fixture
async def browser(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies, as a browser does, and asks for HTML."""
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=HTML) as c:
        yield c


async def sign_in(client: httpx.AsyncClient, key: IssuedKey) -> None:
    form = await client.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce is not None
    answer = await client.post("/ui/login", data={"token": key.token, "nonce": nonce.group(1)})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/runs", answer.text


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


# ------------------------------------------------------------------------------------------ sign-in
@pytest.mark.parametrize(
    "path", ["/ui/runs", f"/ui/runs/{RUN_ID}", "/ui/definitions", "/ui/streams", "/ui/alerts", "/ui/events"]
)
async def test_no_session_sends_a_browser_to_sign_in_and_any_other_client_gets_401(
    browser: httpx.AsyncClient, path: str
) -> None:
    page = await browser.get(path)
    assert (page.status_code, page.headers["location"]) == (303, "/ui/login")
    api = await browser.get(path, headers={"Accept": "application/json"})
    assert api.status_code == 401 and api.headers["www-authenticate"] == 'Bearer realm="aoetl"'
    assert RUN_ID not in api.text and RUN_ID not in page.text


async def test_signing_in_sets_an_httponly_strict_cookie_for_the_console_only(
    browser: httpx.AsyncClient,
) -> None:
    form = await browser.get("/ui/login")
    assert form.status_code == 200 and "script-src 'self'" in form.headers["content-security-policy"]
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce is not None
    answer = await browser.post("/ui/login", data={"token": VIEWER.token, "nonce": nonce.group(1)})
    assert answer.status_code == 303
    cookies = {c.split("=", 1)[0]: c.lower() for c in answer.headers.get_list("set-cookie")}
    assert set(cookies) == {"aoetl_session", "aoetl_csrf"}
    for cookie in cookies.values():
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert f"csrf={nonce.group(1).lower()}" not in cookies["aoetl_csrf"]  # a fresh nonce for the session
    runs = await browser.get("/ui/runs")
    assert runs.status_code == 200 and RUN_ID in runs.text
    assert VIEWER.token not in runs.text  # the token never comes back in a page
    # the cookie is no credential of the REST API (it would make every JSON endpoint forgeable)
    rest = await browser.get("/runs", headers={"Cookie": f"aoetl_session={VIEWER.token}"})
    assert rest.status_code == 401


async def test_a_wrong_token_or_a_forged_sign_in_form_signs_nobody_in(browser: httpx.AsyncClient) -> None:
    form = await browser.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce is not None
    tampered = VIEWER.token[:-1] + ("B" if VIEWER.token.endswith("A") else "A")
    wrong = await browser.post("/ui/login", data={"token": tampered, "nonce": nonce.group(1)})
    assert wrong.status_code == 401 and "unknown, revoked or expired" in wrong.text
    assert tampered not in wrong.text and "aoetl_session" not in wrong.headers.get("set-cookie", "")
    # another site's form: it cannot know the nonce of this browser's cookie
    forged = await browser.post("/ui/login", data={"token": VIEWER.token, "nonce": "guessed"})
    assert forged.status_code == 403 and "aoetl_session" not in forged.headers.get("set-cookie", "")
    assert (await browser.get("/ui/runs")).status_code == 303


async def test_a_revoked_key_ends_its_session_and_signing_out_forgets_it(
    gateway: Gateway, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, VIEWER)
    page = await browser.get("/ui/runs")
    assert page.status_code == 200
    out = await browser.post("/ui/logout", data={"csrf": csrf_of(page.text)})
    assert (out.status_code, out.headers["location"]) == (303, "/ui/login")
    assert (await browser.get("/ui/runs")).status_code == 303

    await sign_in(browser, VIEWER)
    from shared.auth.keys import revoke

    gateway.keys.apply(VIEWER.key_id, revoke(VIEWER.record, by="test"))
    try:
        ended = await browser.get("/ui/runs")
        assert (ended.status_code, ended.headers["location"]) == (303, "/ui/login")
        assert 'aoetl_session=""' in ended.headers["set-cookie"] or "Max-Age=0" in ended.headers["set-cookie"]
    finally:
        gateway.keys.apply(VIEWER.key_id, VIEWER.record)


# ------------------------------------------------------------------------------------------- replay
async def test_a_viewer_pressing_replay_is_refused_403_and_nothing_is_re_driven(
    bus: FakeBus, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, VIEWER)
    page = await browser.get(f"/ui/runs/{RUN_ID}")
    assert LETTER_ID in page.text and "replay needs the operator role" in page.text
    assert 'class="replay"' not in page.text  # no button for a viewer
    pressed = await browser.post(f"/ui/dead-letters/{LETTER_ID}/replay", data={"csrf": csrf_of(page.text)})
    assert pressed.status_code == 403 and "needs operator" in pressed.text
    assert pressed.headers["content-type"].startswith("text/html")
    assert bus.raw == []
    [denied] = bus.audits()
    assert (denied.outcome, denied.action, denied.key_id) == (
        AuditOutcome.DENIED,
        "dlq.replay",
        VIEWER.key_id,
    )


async def test_an_operator_s_replay_re_drives_the_letter_s_bytes_with_its_key_and_is_audited(
    gateway: Gateway, bus: FakeBus, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, OPERATOR)
    page = await browser.get(f"/ui/runs/{RUN_ID}")
    assert 'class="replay"' in page.text
    pressed = await browser.post(f"/ui/dead-letters/{LETTER_ID}/replay", data={"csrf": csrf_of(page.text)})
    assert pressed.status_code == 200, pressed.text
    assert bus.raw == [
        (
            gateway.settings.topic(Topics.DATA_TRANSFORMED),
            b"batch-key",
            b"the original batch bytes",
            [(REDRIVE_HEADER, LETTER_ID.encode())],
        )
    ]
    [allowed] = bus.audits()
    assert (allowed.outcome, allowed.action, allowed.object) == (
        AuditOutcome.ALLOWED,
        "dlq.replay",
        f"dead-letter/{LETTER_ID}",
    )


@pytest.mark.parametrize("csrf", [None, "", "nonce.0000", "forged"])
async def test_a_replay_by_cookie_without_the_session_s_csrf_token_is_refused(
    bus: FakeBus, browser: httpx.AsyncClient, csrf: str | None
) -> None:
    await sign_in(browser, OPERATOR)
    data = {} if csrf is None else {"csrf": csrf}
    pressed = await browser.post(f"/ui/dead-letters/{LETTER_ID}/replay", data=data)
    assert pressed.status_code == 403 and "CSRF" in pressed.text
    assert bus.raw == []
    [refused] = bus.audits()
    assert refused.outcome is AuditOutcome.REJECTED


async def test_another_session_s_csrf_token_does_not_pass(bus: FakeBus, gateway: Gateway) -> None:
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://g", headers=HTML) as mine,
        httpx.AsyncClient(transport=transport, base_url="http://g", headers=HTML) as theirs,
    ):
        await sign_in(mine, OPERATOR)
        await sign_in(theirs, ADMIN)
        their_token = csrf_of((await theirs.get(f"/ui/runs/{RUN_ID}")).text)
        pressed = await mine.post(f"/ui/dead-letters/{LETTER_ID}/replay", data={"csrf": their_token})
    assert pressed.status_code == 403 and bus.raw == []


async def test_quarantined_rows_are_not_replayable_from_the_console(
    gateway: Gateway, bus: FakeBus, browser: httpx.AsyncClient
) -> None:
    rows = DeadLetter(
        dead_letter_id="quarantined-rows",
        origin=Origin(topic=gateway.settings.topic(Topics.DATA_EXTRACTED), partition=0, offset=1),
        stage=Stage.TRANSFORM,
        error=ErrorInfo(error_class="QualityViolation", message="has-customer"),
        run_id=RUN_ID,
        payload=b"arrow",
        payload_format="arrow_ipc",
        rule="has-customer",
    )
    stored = bus.store(gateway.settings.topic(Topics.DEAD_LETTERS), rows)
    gateway.records.on_dead_letter(rows, gateway.runs.tenant_of, (stored.partition, stored.offset))
    await sign_in(browser, OPERATOR)
    page = await browser.get(f"/ui/runs/{RUN_ID}")
    assert "not replayable here" in page.text
    pressed = await browser.post(
        "/ui/dead-letters/quarantined-rows/replay", data={"csrf": csrf_of(page.text)}
    )
    assert pressed.status_code == 409 and "quarantined rows" in pressed.text
    assert bus.raw == []


# ---------------------------------------------------------------------------------------- tenants
async def test_another_tenant_sees_nothing_of_acme_on_any_page(
    gateway: Gateway, bus: FakeBus, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, OTHER_ADMIN)
    for path in ("/ui/runs", "/ui/runs?pipeline=orders", "/ui/alerts", "/ui/streams", "/ui/definitions"):
        page = await browser.get(path)
        assert page.status_code == 200, (path, page.text)
        assert RUN_ID not in page.text and LETTER_ID not in page.text, path
    assert "0 run(s)" in (await browser.get("/ui/runs")).text
    detail = await browser.get(f"/ui/runs/{RUN_ID}")
    assert detail.status_code == 404 and LETTER_ID not in detail.text
    fragment = await browser.get(f"/ui/runs/{RUN_ID}?fragment=true")
    assert fragment.status_code == 404
    # an admin of globex pressing replay on acme's letter (a hand-made form): as if it did not exist
    own_page = await browser.get("/ui/runs")
    pressed = await browser.post(
        f"/ui/dead-letters/{LETTER_ID}/replay", data={"csrf": csrf_of(own_page.text)}
    )
    assert pressed.status_code == 404 and bus.raw == []


async def test_the_bearer_header_works_as_the_cookie_does_and_needs_no_csrf_token(
    gateway: Gateway, bus: FakeBus
) -> None:
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://g") as client:
        assert (await client.get("/ui/runs", headers=bearer(VIEWER))).status_code == 200
        other = await client.get(f"/ui/runs/{RUN_ID}", headers=bearer(OTHER_ADMIN))
        assert other.status_code == 404
        pressed = await client.post(f"/ui/dead-letters/{LETTER_ID}/replay", headers=bearer(OPERATOR))
    assert pressed.status_code == 200 and len(bus.raw) == 1
