"""Span export: the JSONL schema the triage reads, counted failures, bounded queue."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

import chainsight
from chainsight.export.jsonl import JsonlSpanExporter
from chainsight.export.traces import (
    CountingSpanExporter,
    DroppingBatchProcessor,
    PerProcessExporter,
    parse_exporter,
)


def test_jsonl_schema(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    chainsight.configure(exporter=f"jsonl:{path}", service="svc", release={"prompt": "a@1"})
    with (
        pytest.raises(ConnectionError),
        chainsight.request("answer", tenant="acme"),
        chainsight.stage("retrieval", system="qdrant", collection="kb"),
    ):
        raise ConnectionError("down")
    assert chainsight.shutdown(timeout=5.0)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2
    child, root = lines
    for record in lines:
        assert record["schema"] == "chainsight.span/1"
        assert len(record["trace_id"]) == 32
        assert len(record["span_id"]) == 16
        assert record["end_time_unix_nano"] >= record["start_time_unix_nano"]
        assert record["duration_seconds"] >= 0
        assert record["resource"]["service.name"] == "svc"
    assert root["parent_span_id"] is None
    assert child["parent_span_id"] == root["span_id"]
    assert child["kind"] == "CLIENT"
    assert child["status"] == {"code": "ERROR", "description": "connection"}
    assert child["attributes"]["chainsight.fault"] == "vector_store"
    assert root["attributes"]["chainsight.stage.kind"] == "request"
    assert root["attributes"]["chainsight.error.origin"] == "retrieval"
    assert child["events"][0]["name"] == "exception"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("otlp:grpc", ("otlp", "grpc")),
        ("otlp:http", ("otlp", "http")),
        ("console", ("console", "")),
        ("none", ("none", "")),
        ("jsonl:/tmp/x.jsonl", ("jsonl", "/tmp/x.jsonl")),
    ],
)
def test_parse_exporter(spec: str, expected: tuple[str, str]) -> None:
    assert parse_exporter(spec) == expected


def test_otlp_protocol_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    assert parse_exporter("otlp") == ("otlp", "grpc")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
    assert parse_exporter("otlp") == ("otlp", "http")


class _Failing(SpanExporter):
    def __init__(self, raise_: bool) -> None:
        self.raise_ = raise_

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.raise_:
            raise RuntimeError("exporter bug")
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


@pytest.mark.parametrize("raise_", [False, True])
def test_failed_exports_are_counted(raise_: bool) -> None:
    lost: list[int] = []
    exporter = CountingSpanExporter(_Failing(raise_), lost.append)
    assert exporter.export([object(), object()]) is SpanExportResult.FAILURE  # type: ignore[list-item]
    assert lost == [2]
    assert exporter.failed == 2


class _Blocked(SpanExporter):
    """An exporter that never finishes while the test holds the gate."""

    def __init__(self) -> None:
        import threading

        self.gate = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.gate.wait(10)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.gate.set()


def test_full_queue_drops_and_counts_instead_of_blocking() -> None:
    registry = CollectorRegistry()
    blocked = _Blocked()
    chainsight.configure(registry=registry)
    from chainsight.config import state as _config

    metrics = _config.current().metrics
    processor = DroppingBatchProcessor(
        CountingSpanExporter(blocked, metrics.span_export_failed),
        metrics.span_export_failed,
        max_queue_size=10,
        schedule_delay_millis=10,
        max_export_batch_size=5,
    )
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    chainsight.configure(tracer_provider=provider)
    for _ in range(100):
        with chainsight.stage("tool"):
            pass
    assert processor.dropped >= 80
    assert registry.get_sample_value(
        "chainsight_export_failures_total", {"signal": "traces"}
    ) == float(processor.dropped)
    blocked.gate.set()
    provider.shutdown()


def test_a_batch_the_exporter_retried_starts_the_cool_down_at_once() -> None:
    # A closed port: the OTLP exporter backs off and retries (~3 s) before it gives up. Once
    # one batch has failed that slowly, the next ones are not tried (nor held back seconds each).
    now = [100.0]
    calls: list[int] = []

    class Dead(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            calls.append(len(spans))
            now[0] += 3.0  # the exporter's back-off and retries
            return SpanExportResult.FAILURE

        def shutdown(self) -> None:
            pass

    lost: list[int] = []
    exporter = CountingSpanExporter(Dead(), lost.append, clock=lambda: now[0])
    batch: list[ReadableSpan] = [object(), object()]  # type: ignore[list-item]
    for _ in range(3):
        assert exporter.export(batch) is SpanExportResult.FAILURE
    assert calls == [2]  # only the first batch went to the exporter
    assert sum(lost) == 6  # every span still counted


def test_quick_failures_need_three_in_a_row_however_far_apart() -> None:
    # A collector answering 400 fails fast and is not retried: one bad batch must not stop the
    # next from going, even on a quiet service where batches are seconds apart.
    now = [100.0]
    calls: list[int] = []

    class Rejecting(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            calls.append(len(spans))
            now[0] += 0.01
            return SpanExportResult.FAILURE if len(calls) <= 2 else SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    exporter = CountingSpanExporter(Rejecting(), lambda n: None, clock=lambda: now[0])
    batch: list[ReadableSpan] = [object()]  # type: ignore[list-item]
    assert exporter.export(batch) is SpanExportResult.FAILURE
    now[0] += 10.0  # idle time between batches is not time spent failing
    assert exporter.export(batch) is SpanExportResult.FAILURE
    now[0] += 10.0
    assert exporter.export(batch) is SpanExportResult.SUCCESS
    assert len(calls) == 3


def test_dead_backend_gets_a_cool_down_and_recovers() -> None:
    calls: list[int] = []
    now = [100.0]

    class Flaky(SpanExporter):
        ok = False

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            calls.append(len(spans))
            return SpanExportResult.SUCCESS if self.ok else SpanExportResult.FAILURE

        def shutdown(self) -> None:
            pass

    inner = Flaky()
    lost: list[int] = []
    exporter = CountingSpanExporter(inner, lost.append, clock=lambda: now[0])
    batch: list[ReadableSpan] = [object()]  # type: ignore[list-item]
    for _ in range(3):
        exporter.export(batch)
    assert len(calls) == 3  # three failures in a row: cool down
    exporter.export(batch)
    exporter.export(batch)
    assert len(calls) == 3  # not tried during the cool-down, but counted as lost
    assert sum(lost) == 5
    now[0] += 1.5
    inner.ok = True
    assert exporter.export(batch) is SpanExportResult.SUCCESS
    assert len(calls) == 4
    assert exporter.exported == 1


def test_spans_ending_in_a_cool_down_are_counted_without_being_queued() -> None:
    # They would only be counted lost later; queueing them would fill the queue and keep the
    # export thread busy working through it while request threads wait for the GIL.
    from opentelemetry.sdk.trace import TracerProvider

    now = [100.0]

    class Dead(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            now[0] += 3.0  # retried, then failed: the cool-down starts
            return SpanExportResult.FAILURE

        def shutdown(self) -> None:
            pass

    lost: list[int] = []
    counting = CountingSpanExporter(Dead(), lost.append, clock=lambda: now[0])
    processor = DroppingBatchProcessor(counting, lost.append, max_export_batch_size=1)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("first"):
        pass
    assert processor.force_flush(5000)
    assert counting.cooling()
    for _ in range(10):
        with tracer.start_as_current_span("during"):
            pass
    assert processor.pending == 0  # nothing queued
    assert processor.dropped == 10
    assert sum(lost) == 11  # the failed one and the ten dropped: each counted once
    now[0] += 1.5  # the cool-down is over: spans queue again
    assert not counting.cooling()
    with tracer.start_as_current_span("after"):
        pass
    assert processor.pending in (0, 1)
    assert processor.dropped == 10
    provider.shutdown()


class _StuckWithItsLock(SpanExporter):
    """Like a sink that stopped taking bytes: export holds a lock, and shutdown wants it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.exporting = threading.Event()
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.lock:
            self.exporting.set()
            self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self.lock:
            pass


