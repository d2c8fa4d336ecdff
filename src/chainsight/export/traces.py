"""Span export: OTLP, console, JSONL and none; counted drops; the tracer provider we own.

Spans always leave through a batch processor, so no export work happens on the request path.
A bounded queue sits in front of it: when the backend is down and the queue is full, spans are
dropped and counted in ``chainsight_export_failures_total{signal="traces"}``, never blocked on.
The JSONL exporter itself is in ``export.jsonl``; the OTLP encoder in ``export.otlp_encode``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.util.types import Attributes

from chainsight import _names as n
from chainsight.errors import ConfigurationError
from chainsight.export import jsonl
from chainsight.export.jsonl import JsonlSpanExporter
from chainsight.export.otlp_encode import encoder_setting

__all__ = [
    "CountingSpanExporter",
    "DroppingBatchProcessor",
    "PerProcessExporter",
    "after_fork_in_child",
    "build_tracer_provider",
    "default_exporter_spec",
    "parse_exporter",
]

QUEUE_SIZE: Final = 4096
# Smaller than the SDK's 512: encoding holds the GIL on the export thread, and request threads
# wait for it. With the SDK's encoder (~35 us a span) a 512-span batch is one ~17 ms hold, and
# 64-span holds cut a 5 ms request's p99 under a healthy collector from ~15 ms to ~11 ms. Ours
# (~8 us a span) holds ~0.5 ms per 64; 256 would save ~6 us of CPU a span in HTTP requests but
# hold as long as the SDK's encoder did at 64 (docs/performance.md, "The export encoder").
BATCH_SIZE: Final = 64
SCHEDULE_DELAY_MS: Final = 2000
EXPORT_TIMEOUT_S: Final = 5.0
COOL_DOWN_AFTER: Final = 3
# ...or after one batch that took this long to fail: the OTLP exporter only spends that long
# when it retried (a closed port fails after ~3 s of back-off) or timed out, so the backend has
# already shown it is down, and more such batches would hold spans (and shutdown) back for
# seconds each. A quick rejection (an HTTP 400) is not retried and stays under it.
COOL_DOWN_AFTER_S: Final = 1.0
COOL_DOWN_S: Final = 1.0
MAX_COOL_DOWN_S: Final = 30.0
# Between batches counted lost in a cool-down: lets request threads take the GIL while the
# export thread works through a full queue, instead of waiting out a tight loop.
COOLED_BATCH_PAUSE_S: Final = 0.001

FailureCallback = Callable[[int], None]

# What owns a lock here (processors, counting exporters), renewed in a forked child by
# after_fork_in_child(); held weakly, so a replaced pipeline is not kept alive for it.
_renewed_after_fork: weakref.WeakSet[CountingSpanExporter | DroppingBatchProcessor] = (
    weakref.WeakSet()
)


def batch_settings() -> tuple[int, int, int]:
    """Queue size, schedule delay (ms) and batch size: ours, or the standard ``OTEL_BSP_*``.

    Read when ``configure()`` validates, so a bad value is refused there with its name.
    """
    values = []
    for name, default in (
        (n.ENV_BSP_MAX_QUEUE_SIZE, QUEUE_SIZE),
        (n.ENV_BSP_SCHEDULE_DELAY, SCHEDULE_DELAY_MS),
        (n.ENV_BSP_MAX_EXPORT_BATCH_SIZE, BATCH_SIZE),
    ):
        raw = os.environ.get(name, "").strip()
        if not raw:
            values.append(default)
            continue
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value <= 0:
            raise ConfigurationError(
                f"{name}={raw!r} is not a positive whole number; unset it for chainsight's "
                f"default ({default})"
            )
        values.append(value)
    queue, delay, batch = values
    if batch > queue:
        raise ConfigurationError(
            f"{n.ENV_BSP_MAX_EXPORT_BATCH_SIZE}={batch} is larger than the queue "
            f"({n.ENV_BSP_MAX_QUEUE_SIZE}={queue}); make the batch at most the queue size"
        )
    return queue, delay, batch


def default_exporter_spec() -> str:
    """OTLP when an OTLP endpoint is configured in the environment, else none."""
    if os.environ.get(n.ENV_OTEL_TRACES_ENDPOINT) or os.environ.get(n.ENV_OTEL_ENDPOINT):
        return "otlp"
    return os.environ.get(n.ENV_EXPORTER) or "none"


def parse_exporter(spec: object) -> tuple[str, str]:
    """Validate an exporter spec; return ``(kind, argument)``.

    Accepted: ``"otlp"`` (protocol from ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``, default
    HTTP/protobuf), ``"otlp:http"``, ``"otlp:grpc"``, ``"console"``, ``"jsonl:PATH"``, ``"none"``.
    """
    if not isinstance(spec, str):
        raise ConfigurationError(
            f"exporter must be a string, got {spec!r} ({type(spec).__name__}); use one of "
            "'otlp', 'otlp:http', 'otlp:grpc', 'console', 'jsonl:PATH', 'none'"
        )
    kind, _, arg = spec.partition(":")
    if kind == "otlp" and arg in ("", "http", "grpc"):
        if not arg:
            proto = os.environ.get(n.ENV_OTEL_TRACES_PROTOCOL) or os.environ.get(
                n.ENV_OTEL_PROTOCOL, "http/protobuf"
            )
            arg = "grpc" if proto.strip().lower() == "grpc" else "http"
        return kind, arg
    if kind in ("console", "none") and not arg:
        return kind, ""
    if kind == "jsonl":
        if not arg:
            raise ConfigurationError(
                f"exporter {spec!r} names no file; write it as 'jsonl:/path/to/spans.jsonl'"
            )
        return kind, arg
    raise ConfigurationError(
        f"unknown exporter {spec!r}; use one of 'otlp', 'otlp:http', 'otlp:grpc', 'console', "
        "'jsonl:PATH', 'none'"
    )


def _otlp_exporter(protocol: str) -> SpanExporter:
    # Imported here: each protocol pulls in its own transport stack (requests or grpcio).
    encoder = encoder_setting()
    if protocol == "grpc":
        if encoder == "sdk":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter as GrpcExporter,
            )
        else:
            from chainsight.export.otlp_grpc import (  # noqa: PLC0415
                FastGrpcOTLPSpanExporter as GrpcExporter,
            )

        # gRPC has its own rules for fork() (GRPC_ENABLE_FORK_SUPPORT); see docs/operations.md.
        return GrpcExporter(timeout=EXPORT_TIMEOUT_S)
    if encoder == "sdk":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as HttpExporter,
        )
    else:  # the same requests for a fraction of the CPU: export/otlp_encode.py
        from chainsight.export.otlp_http import (  # noqa: PLC0415
            FastOTLPSpanExporter as HttpExporter,
        )

    return PerProcessExporter(lambda: HttpExporter(timeout=EXPORT_TIMEOUT_S))


class PerProcessExporter(SpanExporter):
    """An exporter built anew, from the same settings, in a forked child that exports.

    The OTLP/HTTP exporter keeps a pool of kept-alive connections: in a forked child a pooled
    socket is the parent's too (the two processes' requests and answers would mix on one
    connection), and a lock of the pool that the parent's export thread held at fork time
    stays held for ever. The child neither uses nor shuts down its copy of the parent's
    exporter; the first export in the child builds its own.
    """

    def __init__(self, build: Callable[[], SpanExporter]) -> None:
        self._build = build
        self._pid = os.getpid()
        self._current: SpanExporter | None = build()
        self._shut_down = False

    def _here(self) -> SpanExporter | None:
        """This process's exporter; built on first use in a forked child."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._current = None if self._shut_down else self._build()
        return self._current

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export through this process's own exporter."""
        exporter = None if self._shut_down else self._here()
        if exporter is None:
            return SpanExportResult.FAILURE
        return exporter.export(spans)

    def shutdown(self) -> None:
        """Shut this process's exporter down (a child's copy of the parent's is left alone)."""
        self._shut_down = True
        if self._pid == os.getpid() and self._current is not None:
            self._current.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush this process's exporter, if it has one yet."""
        if self._pid != os.getpid() or self._current is None:
            return True
        return self._current.force_flush(timeout_millis)


