"""Test helpers for code instrumented with chainsight (a pytest plugin).

Installed with chainsight and registered through the ``pytest11`` entry point, so the
``chainsight_capture`` fixture is available in any test suite::

    def test_answer(chainsight_capture):
        answer_ticket("where is my order?")
        model = chainsight_capture.stage(kind="model")
        assert model.outcome == "ok"
        assert model.attributes["gen_ai.usage.output_tokens"] > 0

The fixture configures chainsight with in-memory span export and a fresh Prometheus registry,
and resets it afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from chainsight import _names as n
from chainsight.config import configure as _config

__all__ = ["Capture", "CapturedStage", "capture"]


@dataclass(frozen=True)
class CapturedStage:
    """One finished stage (or request) span, with its chainsight facts read out."""

    span: ReadableSpan

    @property
    def name(self) -> str:
        """The stage name (``chainsight.stage.name``)."""
        return str(self.attributes.get(n.CS_STAGE_NAME, ""))

    @property
    def kind(self) -> str:
        """The stage kind; ``request`` for a request."""
        return str(self.attributes.get(n.CS_STAGE_KIND, ""))

    @property
    def span_name(self) -> str:
        """The span name, e.g. ``chat gpt-4o``."""
        return self.span.name

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The span attributes."""
        return self.span.attributes or {}

    @property
    def outcome(self) -> str | None:
        """``ok``, ``error``, ``degraded``, ``cancelled`` or ``rejected``."""
        value = self.attributes.get(n.CS_OUTCOME)
        return None if value is None else str(value)

    @property
    def fault(self) -> str | None:
        """The fault domain (``app``, ``model``, ``vector_store``, ``provider``) or None."""
        value = self.attributes.get(n.CS_FAULT)
        return None if value is None else str(value)

    @property
    def error_type(self) -> str | None:
        """The ``error.type`` attribute, or None."""
        value = self.attributes.get(n.ERROR_TYPE)
        return None if value is None else str(value)

    @property
    def trace_id(self) -> int:
        """The span's trace id."""
        ctx = self.span.get_span_context()
        return ctx.trace_id if ctx is not None else 0

    @property
    def span_id(self) -> int:
        """The span's id."""
        ctx = self.span.get_span_context()
        return ctx.span_id if ctx is not None else 0

    @property
    def parent_id(self) -> int | None:
        """The parent span's id, or None for a root span."""
        return self.span.parent.span_id if self.span.parent is not None else None

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return ((self.span.end_time or 0) - (self.span.start_time or 0)) / 1e9

    def event(self, name: str) -> Mapping[str, Any] | None:
        """The attributes of the first event called ``name``, or None."""
        for event in self.span.events:
            if event.name == name:
                return event.attributes or {}
        return None


class Capture:
    """What the instrumented code produced: finished spans/stages and the metric registry."""

    def __init__(self, exporter: InMemorySpanExporter, registry: CollectorRegistry) -> None:
        self.exporter = exporter
        self.registry = registry

    @property
    def spans(self) -> list[ReadableSpan]:
        """Finished spans, in the order they ended."""
        return list(self.exporter.get_finished_spans())

    @property
    def stages(self) -> list[CapturedStage]:
        """Finished stages and requests, in the order they ended."""
        return [CapturedStage(s) for s in self.spans]

    def find(self, *, kind: str | None = None, name: str | None = None) -> list[CapturedStage]:
        """Every finished stage matching ``kind`` and/or ``name``."""
        return [
            s
            for s in self.stages
            if (kind is None or s.kind == kind) and (name is None or s.name == name)
        ]

    def stage(self, *, kind: str | None = None, name: str | None = None) -> CapturedStage:
        """The one finished stage matching; AssertionError if none or several match."""
        found = self.find(kind=kind, name=name)
        if len(found) != 1:
            seen = [(s.kind, s.name) for s in self.stages]
            raise AssertionError(
                f"expected one stage with kind={kind!r} name={name!r}, found {len(found)}; "
                f"finished stages: {seen}"
            )
        return found[0]

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """A sample from the registry, e.g. ``metric("chainsight_requests_total", {"outcome":
        "error"})``: the sum over every series whose labels include ``labels``, or None when
        no series matches."""
        wanted = dict(labels or {})
        exact = self.registry.get_sample_value(name, wanted)
        if exact is not None:
            return exact
        total: float | None = None
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in wanted.items()
                ):
                    total = (total or 0.0) + sample.value
        return total

    def clear(self) -> None:
        """Forget the spans captured so far."""
        self.exporter.clear()


class _InMemoryExporter(InMemorySpanExporter):
    """Keeps spans across ``configure()`` calls that replace the tracer provider."""

    def shutdown(self) -> None:
        """Do nothing: the capture outlives any one provider."""


def capture(**settings: Any) -> Capture:
    """Configure chainsight for a test: in-memory spans, a fresh registry; returns a Capture.

    Extra keyword arguments go to ``configure()``. Call ``chainsight.reset()`` when done (the
    fixture does).
    """
    exporter = _InMemoryExporter()
    registry = CollectorRegistry()
    settings.setdefault("service", "test")
    _config.configure(registry=registry, exporter=exporter, **settings)
    return Capture(exporter, registry)


def _capture_fixture() -> Iterator[Capture]:
    """chainsight configured with in-memory span export and a fresh Prometheus registry."""
    _config.reset()
    try:
        yield capture()
    finally:
        _config.reset()


try:  # capture() works without pytest; the fixture exists where pytest does
    import pytest
except ImportError:  # pragma: no cover - exercised only where pytest is absent
    pass
else:
    chainsight_capture = pytest.fixture(name="chainsight_capture")(_capture_fixture)
