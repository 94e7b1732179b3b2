"""The tenant a run, a definition or a check belongs to.

A request carries its tenant once tenancy lands on every message; until then a request without one is
tenant ``default``, which is also what connections are declared for when the operator names no tenant.
"""

from __future__ import annotations

DEFAULT_TENANT = "default"


def tenant_of(message: object) -> str:
    """The ``tenant`` of a request or definition, ``default`` when it has none (or none yet)."""
    tenant = getattr(message, "tenant", None)
    return tenant if isinstance(tenant, str) and tenant else DEFAULT_TENANT
