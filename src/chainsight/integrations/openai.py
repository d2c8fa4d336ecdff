"""The OpenAI integration: chat completions, responses and embeddings of the ``openai`` SDK.

``chainsight.instrument("openai")`` replaces, on the SDK's classes (so every client, made before
or after, sync or async, is covered), ``chat.completions.create``/``parse``,
``responses.create``/``parse`` and ``embeddings.create``. Each call becomes a ``model`` stage
(``embedding`` for embeddings) named ``openai.chat``, ``openai.responses`` or
``openai.embeddings``, or enriches the user's open stage of that kind. Streams
(``stream=True``, and the ``chat.completions.stream()``/``responses.stream()`` helpers, which
call ``create``) are observed chunk by chunk until they end. ``openai`` is imported only here,
and only when the integration is turned on.
"""

from __future__ import annotations

from typing import Any

from chainsight.integrations._calls import Site, async_method, sync_method
from chainsight.integrations._common import model_attributes, record_chunk, record_response
from chainsight.integrations._patching import Integration, Plan
from chainsight.integrations._streams import helper_patches, stream_patches

__all__ = ["INTEGRATION", "instrument", "uninstrument"]


def _chat(resource: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return model_attributes(resource, kwargs, "openai", "chat")


def _embeddings(resource: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return model_attributes(resource, kwargs, "openai", "embeddings")


def _chat_prompt(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"input_messages": kwargs.get("messages")}


def _responses_prompt(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {
        "input_messages": kwargs.get("input"),
        "system_instructions": kwargs.get("instructions"),
    }


CHAT = Site(
    "model",
    "openai.chat",
    _chat,
    record_response,
    record_chunk,
    "integration:openai",
    per_model=True,
    content=_chat_prompt,
)
RESPONSES = Site(
    "model",
    "openai.responses",
    _chat,
    record_response,
    record_chunk,
    "integration:openai",
    per_model=True,
    content=_responses_prompt,
)
EMBEDDINGS = Site(
    "embedding",
    "openai.embeddings",
    _embeddings,
    record_response,
    record_chunk,
    "integration:openai",
    per_model=True,
)


def _plan() -> Plan:
    # The SDK is imported here, when the integration is turned on, never at chainsight import.
    from openai import AsyncStream, Stream  # noqa: PLC0415
    from openai.lib.streaming.chat import AsyncChatCompletionStream, ChatCompletionStream  # noqa: PLC0415
    from openai.lib.streaming.responses import AsyncResponseStream, ResponseStream  # noqa: PLC0415
    from openai.resources.chat.completions import AsyncCompletions, Completions  # noqa: PLC0415
    from openai.resources.embeddings import AsyncEmbeddings, Embeddings  # noqa: PLC0415
    from openai.resources.responses import AsyncResponses, Responses  # noqa: PLC0415

    patches: list[tuple[type, str, Any]] = [
        (Completions, "create", sync_method(CHAT)),
        (AsyncCompletions, "create", async_method(CHAT)),
        (Responses, "create", sync_method(RESPONSES)),
        (AsyncResponses, "create", async_method(RESPONSES)),
        (Embeddings, "create", sync_method(EMBEDDINGS)),
        (AsyncEmbeddings, "create", async_method(EMBEDDINGS)),
    ]
    # parse() posts on its own (it does not call create()).
    sync_parse: list[tuple[type, Site]] = [(Completions, CHAT), (Responses, RESPONSES)]
    async_parse: list[tuple[type, Site]] = [(AsyncCompletions, CHAT), (AsyncResponses, RESPONSES)]
    patches += [(owner, "parse", sync_method(site)) for owner, site in sync_parse]
    patches += [(owner, "parse", async_method(site)) for owner, site in async_parse]
    patches += stream_patches(Stream, AsyncStream)
    patches += helper_patches(
        [ChatCompletionStream, ResponseStream], [AsyncChatCompletionStream, AsyncResponseStream]
    )
    return Plan(patches, (Stream, AsyncStream))


INTEGRATION = Integration("openai", "openai", _plan)


def instrument() -> None:
    """Turn the OpenAI integration on (idempotent). Same as ``chainsight.instrument("openai")``."""
    INTEGRATION.instrument()


def uninstrument() -> None:
    """Put the SDK's original methods back. Same as ``chainsight.uninstrument("openai")``."""
    INTEGRATION.uninstrument()
