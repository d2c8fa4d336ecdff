"""Usage, model, id and finish reasons read from whatever a provider SDK returned.

``Stage.record_response(resp)`` hands us the SDK's return value untouched. We read it by duck
typing — attribute access for SDK objects, key access for dicts (``model_dump()`` output, raw
JSON, boto3) — so nothing here imports openai, anthropic, google-genai, boto3, cohere or litellm.

Token counts follow the OpenTelemetry GenAI convention: ``input_tokens`` is *all* input, cache
reads and cache writes included. Providers disagree on this:

* OpenAI (chat, Responses, embeddings), LiteLLM and Gemini report the total already
  (``prompt_tokens`` / ``input_tokens`` / ``prompt_token_count`` include cached tokens).
* Anthropic and Bedrock Converse report only the uncached part (``input_tokens`` /
  ``inputTokens`` exclude cache reads and writes), so we add the cache counts back.
* Gemini reports thinking separately: ``candidates_token_count`` excludes
  ``thoughts_token_count`` (``total = prompt + candidates + tool_use_prompt + thoughts``), so
  output is candidates + thoughts and input is prompt + tool-use prompt.
* Cohere reports ``billed_units`` (what is charged) and ``tokens`` (including unbilled template
  tokens); we take the billed counts, which is what cost is computed from, and fall back to
  ``tokens``.

Nothing here raises. A count is an ``int`` (or an integral ``float``: Cohere's SDK types its
counts as floats) between 0 and 2**53 - 1; anything else — bools, strings of digits, negative or
huge numbers, NaN, mocks — is dropped rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final, TypeGuard

__all__ = ["ResponseInfo", "StreamAccumulator", "extract_response"]

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
# A stream accumulates completion text only when asked; this bounds memory on endless streams.
_MAX_STREAM_TEXT: Final = 1_000_000

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

# OpenAI Responses API: incomplete_details.reason -> OpenTelemetry value.
_INCOMPLETE: Final[dict[str, str]] = {
    "max_output_tokens": "length",
    "content_filter": "content_filter",
}

# LiteLLM's _hidden_params["custom_llm_provider"] -> gen_ai.provider.name. A provider not listed
# gives None: the response is OpenAI-shaped, but calling it "openai" would price it wrongly.
_LITELLM_PROVIDERS: Final[dict[str, str]] = {
    "openai": PROVIDER_OPENAI,
    "text-completion-openai": PROVIDER_OPENAI,
    "azure": "azure.ai.openai",
    "azure_text": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "anthropic": PROVIDER_ANTHROPIC,
    "bedrock": PROVIDER_BEDROCK,
    "gemini": PROVIDER_GEMINI,
    "vertex_ai": "gcp.vertex_ai",
    "vertex_ai_beta": "gcp.vertex_ai",
    "cohere": PROVIDER_COHERE,
    "cohere_chat": PROVIDER_COHERE,
    "mistral": "mistral_ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "perplexity": "perplexity",
    "watsonx": "ibm.watsonx.ai",
}

# Bedrock ConverseStream events are one-key dicts named after the event.
_BEDROCK_EVENTS: Final = frozenset({"messageStart", "contentBlockDelta", "messageStop", "metadata"})

_ANTHROPIC_EVENTS: Final = frozenset(
    {"message_start", "message_delta", "message_stop", "content_block_delta"}
)


@dataclass(slots=True)
class ResponseInfo:
    """What one provider response says about itself, normalised to OpenTelemetry conventions.

    ``input_tokens`` counts all input tokens, cache reads and writes included;
    ``cached_input_tokens`` and ``cache_write_input_tokens`` are the parts of it read from and
    written to the provider's prompt cache. ``output_tokens`` includes reasoning tokens;
    ``reasoning_output_tokens`` is that part. ``provider`` is a guess from the response's shape
    (a ``gen_ai.provider.name`` value). ``units`` counts non-token billing units (Cohere rerank
    search units). ``output_text`` is the completion text when it is cheaply available; it is
    for opt-in content capture only. ``None`` means "not reported".
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_input_tokens: int | None = None
    reasoning_output_tokens: int | None = None
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    provider: str | None = None
    units: float | None = None
    output_text: str | None = None


