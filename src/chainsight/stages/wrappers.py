"""The public entry points: ``traced_stage``, ``stage``, ``request``, ``current_stage``, and the
wrappers of sync functions, coroutines, generators and async generators.

The hot path, per stage: one read of the config snapshot; (rarely) refresh the decoration-time
spec when ``configure()`` changed something; one ``start_span`` with every static attribute; one
context attach that carries both the span and the :class:`Stage`; user code; classify; final
attributes in one call; end; metrics through cached children (see ``stages.lifecycle``). Nothing
here does I/O.

Off (``configure(enabled=False)``) is one branch per call, on the snapshot every call reads
anyway (``state.CONFIG``, no function call), in a layer written at decoration with the function's
own parameters (``stages.forwarding``): a generic ``*args, **kwargs`` layer spent most of the
off path packing and unpacking arguments. On, that layer hands the arguments to the traced
wrapper (one more call, ~40 ns against a span's ~20 µs).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncGenerator, Callable, Generator
from contextvars import Token
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from chainsight.config import state as _state
from chainsight.errors import ConfigurationError
from chainsight.stages import usage as _usage
from chainsight.stages.forwarding import forwarding
from chainsight.stages.lifecycle import RequestKeywords, begin, finish, refuse
from chainsight.stages.noop import NOOP_STAGE
from chainsight.stages.spec import Spec, make_spec, spec_for
from chainsight.stages.stage import STAGE_KEY, Stage

__all__ = ["current_stage", "request", "stage", "traced_stage"]

F = TypeVar("F", bound=Callable[..., Any])


# --- public entry points -------------------------------------------------------------------


def current_stage() -> Stage:
    """The innermost open stage (or request), or a no-op stage whose verbs do nothing."""
    found = otel_context.get_value(STAGE_KEY)
    return found if isinstance(found, Stage) else NOOP_STAGE


class _StageContext:
    """The context manager behind ``stage()`` and ``request()`` (sync and async).

    One object may be entered again while already entered (reused across tasks or nested):
    each entry (its stage and context token) is remembered, and an exit finishes the entry of
    the context it runs in.
    """

    __slots__ = ("_entries", "_request_kw", "_spec")

    def __init__(self, spec: Spec, request_kw: RequestKeywords | None) -> None:
        self._spec = spec
        self._request_kw = request_kw
        self._entries: list[tuple[Stage, Token[Context]] | None] = []

    def __enter__(self) -> Stage:
        cfg = _state.CONFIG or _state.current()
        if not cfg.enabled:
            self._entries.append(None)
            return NOOP_STAGE
        begun = begin(self._spec, cfg, self._request_kw)
        if begun is None:
            self._entries.append(None)
            return NOOP_STAGE
        stage, ctx = begun
        if self._spec.kind == "model":
            refused = _usage.check_budget(stage)
            if refused is not None:
                self._entries.append(None)
                finish(stage, refused)
                raise refused
        self._entries.append((stage, otel_context.attach(ctx)))
        return stage

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        entries = self._entries
        if not entries:
            return
        index = len(entries) - 1
        if index:
            current = otel_context.get_value(STAGE_KEY)
            found = [i for i, e in enumerate(entries) if e is not None and e[0] is current]
            if not found:
                found = [i for i, e in enumerate(entries) if e is None]
            if found:
                index = found[-1]
        entry = entries.pop(index)
        if entry is None:
            return
        stage, token = entry
        try:
            otel_context.detach(token)
        except Exception as err:
            _state.report_internal("detach", err)
        finish(stage, exc)

    async def __aenter__(self) -> Stage:
        return self.__enter__()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.__exit__(exc_type, exc, tb)


def stage(kind: str, *, name: str | None = None, **attributes: Any) -> _StageContext:
    """Open a stage as a context manager: ``with chainsight.stage("prompt", prompt_version="7"):``.

    Takes the same keywords as :func:`traced_stage`; ``name`` defaults to the kind. Works as
    ``async with`` too. Yields the :class:`Stage`.
    """
    return _StageContext(spec_for(kind, name, attributes), None)


def request(
    name: str,
    *,
    tenant: str | None = None,
    feature: str | None = None,
    team: str | None = None,
    **attributes: Any,
) -> _StageContext:
    """Open a request, the root of a chain: ``with chainsight.request("answer_ticket",
    tenant="acme", feature="copilot"):``.

    ``tenant``, ``feature`` and ``team`` label the request's metrics (cardinality-guarded) and
    are set on every stage span inside it. Works as ``async with`` too.
    """
    spec = spec_for("request", name, attributes)
    return _StageContext(spec, (tenant, feature, team))


def traced_stage(
    kind: str,
    /,
    *,
    name: str | None = None,
    system: str | None = None,
    provider: str | None = None,
    model: str | None = None,
    operation: str | None = None,
    component: str | None = None,
    on_budget_exceeded: Callable[..., Any] | None = None,
    **attributes: Any,
) -> Callable[[F], F]:
    """Decorate a function as a stage of ``kind``: sync, ``async def``, generator or async
    generator, function or method.

    ``name`` defaults to the function's qualified name. ``system``/``provider`` name the vector
    store or model provider, ``model`` the requested model, ``operation`` the GenAI operation
    (default ``chat`` for ``model`` stages), ``component`` overrides the fault domain its remote
    failures belong to. Any other keyword becomes a span attribute. Mistakes raise
    :class:`ConfigurationError` here, at decoration time.
    """
    if callable(kind) and not isinstance(kind, str):
        # @chainsight.traced_stage without parentheses hands the function over as the kind.
        raise ConfigurationError(
            f"@chainsight.traced_stage needs a stage kind, got the function "
            f"{getattr(kind, '__qualname__', kind)!r}; write @chainsight.traced_stage('model') "
            f"(or 'retrieval', 'prompt', ...) with parentheses"
        )
    extra = dict(attributes)
    for key, value in (
        ("system", system),
        ("provider", provider),
        ("model", model),
        ("operation", operation),
        ("component", component),
        ("on_budget_exceeded", on_budget_exceeded),
    ):
        if value is not None:
            extra[key] = value
    # Validate now, even before the function arrives.
    make_spec(kind, name if name is not None else "probe", dict(extra))

    def decorate(func: F) -> F:
        # Placed above @staticmethod/@classmethod: wrap the function, keep the descriptor.
        if isinstance(func, (staticmethod, classmethod)):
            return cast(F, type(func)(decorate(func.__func__)))
        if not callable(func):
            raise ConfigurationError(
                f"traced_stage({kind!r}) must decorate a function or method, got {func!r}"
            )
        spec = make_spec(
            kind, name or getattr(func, "__qualname__", None) or repr(func), dict(extra)
        )
        if inspect.isasyncgenfunction(func):
            return cast(F, _wrap_async_generator(func, spec))
        if inspect.isgeneratorfunction(func):
            return cast(F, _wrap_generator(func, spec))
        if inspect.iscoroutinefunction(func):
            return cast(F, _wrap_coroutine(func, spec))
        return cast(F, _wrap_function(func, spec))

    return decorate


def _wrap_function(func: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    check_budget = spec.kind == "model"

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cfg = _state.CONFIG or _state.current()
        if not cfg.enabled:
            return func(*args, **kwargs)
        begun = begin(spec, cfg)
        if begun is None:
            return func(*args, **kwargs)
        stage, ctx = begun
        if check_budget:
            refused = _usage.check_budget(stage)
            if refused is not None:
                return refuse(stage, refused, args, kwargs)
        token = otel_context.attach(ctx)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            otel_context.detach(token)
            finish(stage, exc)
            raise
        otel_context.detach(token)
        finish(stage, None)
        return result

    return _outer(func, wrapper)


def _outer(func: Callable[..., Any], traced: Callable[..., Any]) -> Callable[..., Any]:
    """The layer callers see: ``func``'s own parameters, forwarded (see ``stages.forwarding``)."""
    made = forwarding(func, traced)
    if made is not traced:
        functools.update_wrapper(made, func)
    return made