def make_exporter(kind: str, arg: str) -> SpanExporter | None:
    """Build the span exporter for a parsed spec; ``None`` for ``none``."""
    if kind == "otlp":
        return _otlp_exporter(arg)
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "jsonl":
        return JsonlSpanExporter(arg)
    return None


class CountingSpanExporter(SpanExporter):
    """Wraps an exporter: counts spans it failed to export, and what left the queue."""

    def __init__(
        self,
        inner: SpanExporter,
        on_failure: FailureCallback,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self._on_failure = on_failure
        self._clock = clock
        self.exported = 0
        self.failed = 0
        self.on_batch_done: Callable[[int], None] | None = None
        self._consecutive_failures = 0
        self._cool_until = 0.0
        # Held for bookkeeping only, never across the inner export: the give-up takes it.
        self._lock = threading.Lock()
        self._abandoned = False
        self._abandoned_budget = 0
        self._in_flight = 0
        self._stopped = False
        _renewed_after_fork.add(self)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export through the inner exporter; every span not exported is counted.

        After ``COOL_DOWN_AFTER`` failed batches in a row, or one batch that took
        ``COOL_DOWN_AFTER_S`` or more to fail, the backend is left alone for a cool-down
        (doubling up to ``MAX_COOL_DOWN_S``): batches in that time are counted as lost at once
        instead of being encoded and retried against a dead backend, which would take CPU from
        the application. Once abandoned (see :meth:`abandon`), nothing is sent.
        """
        count = len(spans)
        with self._lock:
            if self._abandoned:
                # Already counted as lost when shutdown gave up, up to that many spans; any
                # that were queued after that moment are counted now.
                uncounted = min(count, self._abandoned_budget)
                self._abandoned_budget -= uncounted
                extra = count - uncounted
                self.failed += extra
                if extra:
                    self._on_failure(extra)
                return SpanExportResult.FAILURE
            self._in_flight = count
        sent = 0
        try:
            sent = self._export(spans)
        finally:
            self.exported += sent
            self.failed += count - sent
            if sent < count:
                self._on_failure(count - sent)
            with self._lock:
                # Both at once for the give-up: this batch is either in flight or done.
                self._in_flight = 0
                if self.on_batch_done is not None:
                    self.on_batch_done(count)
        return SpanExportResult.SUCCESS if sent == count else SpanExportResult.FAILURE

    def _export(self, spans: Sequence[ReadableSpan]) -> int:
        """How many of ``spans`` the inner exporter took."""
        started = self._clock()
        if self._cool_until and started < self._cool_until:
            time.sleep(COOLED_BATCH_PAUSE_S)
            return 0
        try:
            if isinstance(self.inner, JsonlSpanExporter):
                # A stuck sink may take part of a batch: only the rest is lost.
                sent = self.inner.write(spans)
            else:
                ok = self.inner.export(spans) is SpanExportResult.SUCCESS
                sent = len(spans) if ok else 0
        except Exception:  # the exporter's own bug must not kill the export thread
            sent = 0
        if sent == len(spans):
            self._consecutive_failures = 0
            self._cool_until = 0.0
        else:
            self._consecutive_failures += 1
            took = self._clock() - started
            if self._consecutive_failures >= COOL_DOWN_AFTER or took >= COOL_DOWN_AFTER_S:
                steps = max(0, self._consecutive_failures - COOL_DOWN_AFTER)
                pause = min(MAX_COOL_DOWN_S, COOL_DOWN_S * 2.0 ** min(steps, 10))
                self._cool_until = self._clock() + pause
        return sent

    def cooling(self) -> bool:
        """True during a cool-down: a span queued now would only be counted lost later."""
        until = self._cool_until
        return bool(until) and self._clock() < until

    def abandon(self, pending: Callable[[], int]) -> int:
        """Give up: send nothing more; return how many waiting spans are now lost.

        Takes only the bookkeeping lock, never one the inner exporter holds, so a stuck export
        cannot hold it. The batch being sent right now is not among the lost: it counts itself
        when it returns (received or failed), so every span is received or counted exactly
        once. :meth:`stop` then cuts that batch short.
        """
        with self._lock:
            if self._abandoned:
                return 0
            self._abandoned = True
            lost = max(0, pending() - self._in_flight)
            self._abandoned_budget = lost
        return lost

    def stop(self) -> None:
        """After :meth:`abandon`: shut the inner exporter down, on a thread of its own.

        That stops the OTLP exporter's retry back-off and a JSONL write waiting on a full sink,
        so the batch in flight returns and counts itself. An exporter's shutdown may wait for
        the very export that is stuck, so no caller waits for it.
        """
        with self._lock:  # the first give-up stops it; a second (shutdown's own) does not
            if self._stopped:
                return
            self._stopped = True
        threading.Thread(target=self._stop_inner, name="chainsight-abandon", daemon=True).start()

    def _stop_inner(self) -> None:
        with contextlib.suppress(Exception):
            self.inner.shutdown()

    def after_fork_in_child(self) -> None:
        """In a forked child: a fresh lock; the parent's batch in flight and give-up are its own."""
        self._lock = threading.Lock()
        self._in_flight = 0
        self._abandoned_budget = 0

    def shutdown(self) -> None:
        """Shut the inner exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the inner exporter."""
        return self.inner.force_flush(timeout_millis)


class DroppingBatchProcessor(SpanProcessor):
    """A batch processor behind a bounded, counted queue.

    The SDK's own queue drops silently (one log line per 20 s); this one knows how many spans are
    waiting and drops — counting each — before the SDK's queue would.
    """

    def __init__(
        self,
        exporter: CountingSpanExporter,
        on_drop: FailureCallback,
        *,
        max_queue_size: int = QUEUE_SIZE,
        schedule_delay_millis: int = SCHEDULE_DELAY_MS,
        max_export_batch_size: int = BATCH_SIZE,
    ) -> None:
        self._exporter = exporter
        self._limit = max_queue_size
        self._on_drop = on_drop
        # Counted under a lock: shutdown's give-up counts what waits from these, exactly.
        self._count_lock = threading.Lock()
        self._queued = 0
        self._done = 0
        self._closed = False
        self.dropped = 0
        exporter.on_batch_done = self._batch_done
        # The SDK's processor renews its own lock, queue and thread in a forked child.
        self._inner = BatchSpanProcessor(
            exporter,
            max_queue_size=max_queue_size + max_export_batch_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=max_export_batch_size,
            export_timeout_millis=EXPORT_TIMEOUT_S * 1000,
        )
        _renewed_after_fork.add(self)

    def abandon(self) -> int:
        """Stop exporting (shutdown gave up): count every span still waiting as lost.

        Counted first, then the exporter is stopped: stopping may wait on the stuck export, and
        a process that exits meanwhile must not have lost the count.
        """
        self._closed = True
        lost = self._exporter.abandon(lambda: self.pending)
        if lost:
            self.dropped += lost
            self._on_drop(lost)
        self._exporter.stop()
        return lost

    def after_fork_in_child(self) -> None:
        """The SDK empties its queue in a forked child; our count of what waits follows."""
        self._count_lock = threading.Lock()
        self._queued = 0
        self._done = 0

    def _batch_done(self, count: int) -> None:
        with self._count_lock:
            self._done += count

    @property
    def pending(self) -> int:
        """Spans handed to the batch processor and not yet exported or failed."""
        return self._queued - self._done

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do at start."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue the span for export, or drop and count it when the queue is full."""
        if not span.context or not span.context.trace_flags.sampled:
            return
        # After shutdown the SDK would drop the span silently; a stage that outlived its
        # provider (a configure() mid-request) is counted instead. In a cool-down the span is
        # counted lost here, so the queue stays short and the export thread has nothing to churn.
        cooling = self._exporter.cooling()
        with self._count_lock:
            drop = self._closed or cooling or self._queued - self._done >= self._limit
            if drop:
                self.dropped += 1
            else:
                self._queued += 1
        if drop:
            self._on_drop(1)
            return
        self._inner.on_end(span)

    def shutdown(self) -> None:
        """Shut the batch processor down (bounded by the caller, see ``shutdown()``)."""
        self._closed = True
        self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush what is queued."""
        return self._inner.force_flush(timeout_millis)


class SwitchableSampler(Sampler):
    """Parent-based ratio sampling whose ratio ``configure()`` can change in place.

    Changing the ratio then needs no new TracerProvider, so nothing is retired (and no queue
    of spans is left behind) when only the sampling changes.
    """

    def __init__(self, ratio: float, *, exporting: bool = True) -> None:
        # With nowhere to send spans, record none: a span costs as much recorded and dropped
        # as exported, and exemplars would link to traces that do not exist.
        self._exporting = exporting
        self.ratio = ratio if exporting else 0.0
        self._delegate: Sampler = ParentBased(TraceIdRatioBased(self.ratio))

    def set_ratio(self, ratio: float) -> None:
        """Use ``ratio`` for spans started from now on."""
        if self._exporting and ratio != self.ratio:
            self._delegate = ParentBased(TraceIdRatioBased(ratio))
            self.ratio = ratio

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: trace.SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        """Delegate to the current parent-based ratio sampler."""
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """Describe the sampler."""
        return f"chainsight({self._delegate.get_description()})"


def build_tracer_provider(
    *,
    resource: Resource,
    sample_ratio: float,
    exporter: SpanExporter | None,
    on_failure: FailureCallback,
    synchronous: bool = False,
    batching: tuple[int, int, int] | None = None,
) -> tuple[TracerProvider, DroppingBatchProcessor | None, SwitchableSampler]:
    """A TracerProvider owned by chainsight: ratio sampling under a parent-based sampler.

    ``batching`` is (queue size, schedule delay in ms, batch size), see :func:`batch_settings`.
    """
    sampler = SwitchableSampler(sample_ratio, exporting=exporter is not None)
    provider = TracerProvider(
        sampler=sampler,
        resource=resource,
        shutdown_on_exit=False,  # our own exit hook bounds the time shutdown may take
    )
    processor: DroppingBatchProcessor | None = None
    if exporter is not None:
        counting = CountingSpanExporter(exporter, on_failure)
        if synchronous:
            provider.add_span_processor(SimpleSpanProcessor(counting))
        else:
            queue, delay, batch = batching or (QUEUE_SIZE, SCHEDULE_DELAY_MS, BATCH_SIZE)
            processor = DroppingBatchProcessor(
                counting,
                on_failure,
                max_queue_size=queue,
                schedule_delay_millis=delay,
                max_export_batch_size=batch,
            )
            provider.add_span_processor(processor)
    return provider, processor, sampler


def after_fork_in_child() -> None:
    """Renew, in a forked child, every lock of this process's span export (chainsight's hook).

    Threads do not survive ``fork()``: a lock the parent's export thread held at that moment
    (a JSONL exporter holds one for a whole batch) would stay held for ever in the child.
    """
    for owner in list(_renewed_after_fork):
        owner.after_fork_in_child()
    jsonl.after_fork_in_child()