def extract_response(resp: object) -> ResponseInfo | None:
    """Read usage, model, id and finish reasons from a provider response; never raises.

    ``resp`` is what the provider SDK returned (an SDK object) or its dict form (``model_dump()``,
    parsed JSON, a boto3 response). Understood: OpenAI chat completions, Responses API and
    embeddings; Anthropic messages; Gemini ``generate_content`` (SDK snake_case or REST
    camelCase); Bedrock Converse; Cohere chat v1/v2, embed and rerank; LiteLLM ``ModelResponse``.
    Returns ``None`` when the shape is unknown or nothing usable was found.
    """
    try:
        info = _extract(resp)
    except Exception:  # whatever the object does on access, the application's call goes on
        return None
    if info is None or _is_empty(info):
        return None
    return info


class StreamAccumulator:
    """Collects usage, model, id and finish reasons from the chunks of a streamed response.

    Feed every chunk (or event) to :meth:`add` in order; :meth:`result` gives what was seen so
    far. Understood: OpenAI chat chunks (usage arrives in the last chunk when the request set
    ``stream_options={"include_usage": True}``), OpenAI Responses stream events, Anthropic
    message stream events, Gemini chunks (each carries the cumulative usage), Bedrock
    ConverseStream events, Cohere chat v2 stream events, LiteLLM chunks. Neither method raises.

    With ``capture_text=True`` the completion text is assembled from the deltas (bounded to a
    million characters); leave it off unless content capture is enabled.
    """

    __slots__ = (
        "_a_input",
        "_a_read",
        "_a_write",
        "_capture_text",
        "_info",
        "_reasons",
        "_seen",
        "_text",
        "_text_len",
    )

    def __init__(self, *, capture_text: bool = False) -> None:
        self._capture_text = capture_text
        self._info = ResponseInfo()
        self._reasons: dict[int, str] = {}
        self._text: list[str] = []
        self._text_len = 0
        # Anthropic splits usage across events and reports input without cache tokens: keep the
        # raw parts and add them up in result().
        self._a_input: int | None = None
        self._a_read: int | None = None
        self._a_write: int | None = None
        self._seen = False

    def add(self, chunk: object) -> None:
        """Take one chunk or event of the stream into account; never raises."""
        try:
            self._add(chunk)
        except Exception:  # a chunk we cannot read must not break the user's stream
            return

    def result(self) -> ResponseInfo | None:
        """Return what the chunks so far said, or ``None`` if they said nothing usable."""
        if not self._seen:
            return None
        src = self._info
        info = ResponseInfo(
            input_tokens=src.input_tokens,
            output_tokens=src.output_tokens,
            cached_input_tokens=src.cached_input_tokens,
            cache_write_input_tokens=src.cache_write_input_tokens,
            reasoning_output_tokens=src.reasoning_output_tokens,
            response_model=src.response_model,
            response_id=src.response_id,
            finish_reasons=tuple(self._reasons[i] for i in sorted(self._reasons)),
            provider=src.provider,
            units=src.units,
            output_text=src.output_text,
        )
        if self._a_input is not None:
            info.input_tokens = _sum_counts(self._a_input, self._a_read, self._a_write)
        if self._a_read is not None:
            info.cached_input_tokens = self._a_read
        if self._a_write is not None:
            info.cache_write_input_tokens = self._a_write
        if info.output_text is None and self._text:
            info.output_text = "".join(self._text)
        if _is_empty(info):
            return None
        return info

    # --- internals -----------------------------------------------------------------------

    def _add(self, chunk: object) -> None:
        if chunk is None:
            return
        sdk = ""
        if type(chunk) is dict:
            if len(chunk) == 1:
                key = next(iter(chunk))
                if key in _BEDROCK_EVENTS:
                    self._bedrock_event(key, chunk[key])
                    return
        else:
            sdk = _sdk(chunk)
            if sdk == "google":
                self._merge(_gemini(chunk), text_is_delta=True)
                return
        # Anthropic and Cohere events have no "object": skip the costly miss on their models.
        obj = None if sdk in ("anthropic", "cohere") else _get(chunk, "object")
        if type(obj) is str:
            if obj == "chat.completion.chunk":
                self._openai_chunk(chunk)
            else:  # a whole OpenAI-shaped response handed to the stream
                self._merge_whole(chunk)
            return
        typ = _get(chunk, "type")
        if type(typ) is str:
            if typ in _ANTHROPIC_EVENTS:
                self._anthropic_event(typ, chunk)
                return
            if typ.startswith("response."):
                self._responses_event(typ, chunk)
                return
            if typ in ("message-start", "content-delta", "message-end"):
                self._cohere_event(typ, chunk)
                return
        if sdk in ("anthropic", "cohere") or (type(typ) is str and typ == "message"):
            self._merge_whole(chunk)
            return
        if _gemini_usage(chunk)[0] is not None or _is_list(_get(chunk, "candidates")):
            part = _gemini(chunk)
            self._merge(part, text_is_delta=True)
            return
        if obj is None and _is_list(_get(chunk, "choices")):
            # An OpenAI-compatible chunk without the "object" field (some proxies drop it).
            self._openai_chunk(chunk)
            return
        self._merge_whole(chunk)

    def _merge_whole(self, resp: object) -> None:
        whole = extract_response(resp)
        if whole is not None:
            self._merge(whole, text_is_delta=False)

    def _merge(self, part: ResponseInfo, *, text_is_delta: bool) -> None:
        """Fold one partial reading in: reported values replace earlier ones (usage is
        cumulative in every provider's stream), finish reasons replace by position."""
        info = self._info
        if part.input_tokens is not None:
            info.input_tokens = part.input_tokens
        if part.output_tokens is not None:
            info.output_tokens = part.output_tokens
        if part.cached_input_tokens is not None:
            info.cached_input_tokens = part.cached_input_tokens
        if part.cache_write_input_tokens is not None:
            info.cache_write_input_tokens = part.cache_write_input_tokens
        if part.reasoning_output_tokens is not None:
            info.reasoning_output_tokens = part.reasoning_output_tokens
        if part.response_model is not None:
            info.response_model = part.response_model
        if part.response_id is not None:
            info.response_id = part.response_id
        if part.provider is not None:
            info.provider = part.provider
        if part.units is not None:
            info.units = part.units
        if part.finish_reasons:
            self._reasons = dict(enumerate(part.finish_reasons))
        if part.output_text is not None and self._capture_text:
            if text_is_delta:
                self._append_text(part.output_text)
            else:
                info.output_text = part.output_text
        self._seen = True

    def _append_text(self, text: object) -> None:
        if not self._capture_text or type(text) is not str or not text:
            return
        room = _MAX_STREAM_TEXT - self._text_len
        if room <= 0:
            return
        piece = text[:room]
        self._text.append(piece)
        self._text_len += len(piece)

    def _openai_chunk(self, chunk: object) -> None:
        info = self._info
        self._seen = True
        if info.provider is None:
            info.provider = PROVIDER_OPENAI
        sdk = _sdk(chunk)
        if sdk != "openai":
            hidden = _litellm_provider(chunk)
            if hidden is not None:
                info.provider = hidden or None
        model = _label(_get(chunk, "model"))
        if model is not None:
            info.response_model = model
        rid = _label(_get(chunk, "id"))
        if rid is not None:
            info.response_id = rid
        choices = _get(chunk, "choices")
        if _is_list(choices):
            for pos, choice in enumerate(choices[:_MAX_ITEMS]):
                reason = _finish(_get(choice, "finish_reason"))
                if reason is not None:
                    index = _count(_get(choice, "index"))
                    self._reasons[pos if index is None or index > _MAX_ITEMS else index] = reason
                if self._capture_text and pos == 0:
                    self._append_text(_get(_get(choice, "delta"), "content"))
        usage = _get(chunk, "usage")
        if usage is not None:
            part = ResponseInfo()
            _openai_usage(usage, part, foreign=sdk != "openai")
            self._merge(part, text_is_delta=True)

    def _anthropic_event(self, typ: str, event: object) -> None:
        self._seen = True
        info = self._info
        info.provider = PROVIDER_ANTHROPIC
        if typ == "content_block_delta":
            if self._capture_text:
                self._append_text(_get(_get(event, "delta"), "text"))
            return
        if typ == "message_start":
            message = _get(event, "message")
            model = _label(_get(message, "model"))
            if model is not None:
                info.response_model = model
            rid = _label(_get(message, "id"))
            if rid is not None:
                info.response_id = rid
            self._anthropic_usage(_get(message, "usage"))
            return
        if typ == "message_delta":
            reason = _finish(_get(_get(event, "delta"), "stop_reason"))
            if reason is not None:
                self._reasons = {0: reason}
            self._anthropic_usage(_get(event, "usage"))
            return
        # message_stop: the SDK's stream helper attaches the accumulated message snapshot.
        message = _get(event, "message")
        if message is not None:
            snapshot = extract_response(message)
            if snapshot is not None:
                self._merge(snapshot, text_is_delta=False)
                if snapshot.input_tokens is not None:
                    # The snapshot's input is already normalised; the raw parts are superseded.
                    self._a_input = self._a_read = self._a_write = None

    def _anthropic_usage(self, usage: object) -> None:
        if usage is None:
            return
        value = _count(_get(usage, "input_tokens"))
        if value is not None:
            self._a_input = value
        value = _count(_get(usage, "cache_read_input_tokens"))
        if value is not None:
            self._a_read = value
        value = _count(_get(usage, "cache_creation_input_tokens"))
        if value is not None:
            self._a_write = value
        value = _count(_get(usage, "output_tokens"))
        if value is not None:
            self._info.output_tokens = value

    def _responses_event(self, typ: str, event: object) -> None:
        if typ == "response.output_text.delta":
            self._seen = True
            self._info.provider = PROVIDER_OPENAI
            if self._capture_text:
                self._append_text(_get(event, "delta"))
            return
        response = _get(event, "response")
        if response is not None:
            part = _openai_responses(response)
            self._merge(part, text_is_delta=False)

    def _cohere_event(self, typ: str, event: object) -> None:
        self._seen = True
        info = self._info
        info.provider = PROVIDER_COHERE
        if typ == "message-start":
            rid = _label(_get(event, "id"))
            if rid is not None:
                info.response_id = rid
            return
        delta = _get(event, "delta")
        if typ == "content-delta":
            if self._capture_text:
                self._append_text(_get(_get(_get(delta, "message"), "content"), "text"))
            return
        reason = _finish(_get(delta, "finish_reason"))
        if reason is not None:
            self._reasons = {0: reason}
        usage = _get(delta, "usage")
        if usage is not None:
            part = ResponseInfo()
            _cohere_usage(usage, part)
            self._merge(part, text_is_delta=True)

    def _bedrock_event(self, key: str, body: object) -> None:
        self._seen = True
        info = self._info
        info.provider = PROVIDER_BEDROCK
        if key == "contentBlockDelta":
            if self._capture_text:
                self._append_text(_get(_get(body, "delta"), "text"))
        elif key == "messageStop":
            reason = _finish(_get(body, "stopReason"))
            if reason is not None:
                self._reasons = {0: reason}
        elif key == "metadata":
            usage = _get(body, "usage")
            if usage is not None:
                part = ResponseInfo()
                _bedrock_usage(usage, part)
                self._merge(part, text_is_delta=True)


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
        return value
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
        and info.response_model is None
        and info.response_id is None
        and not info.finish_reasons
        and info.units is None
        and info.output_text is None
    )


