"""What a whole request costs: a request alone, the six-stage AI request, a model stage with usage,
each against the same work done with raw OpenTelemetry spans (and by hand with metrics).

The six-stage request is the one users pay for: ``request`` + retrieval + rerank + prompt +
model (``record_usage``: cost and token counters) + validation (``record_validation``). Its raw
twin opens the same six spans, each with 10 attributes (the model span gets its three usage
attributes at the end); the hand-written twin adds what chainsight records as metrics, with
prometheus-client children cached as a careful user would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Final

from opentelemetry.trace import Tracer
from opentelemetry.util.types import AttributeValue
from prometheus_client import CollectorRegistry, Counter, Histogram

import chainsight
from chainsight import _names as n

__all__ = ["ChainCases", "Row"]

#: name, description, run, spans per run, chainsight stage durations per run
Row = tuple[str, str, Callable[[int], None], int, int]

# The price of gpt-4o per million tokens (input, output), as the hand-written stage looks it up.
_PRICES: Final = {"gpt-4o": (2.5, 10.0)}
_USAGE: Final = (1200, 300)


def _body() -> int:
    return 1


@chainsight.traced_stage("retrieval", name="chain_retrieve", system="qdrant", collection="docs")
def _retrieve() -> int:
    return _body()


@chainsight.traced_stage("rerank", name="chain_rerank", provider="cohere", model="rerank-v3.5")
def _rerank() -> int:
    return _body()


@chainsight.traced_stage("prompt", name="chain_prompt", prompt_name="answer", prompt_version="7")
def _prompt() -> int:
    return _body()


@chainsight.traced_stage("model", name="chain_model", provider="openai", model="gpt-4o")
def _model() -> int:
    chainsight.current_stage().record_usage(input_tokens=_USAGE[0], output_tokens=_USAGE[1])
    return _body()


@chainsight.traced_stage("validation", name="chain_validate", validator="schema")
def _validate() -> int:
    chainsight.current_stage().record_validation(passed=True)
    return _body()


def _cs_chain() -> None:
    with chainsight.request("bench_chain", feature="bench"):
        _retrieve()
        _rerank()
        _prompt()
        _model()
        _validate()


class _Manual:
    """The metrics a careful user writes by hand for the chain, children cached."""

    def __init__(self) -> None:
        registry = CollectorRegistry()
        labels = ("stage", "kind", "system", "outcome")
        self.stage = Histogram(
            "m_stage_seconds", "d", labels, registry=registry, buckets=n.LATENCY_BUCKETS
        )
        self.stage_total = Counter("m_stages", "c", labels, registry=registry)
        self.request = Histogram(
            "m_request_seconds", "d", ("request", "outcome"), registry=registry
        ).labels("bench_chain", "ok")
        self.requests = Counter("m_requests", "c", ("request", "outcome"), registry=registry)
        self.tokens = Counter("m_tokens", "c", ("model", "type"), registry=registry)
        self.cost = Counter("m_cost_usd", "c", ("model",), registry=registry).labels("gpt-4o")
        self.model_seconds = Histogram(
            "m_gen_ai_seconds", "d", ("model",), registry=registry
        ).labels("gpt-4o")
        self.token_histogram = Histogram(
            "m_gen_ai_tokens", "d", ("model", "type"), registry=registry
        )
        self.validations = Counter("m_validations", "c", ("result",), registry=registry).labels(
            "passed"
        )
        self.request_total = self.requests.labels("bench_chain", "ok")
        self.input_tokens = self.tokens.labels("gpt-4o", "input")
        self.output_tokens = self.tokens.labels("gpt-4o", "output")
        self.input_hist = self.token_histogram.labels("gpt-4o", "input")
        self.output_hist = self.token_histogram.labels("gpt-4o", "output")
        self.children = {
            kind: (
                self.stage.labels(f"chain_{kind}", kind, "x", "ok"),
                self.stage_total.labels(f"chain_{kind}", kind, "x", "ok"),
            )
            for kind in ("retrieval", "rerank", "prompt", "model", "validation")
        }

    def usage(self, seconds: float) -> float:
        """The model stage's own metrics; returns the cost."""
        inp, out = _USAGE
        price_in, price_out = _PRICES["gpt-4o"]
        cost = (inp * price_in + out * price_out) / 1e6
        self.input_tokens.inc(inp)
        self.output_tokens.inc(out)
        self.input_hist.observe(inp)
        self.output_hist.observe(out)
        self.cost.inc(cost)
        self.model_seconds.observe(seconds)
        return cost


