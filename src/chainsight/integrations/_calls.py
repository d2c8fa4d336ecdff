"""One SDK call as a stage: the wrappers every integration puts around a client method.

A call either *enriches* the user's own open stage of the same kind (``with
chainsight.stage("model")`` around ``client.chat.completions.create``: the response is recorded
on that stage, no second span) or opens its own stage for the call. The SDK's exceptions pass
through unchanged; what goes wrong in here is reported (``report_internal``) and the call's
result is returned as if chainsight were not there.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Awaitable, Callable
from contextvars import Token
from typing import Any, Final, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from chainsight.config import state as _state
from chainsight.integrations._streams import STREAM_TYPES, observe
from chainsight.stages import calls
from chainsight.stages.spec import Spec, spec_for
from chainsight.stages.stage import STAGE_KEY, Stage

__all__ = ["Site", "async_method", "run_async", "run_sync", "sync_method"]


class Site(NamedTuple):
    """What one wrapped SDK method is: its stage kind and name, how to read its attributes
    from the call, and how to record its result on a stage."""

    kind: str
    name: str
    # (the SDK object the method is bound to, the call's arguments) -> stage keywords
    attributes: Callable[[Any, tuple[Any, ...], dict[str, Any]], dict[str, Any]]
    # record the (non-stream) result of a call on the SDK object on the stage
    record: Callable[[Stage, Any, Any], None]
    # record one chunk of a stream on the stage
    chunk: Callable[[Stage, Any], None]
    # where report_internal counts this site's own errors
    where: str
    # the stage keywords depend on the SDK object and the requested model alone, so the
    # stage's Spec can be cached per (object, model) instead of built from keywords per call
    per_model: bool = False
    # the call's arguments -> record_content keywords (the prompt), read only with capture on
    content: Callable[[dict[str, Any]], dict[str, Any]] | None = None


# (site name, id(SDK object), model) -> (weak reference to the object, the Spec). The weak
# reference tells a live object from a new one reusing a dead one's id, and keeps none alive.
_SPECS: dict[tuple[str, int, str | None], tuple[weakref.ref[Any], Spec]] = {}
_SPECS_LIMIT: Final = 1024


def _cached_spec(site: Site, obj: Any, args: Any, kwargs: Any) -> Spec | None:
    model = kwargs.get("model")
    key = (site.name, id(obj), model if type(model) is str else None)
    cached = _SPECS.get(key)
    if cached is not None and cached[0]() is obj:
        return cached[1]
    try:
        spec = spec_for(site.kind, site.name, site.attributes(obj, args, kwargs))
    except Exception as exc:  # a value from the SDK call chainsight cannot use: run untraced
        _state.report_internal("integration_spec", exc)
        return None
    try:
        ref = weakref.ref(obj)
    except TypeError:  # not weak-referenceable: not cached
        return spec
    if len(_SPECS) >= _SPECS_LIMIT:
        _SPECS.clear()
    _SPECS[key] = (ref, spec)
    return spec


def _open(site: Site, obj: Any, args: Any, kwargs: Any) -> tuple[Stage, Token[Context]] | None:
    """Start the call's stage (None: run untraced)."""
    if site.per_model:
        spec = _cached_spec(site, obj, args, kwargs)
        return None if spec is None else calls.open_spec(spec)
    try:
        attrs = site.attributes(obj, args, kwargs)
    except Exception as exc:
        _state.report_internal(site.where, exc)
        return None
    return calls.open_call(site.kind, site.name, attrs)


def _deliver(site: Site, stage: Stage, obj: Any, result: Any, own: bool) -> None:
    """Record ``result`` on ``stage``; a stream is observed until it ends. Never raises."""
    try:
        if type(result) in STREAM_TYPES:
            observe(result, stage, site.chunk, own=own)
            return
        site.record(stage, obj, result)
    except Exception as exc:
        _state.report_internal(site.where, exc)
    if own:
        calls.end_call(stage, None)


def _prompt(site: Site, stage: Stage, kwargs: dict[str, Any]) -> None:
    """Capture the call's prompt on ``stage`` (content capture is on). Never raises."""
    if site.content is None:
        return
    try:
        stage.record_content(**site.content(kwargs))
    except Exception as exc:
        _state.report_internal(site.where, exc)


def _enrich(site: Site) -> Stage | None:
    """The user's open stage of this site's kind, which the call then records on."""
    # current_stage() inlined: this runs on every SDK call.
    found = otel_context.get_value(STAGE_KEY)
    return found if isinstance(found, Stage) and found.spec.kind == site.kind else None


def run_sync(site: Site, call: Callable[..., Any], obj: Any, args: Any, kwargs: Any) -> Any:
    """Run ``call(obj, *args, **kwargs)`` as a stage of ``site`` (or on the user's stage).

    ``call`` is the SDK's original method and ``obj`` what it is bound to (no bound method or
    partial is made per call: the wrapper's own cost is judged against a hand-written stage).
    """
    user_stage = _enrich(site)
    if user_stage is not None:
        if user_stage.cfg.capture is not None:  # checked here: no call per SDK call when off
            _prompt(site, user_stage, kwargs)
        result = call(obj, *args, **kwargs)
        _deliver(site, user_stage, obj, result, own=False)
        return result
    opened = _open(site, obj, args, kwargs)
    if opened is None:
        return call(obj, *args, **kwargs)
    stage, token = opened
    if stage.cfg.capture is not None:
        _prompt(site, stage, kwargs)
    try:
        result = call(obj, *args, **kwargs)
    except BaseException as exc:
        calls.detach(token)
        calls.end_call(stage, exc)
        raise
    calls.detach(token)
    _deliver(site, stage, obj, result, own=True)
    return result


async def run_async(
    site: Site, call: Callable[..., Awaitable[Any]], obj: Any, args: Any, kwargs: Any
) -> Any:
    """The coroutine twin of :func:`run_sync`."""
    user_stage = _enrich(site)
    if user_stage is not None:
        if user_stage.cfg.capture is not None:  # checked here: no call per SDK call when off
            _prompt(site, user_stage, kwargs)
        result = await call(obj, *args, **kwargs)
        _deliver(site, user_stage, obj, result, own=False)
        return result
    opened = _open(site, obj, args, kwargs)
    if opened is None:
        return await call(obj, *args, **kwargs)
    stage, token = opened
    if stage.cfg.capture is not None:
        _prompt(site, stage, kwargs)
    try:
        result = await call(obj, *args, **kwargs)
    except BaseException as exc:
        calls.detach(token)
        calls.end_call(stage, exc)
        raise
    calls.detach(token)
    _deliver(site, stage, obj, result, own=True)
    return result


def sync_method(site: Site) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make the replacement of a sync SDK method ``original(self, *args, **kwargs)``."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return run_sync(site, original, self, args, kwargs)

        return method

    return wrap


def async_method(site: Site) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make the replacement of an ``async def`` SDK method."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await run_async(site, original, self, args, kwargs)

        return method

    return wrap
