"""Trigger rules of the gateway: the rule model and matching live in ``shared.triggers`` (the orchestrator's
topic triggers use them too); this module keeps the gateway's import path."""

from __future__ import annotations

from shared.triggers import ANY_EVENT, Match, TriggerRule, as_parameter, dotted_get, match_rules

__all__ = ["ANY_EVENT", "Match", "TriggerRule", "as_parameter", "dotted_get", "match_rules"]