def _wrap_coroutine(func: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    check_budget = spec.kind == "model"

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        cfg = _state.CONFIG or _state.current()
        if not cfg.enabled:
            return await func(*args, **kwargs)
        begun = begin(spec, cfg)
        if begun is None:
            return await func(*args, **kwargs)
        stage, ctx = begun
        if check_budget:
            refused = _usage.check_budget(stage)
            if refused is not None:
                result = refuse(stage, refused, args, kwargs)
                return await result if inspect.isawaitable(result) else result
        token = otel_context.attach(ctx)
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            otel_context.detach(token)
            finish(stage, exc)
            raise
        otel_context.detach(token)
        finish(stage, None)
        return result

    # No forwarding layer here: an async one would add a coroutine frame that every resumption
    # of the stage passes through (measured at 1,000 concurrent requests), and a plain one would
    # no longer be a coroutine function to the frameworks that ask.
    return wrapper


def _as_generator(value: Any) -> Generator[Any, Any, Any]:
    """The degrade hook's answer for a stream: its items (or the value itself, once)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        value = (value,)
    return (item for item in value)


async def _as_async_generator(value: Any) -> AsyncGenerator[Any, Any]:
    if inspect.isawaitable(value):
        value = await value
    if hasattr(value, "__aiter__"):
        async for item in value:
            yield item
        return
    for item in _as_generator(value):
        yield item


def _close(gen: Generator[Any, Any, Any], stage: Stage, ctx: Context, last: float) -> None:
    """The consumer closed the stream early: close the user's generator in the stage's context;
    the stage is ``cancelled`` (or failed, if closing raised) and ends at its last item."""
    token = otel_context.attach(ctx)
    try:
        gen.close()
    except BaseException as exc:
        otel_context.detach(token)
        finish(stage, exc, end_at=last)
        raise
    otel_context.detach(token)
    finish(stage, GeneratorExit(), end_at=last)


async def _aclose(agen: AsyncGenerator[Any, Any], stage: Stage, ctx: Context, last: float) -> None:
    """The async twin of :func:`_close`."""
    token = otel_context.attach(ctx)
    try:
        await agen.aclose()
    except BaseException as exc:
        otel_context.detach(token)
        finish(stage, exc, end_at=last)
        raise
    otel_context.detach(token)
    finish(stage, GeneratorExit(), end_at=last)


def _wrap_generator(func: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    """A generator function driving the user's generator one step at a time.

    The wrapper is itself a generator function (so ``inspect.isgeneratorfunction`` and the
    frameworks relying on it still see one), and its body runs at the first ``next()``: that
    is when the span opens. Each step runs with the stage's context attached, so the
    generator's own code, ``finally`` included, records on its stage. Closed early or dropped
    unfinished, the stream is ``cancelled`` and ends at its last item: its real duration.
    """
    check_budget = spec.kind == "model"

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        gen = func(*args, **kwargs)
        cfg = _state.CONFIG or _state.current()
        if not cfg.enabled:
            return (yield from gen)
        begun = begin(spec, cfg)
        if begun is None:
            return (yield from gen)
        stage, ctx = begun
        if check_budget:
            refused = _usage.check_budget(stage)
            if refused is not None:
                gen.close()  # the provider is never called
                return (yield from _as_generator(refuse(stage, refused, args, kwargs)))
        sent: Any = None
        thrown: BaseException | None = None
        last = 0.0
        while True:
            token = otel_context.attach(ctx)
            try:
                item = gen.send(sent) if thrown is None else gen.throw(thrown)
            except StopIteration as stop:
                otel_context.detach(token)
                finish(stage, None)
                return stop.value
            except BaseException as exc:
                otel_context.detach(token)
                finish(stage, exc)
                raise
            otel_context.detach(token)
            thrown = None
            last = time.perf_counter()
            if stage.first_chunk is None:
                stage._first_chunk_at(last)
            try:
                sent = yield item
            except GeneratorExit:
                _close(gen, stage, ctx, last)
                raise
            except BaseException as exc:
                thrown, sent = exc, None

    return wrapper


def _wrap_async_generator(func: Callable[..., Any], spec: Spec) -> Callable[..., Any]:
    """The async twin of :func:`_wrap_generator` (``asend``/``athrow``/``aclose``)."""
    check_budget = spec.kind == "model"

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        agen = func(*args, **kwargs)
        cfg = _state.CONFIG or _state.current()
        begun = begin(spec, cfg) if cfg.enabled else None
        sent: Any = None
        thrown: BaseException | None = None
        if begun is None:
            # Off: still forward asend/athrow/aclose exactly (an async generator cannot hand
            # back the inner one the way `yield from` does for generators).
            while True:
                try:
                    item = await (agen.asend(sent) if thrown is None else agen.athrow(thrown))
                except StopAsyncIteration:
                    return
                thrown = None
                try:
                    sent = yield item
                except GeneratorExit:
                    await agen.aclose()
                    raise
                except BaseException as exc:
                    thrown, sent = exc, None
        stage, ctx = begun
        if check_budget:
            refused = _usage.check_budget(stage)
            if refused is not None:
                await agen.aclose()  # the provider is never called
                async for item in _as_async_generator(refuse(stage, refused, args, kwargs)):
                    yield item
                return
        last = 0.0
        while True:
            token = otel_context.attach(ctx)
            try:
                item = await (agen.asend(sent) if thrown is None else agen.athrow(thrown))
            except StopAsyncIteration:
                otel_context.detach(token)
                finish(stage, None)
                return
            except BaseException as exc:
                otel_context.detach(token)
                finish(stage, exc)
                raise
            otel_context.detach(token)
            thrown = None
            last = time.perf_counter()
            if stage.first_chunk is None:
                stage._first_chunk_at(last)
            try:
                sent = yield item
            except GeneratorExit:
                await _aclose(agen, stage, ctx, last)
                raise
            except BaseException as exc:
                thrown, sent = exc, None

    return wrapper
