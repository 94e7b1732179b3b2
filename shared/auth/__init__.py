"""Who is calling and what they may do: API keys, OIDC tokens, roles, rate limits and audit records.

Everything here is independent of HTTP: the gateway (``services/gateway/access.py``) maps requests onto
it, the CLI uses the key format and the audit records on its Kafka door.
"""

from shared.auth.errors import AuthenticationError, CredentialsUnavailable, NotEntitled
from shared.auth.roles import TENANT_PATTERN, Principal, Role, role_allows

__all__ = [
    "TENANT_PATTERN",
    "AuthenticationError",
    "CredentialsUnavailable",
    "NotEntitled",
    "Principal",
    "Role",
    "role_allows",
]
