"""The Anthropic integration: ``messages.create`` and ``messages.stream`` of the ``anthropic`` SDK.

``chainsight.instrument("anthropic")`` replaces them on the SDK's classes (every client, sync or
async). Each call becomes a ``model`` stage named ``anthropic.messages`` (or enriches the
user's open ``model`` stage). ``create(stream=True)`` and the ``messages.stream()`` helper are
observed event by event: ``message_start`` carries the input and cache tokens,
``message_delta`` the output tokens and the stop reason. The helper sends its request when its
context manager is entered, so that is when the stage starts. ``anthropic`` is imported only
here, and only when the integration is turned on.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from chainsight.config import state as _state
from chainsight.integrations._calls import Site, async_method, run_async, run_sync, sync_method
from chainsight.integrations._common import model_attributes, record_chunk, record_response
from chainsight.integrations._patching import Integration, Plan
from chainsight.integrations._streams import stream_patches

__all__ = ["INTEGRATION", "instrument", "uninstrument"]


def _messages(resource: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return model_attributes(resource, kwargs, "anthropic", "chat")


def _prompt(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"input_messages": kwargs.get("messages"), "system_instructions": kwargs.get("system")}


MESSAGES = Site(
    "model",
    "anthropic.messages",
    _messages,
    record_response,
    record_chunk,
    "integration:anthropic",
    per_model=True,
    content=_prompt,
)


def _sender(request: Callable[[], Any]) -> Callable[..., Any]:
    """The manager's request, callable with the ``stream()`` keywords (which it already has)."""
    return lambda *_args, **_kwargs: request()


def _awaiter(request: Awaitable[Any]) -> Callable[..., Awaitable[Any]]:
    async def send(*_args: Any, **_kwargs: Any) -> Any:
        return await request

    return send


def _stream_helper(original: Callable[..., Any]) -> Callable[..., Any]:
    """``messages.stream()`` builds a manager around a request it sends on ``__enter__``: the
    manager is returned as is, its request replaced by one that runs as the stage."""

    @functools.wraps(original)
    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        manager = original(self, *args, **kwargs)
        try:
            attr = f"_{type(manager).__name__}__api_request"
            request = manager.__dict__[attr]
            if callable(request):
                traced = functools.partial(run_sync, MESSAGES, _sender(request), self, (), kwargs)
                manager.__dict__[attr] = traced
            else:  # the async manager holds the coroutine of its request, awaited on __aenter__
                manager.__dict__[attr] = run_async(MESSAGES, _awaiter(request), self, (), kwargs)
        except Exception as exc:  # an SDK version laid out differently: the stream runs untraced
            _state.report_internal(MESSAGES.where, exc)
        return manager

    return stream


def _plan() -> Plan:
    # The SDK is imported here, when the integration is turned on, never at chainsight import.
    from anthropic import AsyncStream, Stream  # noqa: PLC0415
    from anthropic.resources.messages import AsyncMessages, Messages  # noqa: PLC0415

    patches: list[tuple[type, str, Any]] = [
        (Messages, "create", sync_method(MESSAGES)),
        (AsyncMessages, "create", async_method(MESSAGES)),
        (Messages, "stream", _stream_helper),
        (AsyncMessages, "stream", _stream_helper),
    ]
    patches += stream_patches(Stream, AsyncStream)
    return Plan(patches, (Stream, AsyncStream))


INTEGRATION = Integration("anthropic", "anthropic", _plan)


def instrument() -> None:
    """Turn the Anthropic integration on (idempotent); ``chainsight.instrument("anthropic")``."""
    INTEGRATION.instrument()


def uninstrument() -> None:
    """Put the SDK's original methods back; ``chainsight.uninstrument("anthropic")``."""
    INTEGRATION.uninstrument()
