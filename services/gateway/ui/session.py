"""The console's browser session: the API token in a cookie, and the CSRF token of its forms.

**The cookie is the bearer header.** A browser cannot send ``Authorization: Bearer`` on a navigation, so
the login form takes the token once (an aoetl API key or an OIDC access token) and the gateway keeps it in
the ``aoetl_session`` cookie: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
makes the browser send it), ``Path=/ui`` (the REST API never takes it: a cookie there would make every
JSON endpoint forgeable cross-site), ``Secure`` when the console is served over HTTPS. The access guard
(``services.gateway.access``) reads it for the console's routes only and checks it exactly as the header:
the same principal, the same roles, the same rate limit. Nothing is kept on the server, so any replica
serves any session, and revoking the key ends every session that holds it.

**CSRF.** Beyond ``SameSite=Strict``, every form of a signed-in page carries a token that a page of
another origin cannot know: a random nonce (the ``aoetl_csrf`` cookie, also HttpOnly and Strict) and its
HMAC under the session's own token (the signed double-submit cookie). A POST authenticated by the cookie is
refused (403) unless its form's token matches both; a POST with the bearer header needs none (no browser
sends that header across sites). The login form itself is guarded by the nonce alone (there is no session
yet), so a page of another site cannot sign a browser in as someone else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

from fastapi import Request, Response

SESSION_COOKIE: Final = "aoetl_session"
CSRF_COOKIE: Final = "aoetl_csrf"
CONSOLE_PATH: Final = "/ui"
SESSION_MAX_AGE_S: Final = 8 * 3600  # a working day; the token itself may expire sooner (OIDC)


def is_console(path: str) -> bool:
    return path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/")


def session_token(request: Request) -> str | None:
    """The token of the console's session cookie, for the console's own routes only."""
    if not is_console(request.url.path):
        return None
    return request.cookies.get(SESSION_COOKIE) or None


def nonce_of(request: Request) -> str | None:
    return request.cookies.get(CSRF_COOKIE) or None


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def form_token(session: str, nonce: str) -> str:
    """The CSRF token of a signed-in page's forms: the nonce and its HMAC under the session token."""
    mac = hmac.new(session.encode(), f"aoetl-console-csrf:{nonce}".encode(), hashlib.sha256).hexdigest()
    return f"{nonce}.{mac}"


def form_token_valid(request: Request, submitted: str | None) -> bool:
    session, nonce = session_token(request), nonce_of(request)
    if not (session and nonce and submitted):
        return False
    return hmac.compare_digest(form_token(session, nonce), submitted)


def login_nonce_valid(request: Request, submitted: str | None) -> bool:
    nonce = nonce_of(request)
    return nonce is not None and submitted is not None and hmac.compare_digest(nonce, submitted)


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=CONSOLE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def set_nonce(response: Response, request: Request, nonce: str) -> None:
    _cookie(response, request, CSRF_COOKIE, nonce, None)


def sign_in(response: Response, request: Request, token: str) -> None:
    """Set the session cookie, and a fresh nonce: a nonce seen before signing in is not the session's."""
    _cookie(response, request, SESSION_COOKIE, token, SESSION_MAX_AGE_S)
    set_nonce(response, request, new_nonce())


def sign_out(response: Response) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path=CONSOLE_PATH, httponly=True, samesite="strict")
