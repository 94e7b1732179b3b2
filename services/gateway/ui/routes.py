"""The console's HTTP side: sign-in, the pages, their live fragments, the server-sent events, the replay.

Every page but the sign-in page and the assets needs a principal (``access.RULES``, kind ``session``), the
same one the REST API would see for the same token, and shows that principal's tenant's records only.
A browser without a valid session is sent to the sign-in page (303); any other client is answered as the
REST API answers it (401 with a Bearer challenge). Refusals to a browser are an HTML page; their texts are
escaped like everything else. Every answer is ``no-store`` and carries a Content-Security-Policy that
allows nothing but the gateway's own script and style: an injected tag could neither run nor load.

The pages are rendered on the server; ``static/console.js`` only re-fetches a page's live part when the
event stream says one of the tenant's runs changed (``/ui/events``).
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Final
from urllib.parse import urlencode

import jinja2
from fastapi import FastAPI, Form, HTTPException, Path, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gateway import redrive
from services.gateway.access import MAX_TOKEN_CHARS, Authenticator, principal_of
from services.gateway.audit import Auditor
from services.gateway.core import Gateway
from services.gateway.records_api import DEAD_LETTER_ID, RUN_ID, ListedStatus
from services.gateway.state import RunStatusView
from services.gateway.ui import views
from services.gateway.ui.events import run_changes
from services.gateway.ui.session import (
    form_token,
    form_token_valid,
    is_console,
    login_nonce_valid,
    new_nonce,
    nonce_of,
    session_token,
    set_nonce,
    sign_in,
    sign_out,
)
from shared.auth import AuthenticationError, CredentialsUnavailable, NotEntitled, Role
from shared.spec.models import PIPELINE_NAME

HERE = pathlib.Path(__file__).parent
ASSETS: Final = {"console.css": "text/css", "console.js": "text/javascript"}
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Page = Annotated[int, Query(ge=1, le=1_000_000)]
Fragment = Annotated[bool, Query(description="only the live part of the page")]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped: pipeline names, errors, samples are anyone's text
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = lambda n: "" if n is None else f"{n:,}"
    env.filters["pct"] = lambda f: f"{f:.1%}"
    env.filters["when"] = lambda d: "" if d is None else d.strftime("%Y-%m-%d %H:%M:%S")
    env.filters["rate"] = lambda r: "-" if r is None else f"{r:,.0f}/s"
    return env


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def add_console_routes(
    app: FastAPI,
    gateway: Gateway,
    auditor: Auditor,
    authenticator: Authenticator,
    require_ready: Callable[[], None],
) -> None:
    templates = Jinja2Templates(env=_environment())
    assets = {name: (HERE / "static" / name).read_bytes() for name in ASSETS}

    def render(request: Request, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        principal = getattr(request.state, "principal", None)
        session, nonce = session_token(request), nonce_of(request)
        context.setdefault("title", "")
        response = templates.TemplateResponse(
            request,
            template,
            {
                "principal": principal,
                "operator": principal is not None and principal.may(Role.OPERATOR),
                "csrf": form_token(session, nonce) if session and nonce else "",
                **context,
            },
            status_code=code,
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    async def console_errors(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if not (is_console(request.url.path) and wants_html(request)):
            return await http_exception_handler(request, exc)
        if exc.status_code == 401:  # no session, or a key revoked or expired since: sign in again
            response: Response = RedirectResponse("/ui/login", 303)
            if session_token(request):
                sign_out(response)
            return response
        detail = exc.detail if isinstance(exc.detail, str) else "the request was refused"
        response = render(request, "error.html", exc.status_code, title="Refused", detail=detail)
        response.headers.update({k: v for k, v in (exc.headers or {}).items() if k.lower() == "retry-after"})
        return response

    app.add_exception_handler(StarletteHTTPException, console_errors)

    # --------------------------------------------------------------------------- sign-in, assets
    @app.get("/ui", include_in_schema=False)
    async def console_home() -> Response:
        return RedirectResponse("/ui/runs", 303)

    @app.get("/ui/static/{name}", include_in_schema=False)
    async def console_asset(name: str) -> Response:
        if name not in assets:  # a fixed set of files: no path reaches the file system
            raise HTTPException(404, detail="no such asset")
        headers = {"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"}
        return Response(assets[name], media_type=ASSETS[name], headers=headers)

    @app.get("/ui/login", include_in_schema=False)
    async def login_page(request: Request) -> Response:
        return _login(request, 200, None)

    def _login(request: Request, code: int, problem: str | None) -> Response:
        nonce = nonce_of(request) or new_nonce()
        response = render(request, "login.html", code, title="Sign in", nonce=nonce, problem=problem)
        set_nonce(response, request, nonce)
        return response

    @app.post("/ui/login", include_in_schema=False)
    async def login(
        request: Request,
        token: Annotated[str, Form(max_length=MAX_TOKEN_CHARS)],
        nonce: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        if not login_nonce_valid(request, nonce):
            return _login(request, 403, "the sign-in form expired; try again")
        token = token.strip()
        try:
            await authenticator.authenticate(f"Bearer {token}")
        except AuthenticationError:
            return _login(request, 401, "unknown, revoked or expired token")
        except NotEntitled as exc:
            return _login(request, 403, str(exc))
        except CredentialsUnavailable:
            return _login(request, 503, "the gateway cannot check tokens right now; try again shortly")
        response = RedirectResponse("/ui/runs", 303)
        sign_in(response, request, token)
        return response

    @app.post("/ui/logout", include_in_schema=False)
    async def logout(request: Request, csrf: Annotated[str, Form(max_length=400)] = "") -> Response:
        if not form_token_valid(request, csrf):
            raise HTTPException(403, detail="the form's CSRF token is missing or wrong; reload the page")
        response = RedirectResponse("/ui/login", 303)
        sign_out(response)
        return response

    # -------------------------------------------------------------------------------------- runs
    @app.get("/ui/runs", include_in_schema=False)
    async def runs_list(
        request: Request,
        pipeline: Annotated[str | None, Query(pattern=PIPELINE_NAME)] = None,
        status: ListedStatus | None = None,
        page: Page = 1,
        fragment: Fragment = False,
    ) -> Response:
        require_ready()
        tenant = principal_of(request).tenant
        chosen = status.value if status else None
        pager, runs = views.runs_page(gateway, tenant, pipeline=pipeline, status=chosen, page=page)
        filters = {k: v for k, v in (("pipeline", pipeline), ("status", chosen)) if v}

        def page_url(number: int | None) -> str | None:
            return None if number is None else "/ui/runs?" + urlencode({**filters, "page": number})

        context: dict[str, Any] = {
            "runs": runs,
            "pager": pager,
            "previous_url": page_url(pager.previous),
            "next_url": page_url(pager.next),
        }
        if fragment:
            return render(request, "_runs_table.html", **context)
        return render(
            request,
            "runs.html",
            title="Runs",
            pipeline=pipeline or "",
            status=chosen or "",
            statuses=[s.value for s in ListedStatus],
            fragment_url="/ui/runs?" + urlencode({**filters, "page": pager.page, "fragment": "true"}),
            events_url="/ui/events",
            **context,
        )

    def own_run(request: Request, run_id: str) -> RunStatusView:
        view = gateway.runs.get(run_id)
        if view is None or view.tenant != principal_of(request).tenant:
            require_ready()
            raise HTTPException(404, detail=f"no recent run {run_id!r}")
        return view

    @app.get("/ui/runs/{run_id}", include_in_schema=False)
    async def run_page(
        request: Request, run_id: Annotated[str, Path(pattern=RUN_ID)], fragment: Fragment = False
    ) -> Response:
        view = own_run(request, run_id)
        detail = views.run_detail(gateway, principal_of(request).tenant, view)
        if fragment:
            return render(request, "_run_live.html", run=detail)
        return render(
            request,
            "run.html",
            title=f"Run {run_id}",
            run=detail,
            fragment_url=f"/ui/runs/{run_id}?fragment=true",
            events_url="/ui/events?" + urlencode({"run": run_id}),
        )

    @app.get("/ui/events", include_in_schema=False)
    async def events(request: Request, run: Annotated[str | None, Query(pattern=RUN_ID)] = None) -> Response:
        """Server-sent events: ``runs`` with the ids of the tenant's runs that changed (of ``run`` only,
        when given). The stream ends after a while and the browser reconnects (``retry``)."""
        tenant = principal_of(request).tenant
        stream: AsyncIterator[str] = run_changes(
            request, gateway.runs, tenant, run, stream_s=gateway.settings.console_stream_s
        )
        headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)

    # ------------------------------------------------------------------------------- the rest
    @app.get("/ui/definitions", include_in_schema=False)
    async def definitions_page(request: Request) -> Response:
        require_ready()
        rows = views.definitions(gateway, principal_of(request).tenant)
        return render(request, "definitions.html", title="Definitions", definitions=rows)

    @app.get("/ui/streams", include_in_schema=False)
    async def streams_page(request: Request) -> Response:
        require_ready()
        rows = views.streams(gateway, principal_of(request).tenant)
        backlog = views.stage_backlog(gateway)
        return render(request, "streams.html", title="Continuous pipelines", streams=rows, backlog=backlog)

    @app.get("/ui/alerts", include_in_schema=False)
    async def alerts_page(request: Request, page: Page = 1) -> Response:
        require_ready()
        pager, alerts = views.alerts_page(gateway, principal_of(request).tenant, page)
        return render(
            request,
            "alerts.html",
            title="Alerts",
            alerts=[(a, views.alert_message(a)) for a in alerts],
            pager=pager,
            previous_url=f"/ui/alerts?page={pager.previous}" if pager.previous else None,
            next_url=f"/ui/alerts?page={pager.next}" if pager.next else None,
        )

    @app.post("/ui/dead-letters/{dead_letter_id}/replay", include_in_schema=False)
    async def replay(
        request: Request,
        dead_letter_id: Annotated[str, Path(pattern=DEAD_LETTER_ID)],
        csrf: Annotated[str, Form(max_length=400)] = "",
    ) -> Response:
        """Re-drive one dead letter of the caller's tenant (operator), audited like every mutating call."""
        if request.state.via_cookie and not form_token_valid(request, csrf):
            forged = HTTPException(403, detail="the form's CSRF token is missing or wrong; reload the page")
            raise await auditor.refuse(request, forged)
        redriven = await redrive.replay(gateway, auditor, request, dead_letter_id)  # the one path, audited
        return render(request, "replayed.html", title="Replayed", redriven=redriven, run_id=redriven.run_id)
