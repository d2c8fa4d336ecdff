"""The decoration-time forwarding layer: every signature shape reaches the function unchanged,
on and off, and the cheap off path is really taken."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import chainsight
from chainsight.stages.forwarding import _parameters, forwarding

_SHARED: list[int] = []


def _all_kinds(a: int, /, b: int, c: int = 3, *rest: int, d: int, e: int = 5, **kw: int) -> Any:
    return (a, b, c, rest, d, e, kw)


def _defaults(x: int = 1, items: list[int] = _SHARED) -> Any:
    return x, items


def _positional_only(a: int, b: int = 2, /) -> Any:
    return a, b


def _keyword_only(*, k: str) -> Any:
    return k


_CALLS: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
    (_all_kinds, (1, 2), {"d": 4}),
    (_all_kinds, (1, 2, 30, 40, 50), {"d": 4, "e": 6, "z": 7}),
    (_all_kinds, (1,), {"b": 2, "d": 4}),
    (_defaults, (), {}),
    (_defaults, (9,), {"items": [1]}),
    (_positional_only, (1,), {}),
    (_positional_only, (1, 5), {}),
    (_keyword_only, (), {"k": "v"}),
]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    found = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(found))
    chainsight.configure(tracer_provider=provider, registry=CollectorRegistry())
    return found


@pytest.mark.parametrize(("func", "args", "kwargs"), _CALLS)
@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_every_signature_shape_is_forwarded_as_given(
    exporter: InMemorySpanExporter,
    func: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    enabled: bool,
) -> None:
    chainsight.configure(enabled=enabled)
    traced = chainsight.traced_stage("tool")(func)
    assert _parameters(func) is not None  # the exact-signature layer, not the generic one
    assert traced(*args, **kwargs) == func(*args, **kwargs)
    assert inspect.signature(traced) == inspect.signature(func)
    assert traced.__name__ == func.__name__
    assert traced.__wrapped__ is func
    assert len(exporter.get_finished_spans()) == (1 if enabled else 0)


def test_a_default_reaches_the_function_as_the_same_object(exporter: InMemorySpanExporter) -> None:
    chainsight.configure(enabled=False)
    traced = chainsight.traced_stage("tool")(_defaults)
    assert traced()[1] is _SHARED


@pytest.mark.parametrize(("args", "kwargs"), [((), {}), ((1, 2, 3), {}), ((), {"d": 4, "e": 5})])
def test_wrong_arguments_fail_as_the_function_fails(
    exporter: InMemorySpanExporter, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    for enabled in (True, False):
        chainsight.configure(enabled=enabled)
        traced = chainsight.traced_stage("tool")(_all_kinds)
        with pytest.raises(TypeError):
            traced(*args, **kwargs)


def test_a_coroutine_stays_a_coroutine_function_on_and_off(exporter: InMemorySpanExporter) -> None:
    async def fetch(x: int, *, y: int = 2) -> int:
        await asyncio.sleep(0)
        return x + y

    traced = chainsight.traced_stage("retrieval")(fetch)
    assert inspect.iscoroutinefunction(traced)
    for enabled in (True, False):
        chainsight.configure(enabled=enabled)
        assert asyncio.run(traced(1, y=5)) == 6
    assert len(exporter.get_finished_spans()) == 1


def test_methods_and_descriptors_keep_working(exporter: InMemorySpanExporter) -> None:
    class Store:
        def __init__(self) -> None:
            self.n = 1

        @chainsight.traced_stage("retrieval")
        def get(self, k: int = 1) -> int:
            return self.n + k

        @chainsight.traced_stage("retrieval")
        @staticmethod
        def plain(k: int) -> int:
            return k

    for enabled in (True, False):
        chainsight.configure(enabled=enabled)
        assert Store().get() == 2
        assert Store().get(k=5) == 6
        assert Store.plain(3) == 3


def test_parameter_names_of_the_layer_itself_fall_back_to_the_generic_wrapper() -> None:
    def clash(_cs_func: int) -> int:
        return _cs_func

    def traced(*args: Any, **kwargs: Any) -> Any:
        return "traced"

    assert forwarding(clash, traced) is traced
    assert forwarding(len, traced) is not None  # a builtin: copied or generic


def test_off_calls_the_function_without_the_traced_wrapper(
    exporter: InMemorySpanExporter,
) -> None:
    calls: list[str] = []

    def body(x: int) -> int:
        return x

    def traced(*args: Any, **kwargs: Any) -> Any:
        calls.append("traced")
        return body(*args, **kwargs)

    layer = forwarding(body, traced)
    chainsight.configure(enabled=False)
    assert layer(3) == 3
    assert calls == []
    chainsight.configure(enabled=True)
    assert layer(4) == 4
    assert calls == ["traced"]
