"""One reader per provider response shape, and the dispatch that picks it.

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
* Cache writes: OpenAI reports them in ``prompt_tokens_details.cache_write_tokens`` (chat) and
  ``input_tokens_details.cache_write_tokens`` (Responses), parts of the input total; Anthropic
  in ``cache_creation_input_tokens`` with the split by TTL in ``cache_creation`` (one-hour writes
  cost more), Bedrock in ``cacheWriteInputTokens`` with the split in ``cacheDetails``.
* Reasoning: OpenAI ``reasoning_tokens``, Anthropic ``output_tokens_details.thinking_tokens``,
  Gemini ``thoughts_token_count``; always a part of the output count we report.
"""

from __future__ import annotations

from typing import Final

from chainsight.stages.response_info import (
    _MAX_ITEMS,
    PROVIDER_ANTHROPIC,
    PROVIDER_BEDROCK,
    PROVIDER_COHERE,
    PROVIDER_GEMINI,
    PROVIDER_OPENAI,
    ResponseInfo,
    _count,
    _finish,
    _get,
    _is_list,
    _label,
    _number,
    _sdk,
    _sum_counts,
    _text,
)

__all__: list[str] = []

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
    """OpenAI-shaped usage (chat, LiteLLM, OpenAI-compatible APIs): prompt_tokens is the total,
    ``prompt_tokens_details`` says which part was read from and written to the cache.

    ``foreign`` is False for the OpenAI SDK's own objects, which never carry the fields LiteLLM
    and other OpenAI-compatible APIs add.
    """
    info.input_tokens = _count(_get(usage, "prompt_tokens"))
    info.output_tokens = _count(_get(usage, "completion_tokens"))
    details = _get(usage, "prompt_tokens_details")
    cached = _count(_get(details, "cached_tokens"))
    write = _count(_get(details, "cache_write_tokens")) if details is not None else None
    info.reasoning_output_tokens = _count(
        _get(_get(usage, "completion_tokens_details"), "reasoning_tokens")
    )
    if not foreign:
        info.cached_input_tokens = cached
        info.cache_write_input_tokens = write
        return
    if cached is None:
        # LiteLLM copies Anthropic's and Bedrock's names onto its usage; DeepSeek has its own.
        cached = _count(_get(usage, "cache_read_input_tokens"))
        if cached is None:
            cached = _count(_get(usage, "prompt_cache_hit_tokens"))
    info.cached_input_tokens = cached
    if write is None:
        write = _count(_get(usage, "cache_creation_input_tokens"))
        if write is None and details is not None:
            write = _count(_get(details, "cache_creation_tokens"))
    info.cache_write_input_tokens = write
    if details is not None:
        # LiteLLM keeps Anthropic's split of the writes by TTL here.
        split = _get(details, "cache_creation_token_details")
        if split is not None:
            info.cache_write_1h_input_tokens = _count(_get(split, "ephemeral_1h_input_tokens"))


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
        if message is not None and _get(message, "tool_calls"):
            info.output_message = message
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
        details = _get(usage, "input_tokens_details")
        if details is not None:
            info.cached_input_tokens = _count(_get(details, "cached_tokens"))
            info.cache_write_input_tokens = _count(_get(details, "cache_write_tokens"))
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
        write, write_1h = _anthropic_writes(usage)
        if uncached is not None:
            info.input_tokens = _sum_counts(uncached, read, write)
        info.cached_input_tokens = read
        info.cache_write_input_tokens = write
        info.cache_write_1h_input_tokens = write_1h
        info.output_tokens = _count(_get(usage, "output_tokens"))
        info.reasoning_output_tokens = _anthropic_thinking(usage)
    reason = _finish(_get(resp, "stop_reason"))
    if reason is not None:
        info.finish_reasons = (reason,)
    content = _get(resp, "content")
    info.output_text = _join_text_blocks(content)
    if _is_list(content) and any(_get(b, "type") == "tool_use" for b in content[:_MAX_ITEMS]):
        info.output_message = {"role": "assistant", "content": content}
    return info


def _anthropic_writes(usage: object) -> tuple[int | None, int | None]:
    """All cache writes and the one-hour part of them, from Anthropic usage.

    ``cache_creation_input_tokens`` is every write; ``cache_creation`` splits it by TTL
    (``ephemeral_5m_input_tokens``, ``ephemeral_1h_input_tokens``). When only the split is
    there, the writes are its sum.
    """
    write = _count(_get(usage, "cache_creation_input_tokens"))
    split = _get(usage, "cache_creation")
    if split is None:
        return write, None
    write_1h = _count(_get(split, "ephemeral_1h_input_tokens"))
    if write is None:
        write_5m = _count(_get(split, "ephemeral_5m_input_tokens"))
        if write_5m is not None or write_1h is not None:
            write = _sum_counts(write_5m, write_1h)
    return write, write_1h


def _anthropic_thinking(usage: object) -> int | None:
    """Anthropic's thinking tokens: part of ``output_tokens``, as OpenTelemetry's reasoning."""
    details = _get(usage, "output_tokens_details")
    return None if details is None else _count(_get(details, "thinking_tokens"))


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
    """Bedrock Converse usage: inputTokens excludes cache reads and writes, so add them.

    ``cacheDetails`` splits the writes by TTL (``[{"ttl": "1h", "inputTokens": n}, ...]``).
    """
    uncached = _count(_get(usage, "inputTokens"))
    read = _count(_get(usage, "cacheReadInputTokens"))
    write = _count(_get(usage, "cacheWriteInputTokens"))
    if uncached is not None:
        info.input_tokens = _sum_counts(uncached, read, write)
    info.cached_input_tokens = read
    info.cache_write_input_tokens = write
    info.output_tokens = _count(_get(usage, "outputTokens"))
    details = _get(usage, "cacheDetails")
    if _is_list(details):
        for detail in details[:_MAX_ITEMS]:
            if _label(_get(detail, "ttl")) == "1h":
                info.cache_write_1h_input_tokens = _count(_get(detail, "inputTokens"))


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
    """Cohere usage or meta: billed units first (what cost is computed from), then tokens.

    ``cached_tokens`` (prompt tokens that hit Cohere's cache) is kept as the cached part of the
    input, but never above the input it is a part of: the billed input leaves out the prompt
    template, which the cache may include.
    """
    billed = _get(usage, "billed_units")
    tokens = _get(usage, "tokens")
    value = _count(_get(billed, "input_tokens"))
    info.input_tokens = value if value is not None else _count(_get(tokens, "input_tokens"))
    value = _count(_get(billed, "output_tokens"))
    info.output_tokens = value if value is not None else _count(_get(tokens, "output_tokens"))
    info.units = _number(_get(billed, "search_units"))
    cached = _count(_get(usage, "cached_tokens"))
    if cached is not None and info.input_tokens is not None:
        cached = min(cached, info.input_tokens)
    info.cached_input_tokens = cached


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
