"""Per-call micro-benchmarks: the reference R, a stage written by hand, chainsight's stages.

R and every chainsight case go through the same kind of pipeline — an SDK ``TracerProvider``
with a ``BatchSpanProcessor`` feeding an exporter that drops spans — so a ratio to R compares
like with like: what chainsight adds on top of the span every user would pay for anyway.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

from opentelemetry.sdk.environment_variables import OTEL_METRIC_EXPORT_INTERVAL
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.util.types import AttributeValue
from prometheus_client import CollectorRegistry, Counter, Histogram

import chainsight
from benchmarks._chain import ChainCases
from benchmarks._harness import BenchmarkError, Case
from benchmarks._integrations import OpenAICases
from chainsight import _names as n
from chainsight.config import state as _config

__all__ = ["REFERENCE", "DroppingExporter", "MicroSuite", "Pipeline", "stage_observations"]

REFERENCE: Final = "R"
RELEASE: Final = {"model": "gpt-4o-2024-08-06", "prompt": "answer@7"}
_RELEASE_ID: Final = "model=gpt-4o-2024-08-06,prompt=answer@7"
STAGE_NAME: Final = "bench_retrieve"
SPAN_NAME: Final = "retrieval docs"

# Ten attributes, the same names and types a chainsight retrieval stage carries, so R is the span
# a careful user would write for this stage by hand.
R_ATTRIBUTES: Final[Mapping[str, AttributeValue]] = {
    n.CS_STAGE_KIND: "retrieval",
    n.CS_STAGE_NAME: STAGE_NAME,
    n.GEN_AI_OPERATION_NAME: "retrieval",
    n.DB_SYSTEM_NAME: "qdrant",
    n.DB_COLLECTION_NAME: "docs",
    n.GEN_AI_RETRIEVAL_TOP_K: 5,
    n.CS_RELEASE_ID: _RELEASE_ID,
    n.CS_RELEASE_PREFIX + "model": RELEASE["model"],
    n.CS_RELEASE_PREFIX + "prompt": RELEASE["prompt"],
    n.CS_OUTCOME: n.OUTCOME_OK,
}


class DroppingExporter(SpanExporter):
    """Counts and drops every span: export costs nothing, so what is left is the pipeline."""

    def __init__(self) -> None:
        self.count = 0
        self.last: ReadableSpan | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Count the batch, keep its last span for checks, drop the rest."""
        self.count += len(spans)
        if spans:
            self.last = spans[-1]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return True


class Pipeline:
    """An SDK tracer provider + BatchSpanProcessor + :class:`DroppingExporter`."""

    def __init__(self, sampler: Sampler | None = None, *, max_queue_size: int = 2048) -> None:
        self.exporter = DroppingExporter()
        self.provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
        self.provider.add_span_processor(
            BatchSpanProcessor(self.exporter, max_queue_size=max_queue_size)
        )

    def flush(self) -> None:
        """Export everything queued so far (for checks, never inside a timed batch)."""
        self.provider.force_flush()

    def close(self) -> None:
        """Stop the export thread."""
        self.provider.shutdown()


def stage_observations(registry: CollectorRegistry) -> float:
    """How many stage durations the registry holds (all label sets summed)."""
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == n.M_STAGE_DURATION + "_count":
                total += sample.value
    return total


def work() -> int:
    """The stage body: nothing, so only instrumentation is measured."""
    return 1


@chainsight.traced_stage("retrieval", name=STAGE_NAME, system="qdrant", collection="docs", top_k=5)
def cs_retrieve() -> int:
    """A chainsight retrieval stage, plain function."""
    return work()


@chainsight.traced_stage("retrieval", name=STAGE_NAME, system="qdrant", collection="docs", top_k=5)
async def cs_retrieve_async() -> int:
    """The same stage as a coroutine."""
    return work()


@chainsight.traced_stage("retrieval", name=STAGE_NAME, system="qdrant", collection="docs", top_k=5)
def cs_retrieve_gen() -> Iterator[int]:
    """The same stage as a one-item generator (the span ends with the stream)."""
    yield work()


