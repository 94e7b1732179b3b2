"""The pipeline spec shared by every service, the CLI and the agent."""

from shared.spec.loader import SpecError, SpecIssue, load_spec, parse_spec, parse_spec_text
from shared.spec.models import PipelineSpec

__all__ = ["PipelineSpec", "SpecError", "SpecIssue", "load_spec", "parse_spec", "parse_spec_text"]