def _litellm_provider(resp: object) -> str | None:
    """The provider LiteLLM says it called: a provider name, ``""`` if it named one we do not
    know, ``None`` if this is not a LiteLLM response."""
    hidden = _get(resp, "_hidden_params")
    if hidden is None or isinstance(hidden, (str, bytes)):
        return None
    name = _label(_get(hidden, "custom_llm_provider"))
    if name is None:
        return None
    return _LITELLM_PROVIDERS.get(name, "")


# --- shapes -------------------------------------------------------------------------------


def _extract(resp: object) -> ResponseInfo | None:
    if type(resp) is not dict:
        if resp is None or isinstance(resp, (str, bytes, int, float)):
            return None
        sdk = _sdk(resp)
        if sdk == "anthropic":
            typ = _get(resp, "type")
            return _anthropic(resp) if type(typ) is str and typ == "message" else None
        if sdk == "google":
            return _gemini(resp)
        if sdk == "cohere":
            return _cohere(resp)
    obj = _get(resp, "object")
    if type(obj) is str:
        if obj in ("chat.completion", "text_completion"):
            return _openai_chat(resp)
        if obj == "response":
            return _openai_responses(resp)
        if obj == "list":
            return _openai_embeddings(resp)
    typ = _get(resp, "type")
    if type(typ) is str and typ == "message":
        return _anthropic(resp)
    usage = _get(resp, "usage")
    if usage is not None and not isinstance(usage, (str, bytes, int, float)):
        if _get(usage, "prompt_tokens") is not None or _get(usage, "completion_tokens") is not None:
            if _is_list(_get(resp, "data")) and _get(usage, "completion_tokens") is None:
                return _openai_embeddings(resp)
            return _openai_chat(resp)
        if _get(usage, "inputTokens") is not None or _get(usage, "outputTokens") is not None:
            return _bedrock(resp)
        if _get(usage, "billed_units") is not None or _get(usage, "tokens") is not None:
            return _cohere(resp)
        if _get(usage, "input_tokens") is not None or _get(usage, "output_tokens") is not None:
            if (
                _get(usage, "input_tokens_details") is not None
                or _get(usage, "output_tokens_details") is not None
                or _get(resp, "status") is not None
            ):
                return _openai_responses(resp)
            return _anthropic(resp)
    if _gemini_usage(resp)[0] is not None or _is_list(_get(resp, "candidates")):
        return _gemini(resp)
    meta = _get(resp, "meta")
    if meta is not None and (
        _get(meta, "billed_units") is not None or _get(meta, "tokens") is not None
    ):
        return _cohere(resp)
    if _get(resp, "stopReason") is not None or _get(resp, "output") is not None:
        return _bedrock(resp)
    if _is_list(_get(resp, "choices")):
        return _openai_chat(resp)
    return None


