"""Streams the SDKs return, observed until they end, without changing their type.

An SDK stream (``openai.Stream``, ``anthropic.AsyncStream``, ...) stays the SDK's own object, so
the SDK's helpers (``chat.completions.stream()``, ``messages.stream()``) and the app's
``isinstance`` checks keep working. Instead its class's iteration and ``close`` methods are
replaced, while an integration is on, by wrappers that look for an :class:`Observer` on the
instance and otherwise forward straight to the original.

A stage opened for a stream ends when the stream is exhausted (``ok``), raises (classified),
is closed before its end or dropped unfinished (``cancelled``, ending at its last chunk): a
``weakref.finalize`` on the stream catches the drop, even of a stream never iterated.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final

from chainsight.config import state as _state
from chainsight.stages import calls
from chainsight.stages.stage import Stage

__all__ = ["STREAM_TYPES", "Observer", "is_stream", "observe", "stream_patches"]

_ATTR: Final = "_chainsight_observer"
# Stream classes of instrumented libraries; a result of one of these types is observed.
STREAM_TYPES: set[type] = set()


class Observer:
    """What one stream reports to: its stage, whether the stream owns it, its last chunk."""

    __slots__ = ("__weakref__", "chunk", "done", "last", "own", "stage")

    def __init__(self, stage: Stage, chunk: Callable[[Stage, Any], None], own: bool) -> None:
        self.stage = stage
        self.chunk = chunk
        self.own = own
        self.last = 0.0
        self.done = False

    def item(self, item: Any) -> None:
        """One chunk arrived: the first marks the time to first chunk; each is recorded."""
        try:
            if self.done:
                return
            now = time.perf_counter()
            if not self.last:
                calls.first_chunk(self.stage, now)
            self.last = now
            self.chunk(self.stage, item)
        except Exception as exc:
            _state.report_internal("integration_stream", exc)

    def end(self, exc: BaseException | None) -> None:
        """The stream ended (exhausted when ``exc`` is None); the stage ends if it owns it."""
        if self.done:
            return
        self.done = True
        if self.own:
            calls.end_call(self.stage, exc)

    def cancel(self) -> None:
        """Closed or dropped before its end: ``cancelled``, ending at the last chunk."""
        if self.done:
            return
        self.done = True
        if self.own:
            calls.end_call(self.stage, GeneratorExit(), self.last or None)


def register(*types: type) -> None:
    """Results of these types are streams to observe (called by an integration when on)."""
    STREAM_TYPES.update(types)


def unregister(*types: type) -> None:
    """The integration owning these stream types was turned off."""
    STREAM_TYPES.difference_update(types)


def is_stream(result: object) -> bool:
    """Whether ``result`` is a stream of an instrumented library."""
    return type(result) in STREAM_TYPES


def observe(stream: Any, stage: Stage, chunk: Callable[[Stage, Any], None], own: bool) -> None:
    """Report ``stream``'s chunks and its end to ``stage``."""
    observer = Observer(stage, chunk, own)
    stream.__dict__[_ATTR] = observer
    if own:
        # The finalizer holds the observer, not the stream: dropping the stream runs it.
        weakref.finalize(stream, observer.cancel).atexit = False


def observer_of(stream: Any) -> Observer | None:
    """The observer of an SDK stream, or None."""
    found = getattr(stream, "__dict__", {}).get(_ATTR)
    return found if isinstance(found, Observer) else None


# --- the replacement methods of a stream class ---------------------------------------------


def _next(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(original)
    def __next__(self: Any) -> Any:
        observer = self.__dict__.get(_ATTR)
        if observer is None:
            return original(self)
        try:
            item = original(self)
        except StopIteration:
            observer.end(None)
            raise
        except BaseException as exc:
            observer.end(exc)
            raise
        observer.item(item)
        return item

    return __next__


def _iter(original: Callable[[Any], Iterator[Any]]) -> Callable[[Any], Iterator[Any]]:
    @functools.wraps(original)
    def __iter__(self: Any) -> Iterator[Any]:
        observer = self.__dict__.get(_ATTR)
        if observer is None:
            yield from original(self)
            return
        try:
            for item in original(self):
                observer.item(item)
                yield item
        except GeneratorExit:
            observer.cancel()  # the consumer left the loop (break) or dropped the iterator
            raise
        except BaseException as exc:
            observer.end(exc)
            raise
        observer.end(None)

    return __iter__


def _close(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(original)
    def close(self: Any) -> Any:
        observer = self.__dict__.get(_ATTR)
        if observer is not None:
            observer.cancel()
        return original(self)

    return close


def _anext(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(original)
    async def __anext__(self: Any) -> Any:
        observer = self.__dict__.get(_ATTR)
        if observer is None:
            return await original(self)
        try:
            item = await original(self)
        except StopAsyncIteration:
            observer.end(None)
            raise
        except BaseException as exc:
            observer.end(exc)
            raise
        observer.item(item)
        return item

    return __anext__


def _aiter(original: Callable[[Any], AsyncIterator[Any]]) -> Callable[[Any], AsyncIterator[Any]]:
    @functools.wraps(original)
    async def __aiter__(self: Any) -> AsyncIterator[Any]:
        observer = self.__dict__.get(_ATTR)
        if observer is None:
            async for item in original(self):
                yield item
            return
        try:
            async for item in original(self):
                observer.item(item)
                yield item
        except GeneratorExit:
            observer.cancel()
            raise
        except BaseException as exc:
            observer.end(exc)
            raise
        observer.end(None)

    return __aiter__


def _aclose(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(original)
    async def close(self: Any) -> Any:
        observer = self.__dict__.get(_ATTR)
        if observer is not None:
            observer.cancel()
        return await original(self)

    return close


def _helper_close(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``close`` of an SDK helper stream that closes the HTTP response, not its raw stream."""

    @functools.wraps(original)
    def close(self: Any) -> Any:
        observer = observer_of(getattr(self, "_raw_stream", None))
        if observer is not None:
            observer.cancel()
        return original(self)

    return close


def _helper_aclose(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(original)
    async def close(self: Any) -> Any:
        observer = observer_of(getattr(self, "_raw_stream", None))
        if observer is not None:
            observer.cancel()
        return await original(self)

    return close


Replacement = Callable[[Callable[..., Any]], Callable[..., Any]]


def stream_patches(sync_stream: type, async_stream: type) -> list[tuple[type, str, Replacement]]:
    """The (class, method, replacement maker) triples of a library's stream classes."""
    return [
        (sync_stream, "__next__", _next),
        (sync_stream, "__iter__", _iter),
        (sync_stream, "close", _close),
        (async_stream, "__anext__", _anext),
        (async_stream, "__aiter__", _aiter),
        (async_stream, "close", _aclose),
    ]


def helper_patches(
    sync_helpers: list[type], async_helpers: list[type]
) -> list[tuple[type, str, Replacement]]:
    """Patches of helper streams whose ``close`` bypasses their raw stream's."""
    return [(cls, "close", _helper_close) for cls in sync_helpers] + [
        (cls, "close", _helper_aclose) for cls in async_helpers
    ]
