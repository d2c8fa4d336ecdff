"""Usage, model, id and finish reasons read from whatever a provider SDK returned.

``Stage.record_response(resp)`` hands us the SDK's return value untouched. We read it by duck
typing — attribute access for SDK objects, key access for dicts (``model_dump()`` output, raw
JSON, boto3) — so nothing here imports openai, anthropic, google-genai, boto3, cohere or litellm.

Nothing here raises. The per-provider readers are in :mod:`chainsight.stages.response_providers`,
:class:`ResponseInfo` and the field readers in :mod:`chainsight.stages.response_info`.
"""

from __future__ import annotations

from typing import Final

from chainsight.stages.response_info import (
    _MAX_ITEMS,
    PROVIDER_ANTHROPIC,
    PROVIDER_BEDROCK,
    PROVIDER_COHERE,
    PROVIDER_OPENAI,
    ResponseInfo,
    _count,
    _finish,
    _get,
    _is_empty,
    _is_list,
    _label,
    _sdk,
    _sum_counts,
)
from chainsight.stages.response_providers import (
    _anthropic_thinking,
    _anthropic_writes,
    _bedrock_usage,
    _cohere_usage,
    _extract,
    _gemini,
    _gemini_usage,
    _litellm_provider,
    _openai_responses,
    _openai_usage,
)

# ResponseInfo is re-exported: the usage stage imports it from here.
__all__ = ["ResponseInfo", "StreamAccumulator", "extract_response"]

# A stream accumulates completion text only when asked; this bounds memory on endless streams.
_MAX_STREAM_TEXT: Final = 1_000_000

# Bedrock ConverseStream events are one-key dicts named after the event.
_BEDROCK_EVENTS: Final = frozenset({"messageStart", "contentBlockDelta", "messageStop", "metadata"})

_ANTHROPIC_EVENTS: Final = frozenset(
    {"message_start", "message_delta", "message_stop", "content_block_delta"}
)


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
        "_a_write_1h",
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
        self._a_write_1h: int | None = None
        self._seen = False

    def add(self, chunk: object) -> None:
        """Take one chunk or event of the stream into account; never raises."""
        try:
            self._add(chunk)
        except Exception:  # a chunk we cannot read must not break the user's stream
            return

    def has_finish_reason(self) -> bool:
        """True once a chunk said why the response ended (a Gemini stream's last chunk)."""
        return bool(self._reasons)

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
            cache_write_1h_input_tokens=src.cache_write_1h_input_tokens,
            response_model=src.response_model,
            response_id=src.response_id,
            finish_reasons=tuple(self._reasons[i] for i in sorted(self._reasons)),
            provider=src.provider,
            units=src.units,
            output_text=src.output_text,
            output_message=src.output_message,
        )
        if self._a_input is not None:
            info.input_tokens = _sum_counts(self._a_input, self._a_read, self._a_write)
        if self._a_read is not None:
            info.cached_input_tokens = self._a_read
        if self._a_write is not None:
            info.cache_write_input_tokens = self._a_write
        if self._a_write_1h is not None:
            info.cache_write_1h_input_tokens = self._a_write_1h
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
        if part.cache_write_1h_input_tokens is not None:
            info.cache_write_1h_input_tokens = part.cache_write_1h_input_tokens
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
        if part.output_message is not None and self._capture_text:
            info.output_message = part.output_message
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
                    self._a_input = self._a_read = self._a_write = self._a_write_1h = None

    def _anthropic_usage(self, usage: object) -> None:
        """Anthropic stream usage: message_start has the input side, message_delta the
        cumulative output (newer API versions repeat the input side there too)."""
        if usage is None:
            return
        value = _count(_get(usage, "input_tokens"))
        if value is not None:
            self._a_input = value
        value = _count(_get(usage, "cache_read_input_tokens"))
        if value is not None:
            self._a_read = value
        write, write_1h = _anthropic_writes(usage)
        if write is not None:
            self._a_write = write
        if write_1h is not None:
            self._a_write_1h = write_1h
        value = _count(_get(usage, "output_tokens"))
        if value is not None:
            self._info.output_tokens = value
        value = _anthropic_thinking(usage)
        if value is not None:
            self._info.reasoning_output_tokens = value

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
