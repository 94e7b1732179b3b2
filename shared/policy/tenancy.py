"""The tenant a run, a definition or a check belongs to.

Requests and definitions carry their tenant (``PipelineRequest`` / ``PipelineDefinition`` v4); records
written before that decode as tenant ``default`` (``shared.contracts.base.DEFAULT_TENANT``, the one
definition of the name), which is also what connections are declared for when the operator names no
tenant.
"""

from __future__ import annotations

from shared.contracts.base import DEFAULT_TENANT

__all__ = ["DEFAULT_TENANT", "tenant_of"]


def tenant_of(message: object) -> str:
    """The ``tenant`` of a request or definition, ``default`` when it has none (an object without one)."""
    tenant = getattr(message, "tenant", None)
    return tenant if isinstance(tenant, str) and tenant else DEFAULT_TENANT
