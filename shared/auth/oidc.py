"""OIDC access tokens (JWTs) verified with PyJWT: signature against the issuer's JWKS, issuer, audience,
expiry; then the tenant and role from configurable claims.

Settings (prefix ``AOETL_OIDC_``): ``ISSUER``, ``AUDIENCE`` and ``JWKS_URL`` together switch it on.
``TENANT_CLAIM`` / ``ROLE_CLAIM`` name the claims (a dotted path reaches into nested claims, e.g.
``realm_access.roles``); a role claim may be one string or a list (the highest known role wins);
``ROLE_VALUES`` maps an identity provider's own group names onto roles (``{"etl-admins": "admin"}``);
``DEFAULT_TENANT`` serves a single-tenant deployment whose tokens carry no tenant claim.

Only asymmetric algorithms are accepted: with a public JWKS, an HMAC algorithm would let anyone who has the
public key sign tokens (the classic algorithm-confusion attack), and ``none`` signs nothing. The JWKS is
cached (``JWKS_CACHE_S``); an unknown key id refetches it at most once per ``JWKS_COOLDOWN_S``, so tokens
with made-up key ids cannot make the gateway hammer the identity provider.
"""

from __future__ import annotations

import re
from typing import Any, Final

import jwt
from jwt import PyJWKClient
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError, PyJWTError
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth.errors import AuthenticationError, CredentialsUnavailable, NotEntitled
from shared.auth.roles import TENANT_PATTERN, Principal, Role, highest_role

ASYMMETRIC: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_TENANT = re.compile(TENANT_PATTERN)


class OidcSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AOETL_OIDC_", frozen=True, extra="ignore")

    issuer: str | None = Field(None, description="the 'iss' every token must carry")
    audience: str | None = Field(None, description="the 'aud' every token must carry (this gateway)")
    jwks_url: str | None = Field(None, description="the issuer's JWKS (https, or http on loopback)")
    tenant_claim: str = "tenant"
    role_claim: str = "role"
    subject_claim: str = "sub"
    role_values: dict[str, Role] = Field(
        default_factory=dict, description="claim value -> role, beside the role names themselves"
    )
    default_tenant: str | None = Field(None, pattern=TENANT_PATTERN)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256"], min_length=1)
    leeway_s: float = Field(30.0, ge=0, description="clock skew allowed on exp / nbf / iat")
    jwks_cache_s: float = Field(300.0, gt=0)
    jwks_cooldown_s: float = Field(30.0, ge=0)
    jwks_timeout_s: float = Field(5.0, gt=0)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        refused = sorted(set(value) - ASYMMETRIC)
        if refused:
            raise ValueError(f"only asymmetric algorithms are accepted, not {', '.join(refused)}")
        return value

    @model_validator(mode="after")
    def _all_or_nothing(self) -> OidcSettings:
        given = [self.issuer, self.audience, self.jwks_url]
        if any(given) and not all(given):
            raise ValueError(
                "OIDC needs AOETL_OIDC_ISSUER, AOETL_OIDC_AUDIENCE and AOETL_OIDC_JWKS_URL together"
            )
        if self.jwks_url and not self.jwks_url.startswith(
            ("https://", "http://127.", "http://[::1]", "http://localhost")
        ):
            raise ValueError("AOETL_OIDC_JWKS_URL must be https (plain http only on loopback)")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)


class OidcVerifier:
    """A bearer JWT to a ``Principal``. Blocking (it may fetch the JWKS): call it off the event loop."""

    def __init__(self, settings: OidcSettings, *, jwks: PyJWKClient | None = None):
        if not settings.enabled or settings.jwks_url is None:
            raise ValueError("OIDC is not configured")
        self.settings = settings
        self._jwks = jwks or PyJWKClient(
            settings.jwks_url,
            cache_jwk_set=True,
            lifespan=settings.jwks_cache_s,
            timeout=settings.jwks_timeout_s,
            cooldown_duration=settings.jwks_cooldown_s,
        )

    def verify(self, token: str) -> Principal:
        s = self.settings
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=s.algorithms,
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except PyJWKClientConnectionError as exc:
            raise CredentialsUnavailable("the identity provider's keys cannot be fetched; retry") from exc
        except PyJWKClientError as exc:
            raise AuthenticationError("token signed with an unknown key") from exc
        except PyJWTError as exc:
            # PyJWT's messages name the failed check ('Signature has expired', 'Invalid audience'), never
            # the token's content
            raise AuthenticationError(f"invalid token: {exc}") from exc
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        s = self.settings
        subject = _claim(claims, s.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError(f"token has no {s.subject_claim!r} claim")
        tenant = _claim(claims, s.tenant_claim)
        tenant = tenant if tenant is not None else s.default_tenant
        if not isinstance(tenant, str) or not _TENANT.match(tenant):
            raise NotEntitled(f"token carries no valid tenant in {s.tenant_claim!r}")
        role = self._role(_claim(claims, s.role_claim))
        if role is None:
            raise NotEntitled(f"token carries no known role in {s.role_claim!r}")
        return Principal(subject=f"oidc:{subject}", tenant=tenant, role=role, method="oidc")

    def _role(self, value: Any) -> Role | None:
        values = value if isinstance(value, list) else [value]
        known = {r.value: r for r in Role} | self.settings.role_values
        return highest_role([known[v] for v in values if isinstance(v, str) and v in known])


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
