"""The chat model from settings, and the one place every model call goes through (logged and counted).

The provider is chosen by ``AOETL_LLM_MODEL`` (``openai:gpt-4o-mini``, ``anthropic:...``, ``ollama:...``)
through ``langchain.chat_models.init_chat_model``. Provider packages (``langchain-openai``...) are optional
dependencies: a missing one is a ``ModelConfigurationError`` saying what to install. A model name without a
provider prefix plus ``AOETL_LLM_BASE_URL`` means an OpenAI-compatible server.

Each call is logged with the model, latency, token usage when the provider reports it, and the SHA-256 of
the prompt (not the prompt: it carries profile data), and counted in Prometheus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

from shared.agent.errors import ModelConfigurationError
from shared.agent.settings import AgentSettings

# LangChain is imported where a model is made or called, not here: the planner imports this module, and
# without a model (deterministic mode, e.g. ``aoetl plan <path>``) nothing of LangChain is needed; it costs
# the CLI seconds at start.
if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.runnables import Runnable

log = logging.getLogger("aoetl.agent")

LLM_CALLS = Counter(
    "aoetl_agent_llm_calls", "Chat model calls by the agent, by outcome", ["model", "outcome"]
)
LLM_SECONDS = Histogram(
    "aoetl_agent_llm_seconds",
    "Latency of one chat model call",
    ["model"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)
LLM_TOKENS = Counter("aoetl_agent_llm_tokens", "Tokens reported by the provider", ["model", "kind"])
TOOL_CALLS = Counter("aoetl_agent_tool_calls", "Tool calls requested by the model", ["tool", "outcome"])
PLANS = Counter("aoetl_agent_plans", "Planning requests, by outcome (accepted|rejected)", ["mode", "outcome"])

_TIMEOUT_PROVIDERS = {"openai", "anthropic", "azure_openai", "groq", "mistralai", "deepseek", "xai"}


def make_chat_model(settings: AgentSettings) -> BaseChatModel | None:
    """The configured chat model, or None in deterministic mode (no ``AOETL_LLM_MODEL``)."""
    if not settings.llm_model:
        return None
    from langchain.chat_models import init_chat_model

    provider, sep, _ = settings.llm_model.partition(":")
    kwargs: dict[str, Any] = {"temperature": settings.llm_temperature}
    if not sep and settings.llm_base_url:
        kwargs["model_provider"] = "openai"
        provider = "openai"
    if provider in _TIMEOUT_PROVIDERS:
        kwargs["timeout"] = settings.llm_timeout_s
    if settings.llm_base_url:
        kwargs["base_url"] = settings.llm_base_url
    if settings.llm_api_key is not None:
        kwargs["api_key"] = settings.llm_api_key.get_secret_value()
    try:
        return init_chat_model(settings.llm_model, **kwargs)
    except ImportError as exc:
        raise ModelConfigurationError(
            f"AOETL_LLM_MODEL={settings.llm_model!r} needs its provider package: {exc}"
        ) from exc
    except Exception as exc:
        # Provider packages reject a bad configuration with errors of their own (openai.OpenAIError for a
        # missing key, pydantic errors, ValueError): whatever the class, the model cannot be built from
        # these settings, which is a configuration error (exit code 2 at start-up), never a crash later.
        message = str(exc)
        if settings.llm_api_key is not None:
            message = message.replace(settings.llm_api_key.get_secret_value(), "**********")
        raise ModelConfigurationError(f"AOETL_LLM_MODEL={settings.llm_model!r}: {message}") from exc


def model_label(model: Any, configured: str | None = None) -> str:
    if configured:
        return configured
    for attr in ("model_name", "model"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def prompt_hash(messages: Sequence[BaseMessage]) -> str:
    from langchain_core.messages import messages_to_dict

    payload = json.dumps(messages_to_dict(list(messages)), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def call_model(runnable: Runnable[Any, Any], messages: Sequence[BaseMessage], *, label: str) -> AIMessage:
    """Invoke the (tool-bound) model once; log and count the call whatever happens."""
    from langchain_core.messages import AIMessage

    digest = prompt_hash(messages)
    started = time.perf_counter()
    try:
        reply = runnable.invoke(list(messages))
    except Exception:
        elapsed = time.perf_counter() - started
        LLM_CALLS.labels(label, "error").inc()
        LLM_SECONDS.labels(label).observe(elapsed)
        log.warning(
            "llm call failed",
            extra={"model": label, "latency_ms": round(elapsed * 1000, 1), "prompt_sha256": digest},
            exc_info=True,
        )
        raise
    elapsed = time.perf_counter() - started
    LLM_CALLS.labels(label, "ok").inc()
    LLM_SECONDS.labels(label).observe(elapsed)
    usage = getattr(reply, "usage_metadata", None) or {}
    for kind in ("input_tokens", "output_tokens"):
        if usage.get(kind):
            LLM_TOKENS.labels(label, kind.removesuffix("_tokens")).inc(usage[kind])
    log.info(
        "llm call",
        extra={
            "model": label,
            "latency_ms": round(elapsed * 1000, 1),
            "prompt_sha256": digest,
            "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens"),
            "tool_calls": [c["name"] for c in getattr(reply, "tool_calls", [])],
        },
    )
    if not isinstance(reply, AIMessage):
        raise ModelConfigurationError(f"the model returned {type(reply).__name__}, not an AIMessage")
    return reply