def _openai_usage(usage: object, info: ResponseInfo, *, foreign: bool) -> None:
    """OpenAI-shaped usage (chat, LiteLLM, OpenAI-compatible APIs): prompt_tokens is the total.

    ``foreign`` is False for the OpenAI SDK's own objects, which never carry the fields LiteLLM
    and other OpenAI-compatible APIs add.
    """
    info.input_tokens = _count(_get(usage, "prompt_tokens"))
    info.output_tokens = _count(_get(usage, "completion_tokens"))
    details = _get(usage, "prompt_tokens_details")
    cached = _count(_get(details, "cached_tokens"))
    info.reasoning_output_tokens = _count(
        _get(_get(usage, "completion_tokens_details"), "reasoning_tokens")
    )
    if not foreign:
        info.cached_input_tokens = cached
        return
    if cached is None:
        # LiteLLM copies Anthropic's and Bedrock's names onto its usage; DeepSeek has its own.
        cached = _count(_get(usage, "cache_read_input_tokens"))
        if cached is None:
            cached = _count(_get(usage, "prompt_cache_hit_tokens"))
    info.cached_input_tokens = cached
    write = _count(_get(usage, "cache_creation_input_tokens"))
    if write is None and details is not None:
        write = _count(_get(details, "cache_creation_tokens"))
        if write is None:
            write = _count(_get(details, "cache_write_tokens"))
    info.cache_write_input_tokens = write


