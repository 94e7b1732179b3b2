"""The three ways checking a credential can end other than with a principal, each with its HTTP meaning.

Their messages are safe to answer with: they never contain the token, a key's secret or its hash.
"""

from __future__ import annotations

from shared.errors import TerminalError, TransientError


class AuthenticationError(TerminalError):
    """No credential, or one that is not valid (unknown, revoked, expired, bad signature): 401."""


class NotEntitled(TerminalError):
    """A valid credential that carries no usable tenant or role (an OIDC token without the claims): 403."""


class CredentialsUnavailable(TransientError):
    """The credential cannot be checked right now (the keys view is stale, the JWKS is unreachable): 503.
    Never answered with a guess: a revoked key must not pass because the list of revocations is late."""
