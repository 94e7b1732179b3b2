"""Roles and principals. A principal is whoever a verified credential speaks for: a subject, the tenant it
belongs to and the one role it holds. Roles are ordered, each including the rights of the ones before it:
``viewer`` < ``operator`` < ``admin``.

Tenancy: every principal carries a tenant; it reaches the audit records, the ``requested_by`` /
``updated_by`` fields the gateway writes (``Principal.label``) and the ``tenant`` of the definitions and
run requests it makes, by which the gateway keeps each tenant's objects apart (``services/gateway/app.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from shared.contracts.security import Role

TENANT_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,62}$"

_RANK: Final = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}

AuthMethod = Literal["api_key", "oidc"]


def role_allows(held: Role, required: Role) -> bool:
    return _RANK[held] >= _RANK[required]


def highest_role(roles: list[Role]) -> Role | None:
    return max(roles, key=_RANK.__getitem__) if roles else None


@dataclass(frozen=True)
class Principal:
    subject: str  # 'key:<key id>' or 'oidc:<subject>': the audit records' actor
    tenant: str
    role: Role
    method: AuthMethod
    key_id: str | None = None

    def may(self, required: Role) -> bool:
        return role_allows(self.role, required)

    @property
    def label(self) -> str:
        """What ``requested_by`` / ``updated_by`` say: the subject and its tenant, never a secret."""
        return f"{self.subject}@{self.tenant}"


__all__ = ["TENANT_PATTERN", "AuthMethod", "Principal", "Role", "highest_role", "role_allows"]