def _openai_chat(resp: object) -> ResponseInfo:
    info = ResponseInfo(
        provider=PROVIDER_OPENAI,
        response_model=_label(_get(resp, "model")),
        response_id=_label(_get(resp, "id")),
    )
    foreign = _sdk(resp) != "openai"
    usage = _get(resp, "usage")
    if usage is not None:
        _openai_usage(usage, info, foreign=foreign)
    choices = _get(resp, "choices")
    if _is_list(choices) and choices:
        items = choices[:_MAX_ITEMS]
        reasons = [_finish(_get(choice, "finish_reason")) for choice in items]
        info.finish_reasons = tuple(r for r in reasons if r is not None)
        first = items[0]
        message = _get(first, "message")
        info.output_text = _text(
            _get(message, "content") if message is not None else _get(first, "text")
        )
    if foreign:
        hidden = _litellm_provider(resp)
        if hidden is not None:
            info.provider = hidden or None
    return info


def _openai_embeddings(resp: object) -> ResponseInfo:
    info = ResponseInfo(provider=PROVIDER_OPENAI, response_model=_label(_get(resp, "model")))
    usage = _get(resp, "usage")
    if usage is not None:
        value = _count(_get(usage, "prompt_tokens"))
        info.input_tokens = value if value is not None else _count(_get(usage, "total_tokens"))
    if _sdk(resp) != "openai":
        hidden = _litellm_provider(resp)
        if hidden is not None:
            info.provider = hidden or None
    return info


