"""The error a connector or sink raises when the spec policy refuses what it was asked to do.

Terminal (a ``ConfigurationError``): retrying the same spec cannot succeed, so the work is dead-lettered
and the run fails with the reason, the same reason validation would have given. It is raised where a
connector or sink acts, for specs that reached a service without passing validation (a request produced
straight to Kafka) or a file system that changed after validation (a symlink planted later).
"""

from __future__ import annotations

from shared.errors import ConfigurationError


class PolicyViolation(ConfigurationError):
    """The spec policy does not allow this file, query, table, topic or run id."""