@chainsight.traced_stage("model", name="bench_model", provider="openai", model="gpt-4o")
def cs_model_usage() -> int:
    """A model stage that records token usage, so its cost is computed and counted."""
    chainsight.current_stage().record_usage(input_tokens=1200, output_tokens=300)
    return work()


async def bare_async() -> int:
    """The coroutine without chainsight."""
    return work()


def bare_gen() -> Iterator[int]:
    """The generator without chainsight."""
    yield work()


class MicroSuite:
    """Builds the cases and owns what they share (pipelines, registries, an event loop)."""

    def __init__(self) -> None:
        self.sampled = Pipeline()
        self.sampled_out = Pipeline(ParentBased(TraceIdRatioBased(0.0)))
        self.registry = CollectorRegistry()
        self.loop = asyncio.new_event_loop()
        self.openai = OpenAICases()
        self._active: str | None = None
        self._profiles: dict[str, dict[str, Any]] = {
            # configure() keeps settings it is not given: each profile names otlp_metrics.
            "on": {
                "tracer_provider": self.sampled.provider,
                "enabled": True,
                "otlp_metrics": False,
            },
            "off": {
                "tracer_provider": self.sampled.provider,
                "enabled": False,
                "otlp_metrics": False,
            },
            "sampled_out": {
                "tracer_provider": self.sampled_out.provider,
                "enabled": True,
                "otlp_metrics": False,
            },
            # OTLP metrics are produced from the Prometheus registry on the bridge's own thread
            # at its interval; what this case measures is whether a call records anything twice.
            "otlp_metrics": {
                "tracer_provider": self.sampled.provider,
                "enabled": True,
                "otlp_metrics": True,
            },
        }
        tracer = self.sampled.provider.get_tracer("bench.reference")
        self._tracer = tracer
        self.chain = ChainCases(tracer)
        manual = CollectorRegistry()
        labels = ("stage", "kind", "system", "outcome")
        values = (STAGE_NAME, "retrieval", "qdrant", n.OUTCOME_OK)
        self._manual_histogram = Histogram(
            "bench_stage_duration_seconds", "d", labels, registry=manual, buckets=n.LATENCY_BUCKETS
        ).labels(*values)
        self._manual_counters = [
            Counter(f"bench_counter_{i}", "c", labels, registry=manual).labels(*values)
            for i in range(3)
        ]

    # --- configuration per case ----------------------------------------------------------
    def use(self, profile: str) -> Callable[[], None]:
        """A setup hook that switches chainsight to ``profile`` (only when it changes)."""

        def setup() -> None:
            if self._active != profile:
                settings = self._profiles[profile]
                # The OTLP-metrics case measures the request path: no export need happen
                # during the run (the interval is read once, when the bridge starts).
                saved = os.environ.get(OTEL_METRIC_EXPORT_INTERVAL)
                os.environ[OTEL_METRIC_EXPORT_INTERVAL] = "3600000"
                try:
                    chainsight.configure(registry=self.registry, release=RELEASE, **settings)
                finally:
                    if saved is None:
                        del os.environ[OTEL_METRIC_EXPORT_INTERVAL]
                    else:
                        os.environ[OTEL_METRIC_EXPORT_INTERVAL] = saved
                self._active = profile
            wants_bridge = bool(self._profiles[profile].get("otlp_metrics"))
            if (_config.current().otlp_bridge is not None) != wants_bridge:
                raise BenchmarkError(
                    f"profile {profile!r}: OTLP metrics bridge is "
                    f"{'missing' if wants_bridge else 'running'}; the case measures the wrong setup"
                )

        return setup

    def close(self) -> None:
        """Stop the export threads and the event loop."""
        self.sampled.close()
        self.sampled_out.close()
        self.loop.close()
        self.openai.close()

    # --- the operations ----------------------------------------------------------------
    def run_bare(self, loops: int) -> None:
        """A plain call of the stage body."""
        for _ in range(loops):
            work()

    def run_reference(self, loops: int) -> None:
        """R: one raw SDK span with 10 attributes around the stage body."""
        tracer = self._tracer
        attrs = R_ATTRIBUTES
        for _ in range(loops):
            with tracer.start_as_current_span(SPAN_NAME, attributes=attrs):
                work()

    def run_reference_parent(self, loops: int) -> None:
        """R inside an open parent span: what a child span costs the SDK."""
        tracer = self._tracer
        attrs = R_ATTRIBUTES
        with tracer.start_as_current_span("invoke_workflow bench_request"):
            for _ in range(loops):
                with tracer.start_as_current_span(SPAN_NAME, attributes=attrs):
                    work()

    def run_manual(self, loops: int) -> None:
        """A complete stage written plainly: R + one histogram observe + three counters."""
        tracer = self._tracer
        attrs = R_ATTRIBUTES
        hist = self._manual_histogram
        c1, c2, c3 = self._manual_counters
        for _ in range(loops):
            start = time.perf_counter()
            with tracer.start_as_current_span(SPAN_NAME, attributes=attrs):
                work()
            hist.observe(time.perf_counter() - start)
            c1.inc()
            c2.inc()
            c3.inc()

    @staticmethod
    def run_sync(loops: int) -> None:
        """chainsight's decorated function."""
        for _ in range(loops):
            cs_retrieve()

    @staticmethod
    def run_sync_parent(loops: int) -> None:
        """The decorated function inside an open request (its cost spread over the batch)."""
        with chainsight.request("bench_request", feature="bench"):
            for _ in range(loops):
                cs_retrieve()

    @staticmethod
    def run_context(loops: int) -> None:
        """chainsight's ``with stage(...)`` form (a spec-cache lookup per call)."""
        for _ in range(loops):
            with chainsight.stage(
                "retrieval", name=STAGE_NAME, system="qdrant", collection="docs", top_k=5
            ):
                work()

    @staticmethod
    def run_generator(loops: int) -> None:
        """The decorated generator, consumed to the end."""
        for _ in range(loops):
            for _item in cs_retrieve_gen():
                pass

    @staticmethod
    def run_generator_parent(loops: int) -> None:
        """The decorated generator inside an open request."""
        with chainsight.request("bench_request", feature="bench"):
            for _ in range(loops):
                for _item in cs_retrieve_gen():
                    pass

    @staticmethod
    def run_bare_generator(loops: int) -> None:
        """The generator without chainsight."""
        for _ in range(loops):
            for _item in bare_gen():
                pass

    @staticmethod
    def run_model_usage(loops: int) -> None:
        """A model stage recording usage (cost from the price table, token and cost counters)."""
        for _ in range(loops):
            cs_model_usage()

    def _async(self, loops: int, func: Callable[[], Any], parent: bool) -> None:
        async def batch() -> None:
            if parent:
                async with chainsight.request("bench_request", feature="bench"):
                    for _ in range(loops):
                        await func()
            else:
                for _ in range(loops):
                    await func()

        self.loop.run_until_complete(batch())

    def run_async(self, loops: int) -> None:
        """The decorated coroutine, awaited in a loop inside one event-loop task."""
        self._async(loops, cs_retrieve_async, parent=False)

    def run_async_parent(self, loops: int) -> None:
        """The decorated coroutine inside an open request."""
        self._async(loops, cs_retrieve_async, parent=True)

    def run_bare_async(self, loops: int) -> None:
        """The coroutine without chainsight."""
        self._async(loops, bare_async, parent=False)

    # --- checks: each case does what it claims --------------------------------------------
    def _expect(
        self, case: Case, *, spans: int, stage_obs: int, outcome: bool = False
    ) -> Callable[[], None]:
        def check() -> None:
            case.setup()
            self.sampled.flush()
            self.sampled_out.flush()
            before_spans = self.sampled.exporter.count + self.sampled_out.exporter.count
            before_obs = stage_observations(self.registry)
            case.run(1)
            self.sampled.flush()
            self.sampled_out.flush()
            got_spans = self.sampled.exporter.count + self.sampled_out.exporter.count - before_spans
            got_obs = stage_observations(self.registry) - before_obs
            if (got_spans, got_obs) != (spans, stage_obs):
                raise BenchmarkError(
                    f"case {case.name!r}: one run exported {got_spans} span(s) and recorded "
                    f"{got_obs:g} stage duration(s); expected {spans} and {stage_obs}. The "
                    "benchmark would time something else than it claims; fix the case."
                )
            last = self.sampled.exporter.last
            if outcome and (last is None or (last.attributes or {}).get(n.CS_OUTCOME) != "ok"):
                raise BenchmarkError(
                    f"case {case.name!r}: the last exported span has no "
                    f"{n.CS_OUTCOME}='ok' attribute (got {last!r}); chainsight did not finish it"
                )

        return check

    def cases(self) -> list[Case]:
        """Every micro case, each with its setup and check."""
        on, off, out = self.use("on"), self.use("off"), self.use("sampled_out")
        otlp = self.use("otlp_metrics")
        table: list[tuple[str, str, Callable[[int], None], Callable[[], None], int, int]] = [
            # name, description, run, setup, spans per run, stage observations per run
            ("bare_call", "plain function call (the stage body)", self.run_bare, on, 0, 0),
            (REFERENCE, "raw SDK span, 10 attributes, BSP, dropping exporter",
             self.run_reference, on, 1, 0),
            ("R_parent", "R inside an open parent span", self.run_reference_parent, on, 2, 0),
            ("manual_stage", "R + histogram observe + 3 counter incs, by hand",
             self.run_manual, on, 1, 0),
            ("cs_sync", "@traced_stage function", self.run_sync, on, 1, 1),
            ("cs_sync_parent", "@traced_stage function inside request()",
             self.run_sync_parent, on, 2, 1),
            ("cs_context", "with stage(...) block", self.run_context, on, 1, 1),
            ("cs_async", "@traced_stage coroutine (awaited)", self.run_async, on, 1, 1),
            ("cs_async_parent", "@traced_stage coroutine inside request()",
             self.run_async_parent, on, 2, 1),
            ("bare_async", "plain coroutine (awaited)", self.run_bare_async, on, 0, 0),
            ("cs_generator", "@traced_stage generator (1 item)", self.run_generator, on, 1, 1),
            ("cs_generator_parent", "@traced_stage generator inside request()",
             self.run_generator_parent, on, 2, 1),
            ("bare_generator", "plain generator (1 item)", self.run_bare_generator, on, 0, 0),
            ("cs_disabled", "@traced_stage function, enabled=False", self.run_sync, off, 0, 0),
            ("cs_sampled_out", "@traced_stage function, sample ratio 0 (metrics only)",
             self.run_sync, out, 0, 1),
            ("cs_model_usage", "model stage + record_usage (cost, token counters)",
             self.run_model_usage, on, 1, 1),
            ("cs_otlp_metrics", "@traced_stage function, OTLP metrics on",
             self.run_sync, otlp, 1, 1),
            # The integrations: a real openai client over an in-process transport.
            ("openai_call", "openai chat.completions.create, no chainsight (MockTransport)",
             self.openai.run_bare, self.openai.setup(on, False), 0, 0),
            ("cs_openai_by_hand", "openai call in stage('model') + record_response",
             self.openai.run_by_hand, self.openai.setup(on, False), 1, 1),
            ("cs_openai_integration", "openai call, chainsight.instrument('openai')",
             self.openai.run_integration, self.openai.setup(on, True), 1, 1),
            ("cs_openai_stub_by_hand", "stage('model') + record_response of a parsed response",
             self.openai.run_stub_by_hand, on, 1, 1),
            ("cs_openai_stub_integration", "the integration's wrapper, same parsed response",
             self.openai.run_stub_integration, on, 1, 1),
        ]  # fmt: skip
        # The request-level cases: a request alone, the six-stage request and its raw twins.
        table += [
            (name, what, run, on, spans, obs) for name, what, run, spans, obs in self.chain.rows()
        ]
        cases: list[Case] = []
        for name, description, run, setup, spans, obs in table:
            case = Case(name, description, run, setup)
            case.check = self._expect(
                case, spans=spans, stage_obs=obs, outcome=spans > 0 and name.startswith("cs_")
            )
            cases.append(case)
        return cases