def _openai_responses(resp: object) -> ResponseInfo:
    info = ResponseInfo(
        provider=PROVIDER_OPENAI,
        response_model=_label(_get(resp, "model")),
        response_id=_label(_get(resp, "id")),
    )
    usage = _get(resp, "usage")
    if usage is not None:
        info.input_tokens = _count(_get(usage, "input_tokens"))
        info.output_tokens = _count(_get(usage, "output_tokens"))
        info.cached_input_tokens = _count(
            _get(_get(usage, "input_tokens_details"), "cached_tokens")
        )
        info.reasoning_output_tokens = _count(
            _get(_get(usage, "output_tokens_details"), "reasoning_tokens")
        )
    texts: list[str] = []
    called_tool = False
    output = _get(resp, "output")
    if _is_list(output):
        for item in output[:_MAX_ITEMS]:
            kind = _get(item, "type")
            if type(kind) is str and kind == "message":
                content = _get(item, "content")
                if _is_list(content):
                    for part in content[:_MAX_ITEMS]:
                        if _get(part, "type") == "output_text":
                            text = _text(_get(part, "text"))
                            if text is not None:
                                texts.append(text)
            elif type(kind) is str and kind == "function_call":
                called_tool = True
    if texts:
        info.output_text = "".join(texts)
    status = _label(_get(resp, "status"))
    if status == "completed":
        info.finish_reasons = ("tool_calls" if called_tool else "stop",)
    elif status == "incomplete":
        reason = _label(_get(_get(resp, "incomplete_details"), "reason"))
        info.finish_reasons = (_INCOMPLETE.get(reason, reason) if reason else "incomplete",)
    elif status == "failed":
        info.finish_reasons = ("error",)
    elif status == "cancelled":
        info.finish_reasons = ("cancelled",)
    return info


def _anthropic(resp: object) -> ResponseInfo:
    info = ResponseInfo(
        provider=PROVIDER_ANTHROPIC,
        response_model=_label(_get(resp, "model")),
        response_id=_label(_get(resp, "id")),
    )
    usage = _get(resp, "usage")
    if usage is not None:
        uncached = _count(_get(usage, "input_tokens"))
        read = _count(_get(usage, "cache_read_input_tokens"))
        write = _count(_get(usage, "cache_creation_input_tokens"))
        if uncached is not None:
            info.input_tokens = _sum_counts(uncached, read, write)
        info.cached_input_tokens = read
        info.cache_write_input_tokens = write
        info.output_tokens = _count(_get(usage, "output_tokens"))
    reason = _finish(_get(resp, "stop_reason"))
    if reason is not None:
        info.finish_reasons = (reason,)
    info.output_text = _join_text_blocks(_get(resp, "content"))
    return info


def _join_text_blocks(content: object) -> str | None:
    """Concatenated ``text`` of the text blocks of an Anthropic, Bedrock or Cohere message."""
    if type(content) is str:
        return content
    if not _is_list(content):
        return None
    texts: list[str] = []
    for block in content[:_MAX_ITEMS]:
        kind = _get(block, "type")
        if kind is None or kind == "text":
            text = _text(_get(block, "text"))
            if text is not None:
                texts.append(text)
    return "".join(texts) if texts else None


def _gemini_usage(resp: object) -> tuple[object, bool]:
    """The usage metadata and whether its keys are camelCase (REST) rather than snake_case."""
    usage = _get(resp, "usage_metadata")
    if usage is not None:
        return usage, False
    usage = _get(resp, "usageMetadata")
    return usage, usage is not None


# Gemini usage keys: (snake_case as in the SDKs, camelCase as in REST).
_GEMINI_SNAKE: Final = (
    "prompt_token_count",
    "tool_use_prompt_token_count",
    "candidates_token_count",
    "response_token_count",  # the Live API's name for the candidates count
    "thoughts_token_count",
    "cached_content_token_count",
)
_GEMINI_CAMEL: Final = (
    "promptTokenCount",
    "toolUsePromptTokenCount",
    "candidatesTokenCount",
    "responseTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
)


