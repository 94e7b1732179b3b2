"""Agent evaluation against a real model: ``python -m tests.agent_eval`` (``make agent-eval``)."""
