"""Stage kinds: what each kind means (fault domain, span kind, GenAI operation), and custom ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from opentelemetry.trace import SpanKind

from chainsight import _names as n
from chainsight.errors import ConfigurationError

__all__ = ["GENAI_KINDS", "REQUEST_KIND", "KindInfo", "kind_info", "register_stage_kind"]


@dataclass(frozen=True, slots=True)
class KindInfo:
    """What a stage kind means: its fault domain for remote failures, span kind, operation."""

    name: str
    remote: str
    span_kind: SpanKind
    operation: str | None
    openinference: str


_KINDS: dict[str, KindInfo] = {
    "retrieval": KindInfo(
        "retrieval", n.FAULT_VECTOR_STORE, SpanKind.CLIENT, "retrieval", "RETRIEVER"
    ),
    "embedding": KindInfo(
        "embedding", n.FAULT_PROVIDER, SpanKind.CLIENT, "embeddings", "EMBEDDING"
    ),
    # A reranker that fails remotely (timeout, 5xx, refused) is a model server, hosted or
    # self-hosted; a local cross-encoder raises no such error, so its bugs stay the app's.
    "rerank": KindInfo("rerank", n.FAULT_PROVIDER, SpanKind.INTERNAL, "rerank", "RERANKER"),
    "prompt": KindInfo("prompt", n.FAULT_APP, SpanKind.INTERNAL, None, "PROMPT"),
    "model": KindInfo("model", n.FAULT_PROVIDER, SpanKind.CLIENT, "chat", "LLM"),
    "tool": KindInfo("tool", n.FAULT_APP, SpanKind.INTERNAL, "execute_tool", "TOOL"),
    "validation": KindInfo("validation", n.FAULT_MODEL, SpanKind.INTERNAL, None, "GUARDRAIL"),
    "cache": KindInfo("cache", n.FAULT_APP, SpanKind.INTERNAL, None, "CHAIN"),
}  # fmt: skip
REQUEST_KIND: Final = KindInfo(
    "request", n.FAULT_APP, SpanKind.INTERNAL, "invoke_workflow", "CHAIN"
)
GENAI_KINDS: Final = frozenset({"model", "embedding", "rerank"})
_BUILTIN_KINDS: Final = frozenset(_KINDS)


def kind_info(kind: str) -> KindInfo:
    """The meaning of ``kind`` (``request`` included); ConfigurationError for an unknown kind."""
    info = REQUEST_KIND if kind == "request" else _KINDS.get(kind)
    if info is None:
        raise ConfigurationError(
            f"unknown stage kind {kind!r}; use one of {', '.join(sorted(_KINDS))} or "
            "register it first with chainsight.register_stage_kind()"
        )
    return info


def register_stage_kind(name: str, *, fault: str = n.FAULT_APP, remote: bool = False) -> None:
    """Register a custom stage kind, e.g. ``register_stage_kind("web_search", fault="provider",
    remote=True)``.

    ``fault`` is the domain its remote failures (timeouts, 5xx, 429) belong to; other errors
    follow the usual rules. Call it at import time, before decorating functions with the kind.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigurationError(f"stage kind {name!r} must be an identifier such as 'web_search'")
    if name in _BUILTIN_KINDS or name == "request":
        raise ConfigurationError(f"stage kind {name!r} is built in; choose another name")
    if fault not in n.FAULTS:
        raise ConfigurationError(
            f"fault={fault!r} for stage kind {name!r} is not a fault domain; use one of "
            f"{', '.join(n.FAULTS)}"
        )
    span_kind = SpanKind.CLIENT if remote else SpanKind.INTERNAL
    _KINDS[name] = KindInfo(name, fault, span_kind, None, "CHAIN")