def test_the_give_up_counts_before_it_stops_a_stuck_exporter() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    stuck = _StuckWithItsLock()
    lost: list[int] = []
    counting = CountingSpanExporter(stuck, lost.append)
    processor = DroppingBatchProcessor(
        counting, lost.append, schedule_delay_millis=10, max_export_batch_size=2
    )
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for _ in range(10):
        with tracer.start_as_current_span("s"):
            pass
    assert stuck.exporting.wait(10)  # one batch of two is stuck in export, eight wait

    giving_up = threading.Thread(target=processor.abandon)
    giving_up.start()
    giving_up.join(10)  # stopping the exporter would wait for the stuck export: not done here

    assert not giving_up.is_alive()
    assert sum(lost) == 8  # counted at once; the batch in flight counts itself
    stuck.release.set()
    processor.force_flush(10_000)
    assert counting.exported == 2
    assert sum(lost) == 8  # what was counted at the give-up is not sent, nor counted again
    provider.shutdown()


def test_a_jsonl_batch_the_sink_took_in_part_counts_only_the_rest(tmp_path: Path) -> None:
    class HalfTaken(JsonlSpanExporter):
        def write(self, spans: Sequence[ReadableSpan]) -> int:
            return len(spans) // 2

    lost: list[int] = []
    exporter = CountingSpanExporter(HalfTaken(str(tmp_path / "s.jsonl")), lost.append)
    batch: list[ReadableSpan] = [object()] * 6  # type: ignore[list-item]
    assert exporter.export(batch) is SpanExportResult.FAILURE
    assert lost == [3]
    assert (exporter.exported, exporter.failed) == (3, 3)


class _Recording(SpanExporter):
    def __init__(self) -> None:
        self.batches = 0
        self.shut_down = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches += 1
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut_down = True


def test_an_otlp_http_exporter_is_built_anew_in_a_forked_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[_Recording] = []

    def build() -> _Recording:
        built.append(_Recording())
        return built[-1]

    exporter = PerProcessExporter(build)
    batch: list[ReadableSpan] = [object()]  # type: ignore[list-item]
    assert exporter.export(batch) is SpanExportResult.SUCCESS
    parent = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: parent + 1)  # now in a forked child
    assert exporter.export(batch) is SpanExportResult.SUCCESS
    assert len(built) == 2  # the child's own: the parent's connections are not shared
    assert [e.batches for e in built] == [1, 1]
    exporter.shutdown()
    assert [e.shut_down for e in built] == [False, True]  # the parent's copy is left alone


def test_a_child_that_never_exported_shuts_nothing_down(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[_Recording] = []

    def build() -> _Recording:
        built.append(_Recording())
        return built[-1]

    exporter = PerProcessExporter(build)
    parent = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: parent + 1)
    exporter.shutdown()
    assert len(built) == 1
    assert not built[0].shut_down
    batch: list[ReadableSpan] = [object()]  # type: ignore[list-item]
    assert exporter.export(batch) is SpanExportResult.FAILURE  # shut down: nothing is built
    assert len(built) == 1