def _gemini(resp: object) -> ResponseInfo:
    model = _label(_get(resp, "model_version"))
    if model is None:
        model = _label(_get(resp, "modelVersion"))
    rid = _label(_get(resp, "response_id"))
    if rid is None:
        rid = _label(_get(resp, "responseId"))
    info = ResponseInfo(provider=PROVIDER_GEMINI, response_model=model, response_id=rid)
    usage, camel = _gemini_usage(resp)
    if usage is not None:
        keys = _GEMINI_CAMEL if camel else _GEMINI_SNAKE
        prompt = _count(_get(usage, keys[0]))
        candidates = _count(_get(usage, keys[2]))
        if candidates is None:
            candidates = _count(_get(usage, keys[3]))
        thoughts = _count(_get(usage, keys[4]))
        # prompt_token_count already includes cached content; tool-use prompts (tool results
        # fed back to the model) are input that the prompt count leaves out.
        if prompt is not None:
            info.input_tokens = _sum_counts(prompt, _count(_get(usage, keys[1])))
        if candidates is not None or thoughts is not None:
            info.output_tokens = _sum_counts(candidates, thoughts)
        info.cached_input_tokens = _count(_get(usage, keys[5]))
        info.reasoning_output_tokens = thoughts
    candidates_list = _get(resp, "candidates")
    if _is_list(candidates_list) and candidates_list:
        _gemini_candidates(candidates_list[:_MAX_ITEMS], info)
    return info


def _gemini_candidates(items: list[object] | tuple[object, ...], info: ResponseInfo) -> None:
    reasons: list[str] = []
    for candidate in items:
        reason = _finish(_get(candidate, "finish_reason"))
        if reason is None:
            reason = _finish(_get(candidate, "finishReason"))
        if reason is not None:
            reasons.append(reason)
    info.finish_reasons = tuple(reasons)
    parts = _get(_get(items[0], "content"), "parts")
    if not _is_list(parts):
        return
    texts: list[str] = []
    for part in parts[:_MAX_ITEMS]:
        if _get(part, "thought") is True:
            continue  # thought summaries are not the answer
        text = _text(_get(part, "text"))
        if text is not None:
            texts.append(text)
    if texts:
        info.output_text = "".join(texts)


def _bedrock_usage(usage: object, info: ResponseInfo) -> None:
    """Bedrock Converse usage: inputTokens excludes cache reads and writes, so add them."""
    uncached = _count(_get(usage, "inputTokens"))
    read = _count(_get(usage, "cacheReadInputTokens"))
    write = _count(_get(usage, "cacheWriteInputTokens"))
    if uncached is not None:
        info.input_tokens = _sum_counts(uncached, read, write)
    info.cached_input_tokens = read
    info.cache_write_input_tokens = write
    info.output_tokens = _count(_get(usage, "outputTokens"))


def _bedrock(resp: object) -> ResponseInfo:
    info = ResponseInfo(provider=PROVIDER_BEDROCK)
    usage = _get(resp, "usage")
    if usage is not None:
        _bedrock_usage(usage, info)
    reason = _finish(_get(resp, "stopReason"))
    if reason is not None:
        info.finish_reasons = (reason,)
    info.output_text = _join_text_blocks(_get(_get(_get(resp, "output"), "message"), "content"))
    return info


def _cohere_usage(usage: object, info: ResponseInfo) -> None:
    """Cohere usage or meta: billed units first (what cost is computed from), then tokens."""
    billed = _get(usage, "billed_units")
    tokens = _get(usage, "tokens")
    value = _count(_get(billed, "input_tokens"))
    info.input_tokens = value if value is not None else _count(_get(tokens, "input_tokens"))
    value = _count(_get(billed, "output_tokens"))
    info.output_tokens = value if value is not None else _count(_get(tokens, "output_tokens"))
    info.units = _number(_get(billed, "search_units"))


def _cohere(resp: object) -> ResponseInfo:
    info = ResponseInfo(provider=PROVIDER_COHERE)
    usage = _get(resp, "usage")
    if usage is None:
        usage = _get(resp, "meta")  # chat v1, embed and rerank report usage under "meta"
    if usage is not None:
        _cohere_usage(usage, info)
    rid = _label(_get(resp, "id"))
    if rid is None:
        rid = _label(_get(resp, "generation_id"))
    info.response_id = rid
    reason = _finish(_get(resp, "finish_reason"))
    if reason is not None:
        info.finish_reasons = (reason,)
    message = _get(resp, "message")
    if message is not None:
        info.output_text = _join_text_blocks(_get(message, "content"))
    else:
        info.output_text = _text(_get(resp, "text"))
    return info