def _attributes(kind: str) -> dict[str, AttributeValue]:
    """Ten attributes of the kind chainsight puts on such a span."""
    return {
        n.CS_STAGE_KIND: kind,
        n.CS_STAGE_NAME: f"chain_{kind}",
        n.GEN_AI_OPERATION_NAME: kind,
        n.GEN_AI_PROVIDER_NAME: "x",
        n.CS_TENANT: "t",
        n.CS_FEATURE: "bench",
        n.CS_RELEASE_ID: "model=gpt-4o-2024-08-06,prompt=answer@7",
        n.CS_RELEASE_PREFIX + "model": "gpt-4o-2024-08-06",
        n.CS_RELEASE_PREFIX + "prompt": "answer@7",
        n.CS_OUTCOME: n.OUTCOME_OK,
    }


_KINDS: Final = ("retrieval", "rerank", "prompt", "model", "validation")


class ChainCases:
    """The request-level cases, on the suite's tracer (the same pipeline as R)."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._manual = _Manual()
        self._attrs: Mapping[str, Mapping[str, AttributeValue]] = {
            kind: _attributes(kind) for kind in ("request", *_KINDS)
        }

    def _raw(self, manual: bool) -> None:
        tracer, attrs, metrics = self._tracer, self._attrs, self._manual
        started = time.perf_counter()
        with tracer.start_as_current_span(
            "invoke_workflow bench_chain", attributes=attrs["request"]
        ):
            for kind in _KINDS:
                stage_start = time.perf_counter()
                with tracer.start_as_current_span(kind, attributes=attrs[kind]) as span:
                    _body()
                    if kind == "model":
                        inp, out = _USAGE
                        cost = metrics.usage(0.0) if manual else 0.0
                        span.set_attributes(
                            {
                                n.GEN_AI_USAGE_INPUT_TOKENS: inp,
                                n.GEN_AI_USAGE_OUTPUT_TOKENS: out,
                                n.CS_COST_USD: cost,
                            }
                        )
                    if kind == "validation" and manual:
                        metrics.validations.inc()
                if manual:
                    histogram, counter = metrics.children[kind]
                    histogram.observe(time.perf_counter() - stage_start)
                    counter.inc()
        if manual:
            metrics.request.observe(time.perf_counter() - started)
            metrics.request_total.inc()

    def run_raw_chain(self, loops: int) -> None:
        """Six raw spans, 10 attributes each, no metrics."""
        for _ in range(loops):
            self._raw(manual=False)

    def run_manual_chain(self, loops: int) -> None:
        """The same six spans plus the metrics, by hand."""
        for _ in range(loops):
            self._raw(manual=True)

    @staticmethod
    def run_cs_chain(loops: int) -> None:
        """chainsight's six-stage request."""
        for _ in range(loops):
            _cs_chain()

    @staticmethod
    def run_request(loops: int) -> None:
        """A request with nothing inside: what ``request()`` alone costs."""
        for _ in range(loops):
            with chainsight.request("bench_request", feature="bench"):
                _body()

    def run_manual_model(self, loops: int) -> None:
        """R2: a model stage by hand (span, usage attributes, the same metrics as chainsight)."""
        tracer, attrs, metrics = self._tracer, self._attrs["model"], self._manual
        histogram, counter = metrics.children["model"]
        inp, out = _USAGE
        for _ in range(loops):
            start = time.perf_counter()
            with tracer.start_as_current_span("chat gpt-4o", attributes=attrs) as span:
                _body()
                seconds = time.perf_counter() - start
                cost = metrics.usage(seconds)
                span.set_attributes(
                    {
                        n.GEN_AI_USAGE_INPUT_TOKENS: inp,
                        n.GEN_AI_USAGE_OUTPUT_TOKENS: out,
                        n.CS_COST_USD: cost,
                    }
                )
            histogram.observe(time.perf_counter() - start)
            counter.inc()

    def rows(self) -> list[Row]:
        """The cases as (name, description, run, spans, stage durations)."""
        return [
            ("cs_request", "request() alone (root span, request metrics)", self.run_request, 1, 0),
            ("R_chain6", "six raw spans: request + 5 stages, 10 attributes each",
             self.run_raw_chain, 6, 0),
            ("manual_chain6", "the six spans + the same metrics, by hand",
             self.run_manual_chain, 6, 0),
            ("cs_chain6", "request + retrieval, rerank, prompt, model (usage), validation",
             self.run_cs_chain, 6, 5),
            ("R2", "model stage by hand: span, usage attributes, cost, token metrics",
             self.run_manual_model, 1, 0),
        ]  # fmt: skip
