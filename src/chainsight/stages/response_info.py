"""What a provider response says about itself (:class:`ResponseInfo`), and field readers.

The readers take whatever an SDK returned by duck typing (attribute access for SDK objects, key
access for dicts) and never raise. A count is an ``int`` (or an integral ``float``: Cohere's SDK
types its counts as floats) between 0 and 2**53 - 1; anything else — bools, strings of digits,
negative or huge numbers, NaN, mocks — is dropped rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, TypeGuard

from chainsight._text import valid_text

__all__ = [
    "PROVIDER_ANTHROPIC",
    "PROVIDER_BEDROCK",
    "PROVIDER_COHERE",
    "PROVIDER_GEMINI",
    "PROVIDER_OPENAI",
    "ResponseInfo",
]

# Values of gen_ai.provider.name (OpenTelemetry GenAI well-known values).
PROVIDER_OPENAI: Final = "openai"
PROVIDER_ANTHROPIC: Final = "anthropic"
PROVIDER_GEMINI: Final = "gcp.gemini"
PROVIDER_BEDROCK: Final = "aws.bedrock"
PROVIDER_COHERE: Final = "cohere"

# Exact as a float (Prometheus) and within int64 (OTLP): larger is garbage, not a count.
_MAX_COUNT: Final = 2**53 - 1
# Model names, ids and finish reasons become attributes and metric labels: a multi-kilobyte
# "model name" is a bug upstream, not a value worth keeping.
_MAX_LABEL: Final = 256
# n > 64 choices or content blocks is not a real response; bound the work on pathological input.
_MAX_ITEMS: Final = 64

# Finish reasons: provider value -> OpenTelemetry value, where the mapping is obvious. Values
# not listed are kept as the provider sent them.
_FINISH: Final[dict[str, str]] = {
    # OpenAI, LiteLLM and every OpenAI-compatible API.
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
    # Anthropic messages and Bedrock Converse.
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    # Gemini (enum names in the SDKs, strings in REST).
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    # Cohere chat v1 and v2.
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "TOOL_CALL": "tool_calls",
    "ERROR": "error",
    "ERROR_TOXIC": "content_filter",
}


@dataclass(slots=True)
class ResponseInfo:
    """What one provider response says about itself, normalised to OpenTelemetry conventions.

    ``input_tokens`` counts all input tokens, cache reads and writes included;
    ``cached_input_tokens`` and ``cache_write_input_tokens`` are the parts of it read from and
    written to the provider's prompt cache; ``cache_write_1h_input_tokens`` is the part of the
    writes that went to a one-hour cache (Anthropic, Bedrock), which is billed at its own
    price. ``output_tokens`` includes reasoning (thinking) tokens;
    ``reasoning_output_tokens`` is that part. ``provider`` is a guess from the response's shape
    (a ``gen_ai.provider.name`` value). ``units`` counts non-token billing units (Cohere rerank
    search units). ``output_text`` is the completion text when it is cheaply available, and
    ``output_message`` the reply itself when it calls tools; both are for opt-in content
    capture only. ``None`` means "not reported".
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_input_tokens: int | None = None
    reasoning_output_tokens: int | None = None
    cache_write_1h_input_tokens: int | None = None
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    provider: str | None = None
    units: float | None = None
    output_text: str | None = None
    # The reply as the SDK gave it, kept only when it holds tool calls (which output_text
    # cannot say): for opt-in content capture, shaped there like any message. Not compared:
    # an SDK object and the dict of the same JSON are the same reply.
    output_message: object = field(default=None, compare=False, repr=False)


# --- readers ------------------------------------------------------------------------------


def _get(obj: object, key: str) -> object:
    """``obj[key]`` for mappings, ``obj.key`` otherwise; ``None`` when absent or unreadable."""
    if type(obj) is dict:
        return obj.get(key)
    if obj is None:
        return None
    try:
        # Attribute first: SDK objects are the common case, and the Mapping ABC check costs
        # more than the attribute read, so it is paid only when the attribute is missing.
        value = getattr(obj, key, None)
        if value is None and isinstance(obj, Mapping):
            return obj.get(key)
        return value
    except Exception:  # properties and __getattr__ of foreign objects can raise anything
        return None


def _sdk(obj: object) -> str:
    """The top-level package that defined ``obj``'s class: ``"openai"``, ``"anthropic"``, …

    Knowing the SDK lets us skip probing for fields it never has: on a pydantic model a missing
    attribute costs a raised and caught AttributeError, several times a present one.
    """
    module = getattr(type(obj), "__module__", None)
    if type(module) is not str:
        return ""
    return module.partition(".")[0]


def _count(value: object) -> int | None:
    """A token count, or ``None`` if ``value`` is not a plausible one."""
    if type(value) is int:
        return value if 0 <= value <= _MAX_COUNT else None
    if type(value) is float and value.is_integer() and 0.0 <= value <= _MAX_COUNT:
        return int(value)
    return None


def _number(value: object) -> float | None:
    """A non-negative finite billing quantity (e.g. search units), or ``None``."""
    if type(value) is int:
        return float(value) if 0 <= value <= _MAX_COUNT else None
    if type(value) is float and 0.0 <= value <= _MAX_COUNT:  # NaN fails both comparisons
        return value
    return None


def _label(value: object) -> str | None:
    """A short non-empty string (model, id, finish reason), or ``None``."""
    if type(value) is not str:
        if isinstance(value, Enum):
            # SDK enums: google-genai's are str enums, older proto-plus ones are int enums.
            raw = value.value
            value = raw if isinstance(raw, str) else value.name
        if not isinstance(value, str):
            return None
        value = str.__str__(value)
    if 0 < len(value) <= _MAX_LABEL:
        return valid_text(value)  # a provider's (or proxy's) broken JSON must not break export
    return None


def _finish(value: object) -> str | None:
    raw = _label(value)
    if raw is None:
        return None
    return _FINISH.get(raw, raw)


def _text(value: object) -> str | None:
    return value if type(value) is str else None


def _is_list(value: object) -> TypeGuard[list[object] | tuple[object, ...]]:
    return isinstance(value, (list, tuple))


def _sum_counts(*values: int | None) -> int | None:
    """Sum of the reported counts (missing ones as 0), ``None`` if out of range."""
    total = 0
    for value in values:
        if value is not None:
            total += value
    return total if total <= _MAX_COUNT else None


def _is_empty(info: ResponseInfo) -> bool:
    return (
        info.input_tokens is None
        and info.output_tokens is None
        and info.cached_input_tokens is None
        and info.cache_write_input_tokens is None
        and info.reasoning_output_tokens is None
        and info.cache_write_1h_input_tokens is None
        and info.response_model is None
        and info.response_id is None
        and not info.finish_reasons
        and info.units is None
        and info.output_text is None
        and info.output_message is None
    )
