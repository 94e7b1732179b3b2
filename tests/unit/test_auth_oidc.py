"""OIDC tokens (``shared/auth/oidc.py``) against a locally generated RSA key whose JWKS a loopback HTTP
server in this test serves (no outside network): what is accepted, what is refused and how, and the same
through the gateway's API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from services.gateway.app import create_app
from shared.auth import AuthenticationError, CredentialsUnavailable, NotEntitled
from shared.auth.oidc import OidcSettings, OidcVerifier
from shared.contracts import AuditOutcome, Role
from tests.unit.gateway_support import FakeBus, bearer, make_gateway

pytestmark = pytest.mark.unit

ISSUER = "https://id.example.test/realms/aoetl"
AUDIENCE = "aoetl-gateway"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


SIGNING_KEY = rsa_key()
STRANGER_KEY = rsa_key()


class Jwks:
    """A JWKS endpoint on 127.0.0.1: serves ``keys``, counts fetches, can answer 500."""

    def __init__(self, *keys: tuple[str, rsa.RSAPrivateKey]):
        self.keys = {kid: key for kid, key in keys}
        self.fetches = 0
        self.failing = False
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                if jwks.failing:
                    self.send_error(500)
                    return
                body = json.dumps({"keys": jwks.public_keys()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def public_keys(self) -> list[dict[str, Any]]:
        out = []
        for kid, key in self.keys.items():
            jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            out.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    server = Jwks(("k1", SIGNING_KEY))
    yield server
    server.close()


def settings(jwks: Jwks, **overrides: Any) -> OidcSettings:
    return OidcSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks.url, **overrides)


def token(
    claims: dict[str, Any] | None = None,
    *,
    key: rsa.RSAPrivateKey = SIGNING_KEY,
    kid: str = "k1",
    drop: tuple[str, ...] = (),
    algorithm: str = "RS256",
) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        "tenant": "acme",
        "role": "operator",
        **(claims or {}),
    }
    for name in drop:
        body.pop(name)
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


def test_a_valid_token_is_its_subject_tenant_and_role(jwks: Jwks) -> None:
    verifier = OidcVerifier(settings(jwks))
    principal = verifier.verify(token())
    assert (principal.subject, principal.tenant, principal.role, principal.method) == (
        "oidc:alice",
        "acme",
        Role.OPERATOR,
        "oidc",
    )
    verifier.verify(token({"sub": "bob"}))
    assert jwks.fetches == 1  # the JWKS is cached


def test_claims_are_configurable_nested_listed_and_mapped(jwks: Jwks) -> None:
    verifier = OidcVerifier(
        settings(
            jwks,
            tenant_claim="org.id",
            role_claim="realm_access.roles",
            role_values={"etl-admins": Role.ADMIN},
        )
    )
    claims = {"org": {"id": "globex"}, "realm_access": {"roles": ["offline_access", "viewer", "etl-admins"]}}
    principal = verifier.verify(token(claims))
    assert (principal.tenant, principal.role) == ("globex", Role.ADMIN)
    single = OidcVerifier(settings(jwks, default_tenant="main")).verify(
        token({"role": "viewer"}, drop=("tenant",))
    )
    assert (single.tenant, single.role) == ("main", Role.VIEWER)


@pytest.mark.parametrize(
    ("case", "make"),
    [
        ("expired", lambda: token({"exp": int(time.time()) - 3600})),
        ("not yet valid", lambda: token({"nbf": int(time.time()) + 3600})),
        ("wrong audience", lambda: token({"aud": "someone-else"})),
        ("wrong issuer", lambda: token({"iss": "https://evil.example"})),
        ("no expiry", lambda: token(drop=("exp",))),
        ("no subject", lambda: token(drop=("sub",))),
        ("signed by a stranger", lambda: token(key=STRANGER_KEY)),
        ("unknown key id", lambda: token(key=STRANGER_KEY, kid="k9")),
        ("tampered", lambda: token()[:-6] + "AAAAAA"),
        ("not a JWT", lambda: "e30.e30.e30"),
    ],
)
def test_invalid_tokens_are_refused(jwks: Jwks, case: str, make: Any) -> None:
    with pytest.raises(AuthenticationError):
        OidcVerifier(settings(jwks)).verify(make())


def test_algorithm_confusion_and_none_are_refused(jwks: Jwks) -> None:
    public_pem = SIGNING_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "mallory",
        "exp": now + 300,
        "tenant": "acme",
        "role": "admin",
    }
    header = {"kid": "k1"}
    # HS256 "signed" with the public key: PyJWT itself refuses a PEM as an HMAC secret, so forge by hand
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = b64(json.dumps(claims).encode())
    signing_input = f"{b64(json.dumps({**header, 'alg': 'HS256', 'typ': 'JWT'}).encode())}.{body}"
    forged = f"{signing_input}.{b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())}"
    unsigned = f"{b64(json.dumps({**header, 'alg': 'none'}).encode())}.{body}."
    verifier = OidcVerifier(settings(jwks))
    for bad in (forged, unsigned):
        with pytest.raises(AuthenticationError):
            verifier.verify(bad)
    with pytest.raises(ValueError, match="asymmetric"):
        settings(jwks, algorithms=["RS256", "HS256"])


def test_a_valid_token_without_tenant_or_role_is_not_entitled(jwks: Jwks) -> None:
    verifier = OidcVerifier(settings(jwks))
    for claims, drop in (({}, ("tenant",)), ({"role": "superuser"}, ()), ({"tenant": "Not A Tenant!"}, ())):
        with pytest.raises(NotEntitled):
            verifier.verify(token(claims, drop=drop))


def test_an_unreachable_jwks_is_503_not_401(jwks: Jwks) -> None:
    jwks.failing = True
    with pytest.raises(CredentialsUnavailable):
        OidcVerifier(settings(jwks)).verify(token())


def test_settings_come_all_together_and_https_unless_on_loopback() -> None:
    with pytest.raises(ValueError, match="together"):
        OidcSettings(issuer=ISSUER)
    with pytest.raises(ValueError, match="https"):
        OidcSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url="http://id.example.test/jwks")
    assert not OidcSettings().enabled


async def test_the_gateway_takes_oidc_tokens(jwks: Jwks) -> None:
    bus = FakeBus()
    gateway = make_gateway(bus)
    gateway.oidc = OidcVerifier(settings(jwks))
    app = create_app(gateway)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as client:
        me = await client.get("/auth/whoami", headers=bearer(token({"role": "viewer"})))
        assert (
            me.status_code == 200 and me.json()["subject"] == "oidc:alice" and me.json()["method"] == "oidc"
        )
        spec = {"name": "x", "source": {"type": "event"}, "destination": {"type": "jsonl", "path": "/tmp/x"}}
        denied = await client.put("/definitions/x", json=spec, headers=bearer(token({"role": "viewer"})))
        assert denied.status_code == 403
        [record] = bus.audits()
        assert (record.actor, record.tenant, record.outcome, record.key_id) == (
            "oidc:alice",
            "acme",
            AuditOutcome.DENIED,
            None,
        )
        expired = await client.get("/definitions", headers=bearer(token({"exp": int(time.time()) - 999})))
        assert expired.status_code == 401 and "expired" in expired.json()["detail"].lower()
        no_role = await client.get("/definitions", headers=bearer(token({"role": "nobody"})))
        assert no_role.status_code == 403
        fetched = jwks.fetches
        for kid in (
            "new-1",
            "new-2",
            "new-3",
        ):  # made-up key ids: refused, and no refetch within the cooldown
            stranger = await client.get("/definitions", headers=bearer(token(key=STRANGER_KEY, kid=kid)))
            assert stranger.status_code == 401
        assert jwks.fetches == fetched
