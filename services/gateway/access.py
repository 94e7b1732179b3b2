"""Who may call which endpoint: the one table of rules, the check every API request passes, and the
OpenAPI security it implies.

``RULES`` names every route of the app, keyed by (method, path template): public (the probes), signed
(webhooks: their signature is checked by the endpoint), or the least role it needs plus, for a mutating
endpoint, the action its audit records name. ``guard`` is a dependency of the whole app, so it runs
before every endpoint: a route without a rule is refused (403) rather than left open, and
``tests/unit/test_gateway_access.py`` fails for it.

The order of checks: bearer token -> principal (401; 503 when it cannot be checked now) -> rate limit of
that principal (429 with Retry-After) -> role (403; a DENIED audit record for a mutating endpoint).
``X-Aoetl-User`` and every other claim of identity in a request are ignored: the principal comes from the
token alone.

The web console's routes (``/ui``, ``services.gateway.ui``) are of kind ``session``: the token is the bearer
header or, when there is none, the console's session cookie (``services.gateway.ui.session``), checked the
same way; ``request.state.via_cookie`` says which, so a POST by cookie must also carry its CSRF token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from services.gateway.metrics import API_AUTH
from services.gateway.ui.session import session_token
from shared.auth import AuthenticationError, CredentialsUnavailable, NotEntitled, Principal, Role
from shared.auth.keys import KeyRing, looks_like_key
from shared.auth.oidc import OidcVerifier
from shared.auth.ratelimit import RateLimiter, retry_after_header

MAX_TOKEN_CHARS: Final = 8192
CHALLENGE: Final = 'Bearer realm="aoetl"'


@dataclass(frozen=True)
class Rule:
    role: Role | None = None  # None: no token (see ``kind``)
    action: str | None = None  # set for mutating endpoints: the audit records' action
    object: str = ""  # the audit records' object, a template over the path parameters
    kind: str = "token"  # "token", "session" (the console), "public" (probes, docs) or "signed" (webhooks)

    @property
    def needs_token(self) -> bool:
        return self.kind in ("token", "session")


def _public() -> Rule:
    return Rule(kind="public")


def _console(role: Role, action: str | None = None, object: str = "") -> Rule:
    return Rule(role, action, object, kind="session")


RULES: Final[dict[tuple[str, str], Rule]] = {
    ("GET", "/health"): _public(),
    ("GET", "/ready"): _public(),
    ("GET", "/metrics"): Rule(Role.VIEWER),  # public only with AOETL_METRICS_PUBLIC=true
    ("POST", "/webhooks/{source}"): Rule(kind="signed"),
    ("GET", "/definitions"): Rule(Role.VIEWER),
    ("GET", "/definitions/{name}"): Rule(Role.VIEWER),
    ("PUT", "/definitions/{name}"): Rule(Role.ADMIN, "definitions.put", "definition/{name}"),
    ("DELETE", "/definitions/{name}"): Rule(Role.ADMIN, "definitions.delete", "definition/{name}"),
    ("POST", "/runs"): Rule(Role.OPERATOR, "runs.submit", "runs"),
    ("GET", "/runs"): Rule(Role.VIEWER),
    ("GET", "/runs/{run_id}"): Rule(Role.VIEWER),
    ("POST", "/runs/{run_id}/stop"): Rule(Role.OPERATOR, "runs.stop", "run/{run_id}"),
    ("GET", "/alerts"): Rule(Role.VIEWER),
    ("GET", "/dead-letters"): Rule(Role.VIEWER),
    ("GET", "/dead-letters/{dead_letter_id}"): Rule(Role.VIEWER),
    ("POST", "/dead-letters/{dead_letter_id}/replay"): Rule(
        Role.OPERATOR, "dlq.replay", "dead-letter/{dead_letter_id}"
    ),
    ("GET", "/results"): Rule(Role.VIEWER),
    ("GET", "/auth/whoami"): Rule(Role.VIEWER),
    ("GET", "/auth/keys"): Rule(Role.ADMIN),
    ("POST", "/auth/keys"): Rule(Role.ADMIN, "keys.create", "keys"),
    ("DELETE", "/auth/keys/{key_id}"): Rule(Role.ADMIN, "keys.revoke", "key/{key_id}"),
    # the web console (services.gateway.ui): its sign-in page and assets hold nothing of anyone's
    ("GET", "/ui"): _public(),
    ("GET", "/ui/login"): _public(),
    ("POST", "/ui/login"): _public(),  # checks the token it is given itself
    ("POST", "/ui/logout"): _public(),
    ("GET", "/ui/static/{name}"): _public(),
    ("GET", "/ui/runs"): _console(Role.VIEWER),
    ("GET", "/ui/runs/{run_id}"): _console(Role.VIEWER),
    ("GET", "/ui/events"): _console(Role.VIEWER),
    ("GET", "/ui/definitions"): _console(Role.VIEWER),
    ("GET", "/ui/streams"): _console(Role.VIEWER),
    ("GET", "/ui/alerts"): _console(Role.VIEWER),
    ("POST", "/ui/dead-letters/{dead_letter_id}/replay"): _console(
        Role.OPERATOR, "dlq.replay", "dead-letter/{dead_letter_id}"
    ),
}
# FastAPI's own documentation routes: the API's description is not a secret.
DOCS_PATHS: Final = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def rule_of(request: Request) -> Rule | None:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return RULES.get((request.method, path)) if isinstance(path, str) else None


def object_of(request: Request, rule: Rule) -> str:
    try:
        return rule.object.format(**request.path_params) if rule.object else request.url.path
    except (KeyError, IndexError):
        return request.url.path


class Authenticator:
    """A bearer token to a principal: an aoetl API key (checked against the keys ring) or, when OIDC is
    configured, a JWT."""

    def __init__(self, keys: KeyRing | None, oidc: OidcVerifier | None):
        self.keys = keys
        self.oidc = oidc

    async def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer(authorization)
        if looks_like_key(token):
            if self.keys is None:
                raise AuthenticationError("API keys are not accepted by this gateway")
            record = self.keys.verify(token)
            if record is None:
                raise AuthenticationError("unknown or revoked API key")
            return Principal(
                subject=f"key:{record.key_id}",
                tenant=record.tenant,
                role=record.role,
                method="api_key",
                key_id=record.key_id,
            )
        if self.oidc is None:
            raise AuthenticationError("not an API key, and this gateway accepts no other tokens")
        # off the event loop: verifying may fetch the identity provider's JWKS
        return await asyncio.to_thread(self.oidc.verify, token)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError("missing credentials: send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("expected 'Authorization: Bearer <token>'")
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthenticationError("token too long")
    return token


def unauthenticated(exc: AuthenticationError, *, token_given: bool) -> HTTPException:
    challenge = f'{CHALLENGE}, error="invalid_token"' if token_given else CHALLENGE
    return HTTPException(401, detail=str(exc), headers={"WWW-Authenticate": challenge})


def make_guard(
    authenticator: Authenticator,
    limiter: RateLimiter,
    *,
    metrics_public: bool,
    on_denied: Callable[[Request, Rule, str], Any],
) -> Callable[[Request], Any]:
    """The app-wide dependency. ``on_denied(request, rule, reason)`` is awaited before a 403 on a mutating
    endpoint (it writes the DENIED audit record)."""

    async def guard(request: Request) -> None:
        rule = rule_of(request)
        if rule is None:
            API_AUTH.labels("forbidden").inc()
            raise HTTPException(403, detail="this endpoint has no access rule")
        if not rule.needs_token or (metrics_public and request.url.path == "/metrics"):
            return
        authorization = request.headers.get("authorization")
        cookie = session_token(request) if rule.kind == "session" and authorization is None else None
        request.state.via_cookie = cookie is not None
        if cookie is not None:
            authorization = f"Bearer {cookie}"
        try:
            principal = await authenticator.authenticate(authorization)
        except AuthenticationError as exc:
            API_AUTH.labels("unauthenticated").inc()
            raise unauthenticated(exc, token_given=bool(authorization)) from exc
        except NotEntitled as exc:
            API_AUTH.labels("forbidden").inc()
            raise HTTPException(403, detail=str(exc)) from exc
        except CredentialsUnavailable as exc:
            API_AUTH.labels("unverifiable").inc()
            raise HTTPException(503, detail=str(exc), headers={"Retry-After": "1"}) from exc
        request.state.principal = principal
        wait = limiter.acquire(principal.label)
        if wait > 0:
            API_AUTH.labels("rate_limited").inc()
            raise HTTPException(
                429, detail="too many requests", headers={"Retry-After": retry_after_header(wait)}
            )
        assert rule.role is not None
        if not principal.may(rule.role):
            API_AUTH.labels("forbidden").inc()
            reason = f"role {principal.role.value} may not do this (needs {rule.role.value})"
            if rule.action is not None:
                await on_denied(request, rule, reason)
            raise HTTPException(403, detail=reason)

    return guard


def principal_of(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):  # only reachable if a rule said "no token" by mistake
        raise HTTPException(403, detail="no principal")
    return principal


_REFUSALS: Final = {
    "401": "no valid bearer token (WWW-Authenticate: Bearer)",
    "403": "the token's role does not allow this",
    "429": "rate limit of the principal reached (Retry-After)",
}


def install_openapi_security(app: FastAPI, *, metrics_public: bool) -> None:
    """State in the OpenAPI document which operations need a bearer token (from ``RULES``), so clients and
    the property-based test send one."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
                description=app.description,
            )
            components = schema.setdefault("components", {})
            components.setdefault("securitySchemes", {})["bearer"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "an aoetl API key (aoetl auth keys create) or an OIDC access token",
            }
            for route in app.routes:
                if not isinstance(route, APIRoute):
                    continue
                for method in route.methods or ():
                    rule = RULES.get((method, route.path))
                    operation = schema["paths"].get(route.path, {}).get(method.lower())
                    if rule is None or operation is None:
                        continue
                    public = not rule.needs_token or (metrics_public and route.path == "/metrics")
                    operation["security"] = [] if public else [{"bearer": []}]
                    if not public:
                        responses = operation.setdefault("responses", {})
                        for status, what in _REFUSALS.items():
                            responses.setdefault(status, {"description": what})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
