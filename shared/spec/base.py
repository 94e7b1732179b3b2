"""The base every pipeline-spec model derives from (``shared.spec.models``, ``shared.spec.quality``).

Strict on purpose: an unknown key is a validation error, because a typo in a spec (``on_fial``) silently
ignored would run a pipeline other than the one its author wrote; frozen, because a spec that travels on
Kafka and is shared by every stage must not be changed in place by one of them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a spec must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
