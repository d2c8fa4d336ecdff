"""Every Prometheus metric chainsight exposes, read from a fresh ``CollectorRegistry``.

A scripted mix of stages (ok, an error in each fault domain, degraded, cancelled, rejected by a
budget, streamed, unpriced) runs once per test; the tests then check each family's name, type,
label names, bucket bounds and the exact values the mix must have produced. The cardinality guard
gets property tests, and the hostile-input test feeds a million distinct tenants through the
real request path in a child process to measure series and resident memory.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.utils import floatToGoString

import chainsight
from chainsight import _names as n
from chainsight.config import state as _config
from chainsight.export.metrics import MAX_LABEL_BYTES, LabelGuard
from chainsight.testing import Capture, capture

ROOT = Path(__file__).resolve().parents[2]
METRICS_DOC = ROOT / "docs" / "metrics.md"

# The budget soft-ratio gauge is emitted by _metrics._BudgetCollector under a literal name that
# has no constant in _names.py (reported to the lead); the test pins the exposed string.
BUDGET_SOFT_RATIO = "chainsight_budget_soft_ratio"

Contract = dict[str, tuple[str, frozenset[str], tuple[float, ...] | None]]

GENAI_LABELS = frozenset(
    {
        n.L_GEN_AI_OPERATION_NAME,
        n.L_GEN_AI_PROVIDER_NAME,
        n.L_GEN_AI_REQUEST_MODEL,
        n.L_GEN_AI_RESPONSE_MODEL,
    }
)
RELEASE = {"model": "gpt-4o-2024-08-06", "prompt": "answer@7"}
RELEASE_ID = "model=gpt-4o-2024-08-06,prompt=answer@7"

# Family name as prometheus-client reports it (counters without _total) -> type, label names,
# histogram bucket bounds. This is the contract dashboards, alerts and docs/metrics.md rely on.
CONTRACT: Contract = {
    n.M_GEN_AI_OPERATION_DURATION: (
        "histogram",
        GENAI_LABELS | {n.L_GEN_AI_ERROR_TYPE},
        n.OPERATION_DURATION_BUCKETS,
    ),
    n.M_GEN_AI_TOKEN_USAGE: (
        "histogram",
        GENAI_LABELS | {n.L_GEN_AI_TOKEN_TYPE},
        tuple(float(b) for b in n.TOKEN_USAGE_BUCKETS),
    ),
    n.M_GEN_AI_TTFC: ("histogram", GENAI_LABELS, n.OPERATION_DURATION_BUCKETS),
    n.M_REQUESTS: (
        "counter",
        frozenset({n.L_REQUEST, n.L_FEATURE, n.L_OUTCOME, n.L_FAULT, n.L_RELEASE}),
        None,
    ),
    n.M_REQUEST_DURATION: (
        "histogram",
        frozenset({n.L_REQUEST, n.L_OUTCOME, n.L_RELEASE}),
        n.LATENCY_BUCKETS,
    ),
    n.M_STAGE_DURATION: (
        "histogram",
        frozenset({n.L_STAGE, n.L_KIND, n.L_SYSTEM, n.L_OUTCOME, n.L_RELEASE}),
        n.LATENCY_BUCKETS,
    ),
    n.M_STAGE_ERRORS: (
        "counter",
        frozenset({n.L_STAGE, n.L_KIND, n.L_SYSTEM, n.L_FAULT, n.L_ERROR_TYPE}),
        None,
    ),
    n.M_FALLBACKS: ("counter", frozenset({n.L_STAGE, n.L_KIND, n.L_TO, n.L_REASON}), None),
    n.M_TOKENS: (
        "counter",
        frozenset({n.L_PROVIDER, n.L_MODEL, n.L_TOKEN_TYPE, n.L_FEATURE, n.L_TENANT}),
        None,
    ),
    n.M_COST_USD: (
        "counter",
        frozenset({n.L_PROVIDER, n.L_MODEL, n.L_FEATURE, n.L_TENANT, n.L_TEAM}),
        None,
    ),
    n.M_REQUEST_COST_USD: ("histogram", frozenset({n.L_REQUEST, n.L_FEATURE}), n.COST_BUCKETS),
    n.M_UNPRICED_CALLS: ("counter", frozenset({n.L_PROVIDER, n.L_MODEL}), None),
    n.M_RETRIEVAL_DOCUMENTS: (
        "histogram",
        frozenset({n.L_STAGE, n.L_SYSTEM}),
        tuple(float(b) for b in n.DOCUMENT_COUNT_BUCKETS),
    ),
    n.M_RETRIEVAL_EMPTY: ("counter", frozenset({n.L_STAGE, n.L_SYSTEM}), None),
    n.M_RETRIEVAL_DUPLICATES: ("counter", frozenset({n.L_STAGE, n.L_SYSTEM}), None),
    n.M_RETRIEVAL_TOP_SCORE: ("histogram", frozenset({n.L_STAGE, n.L_SYSTEM}), n.SCORE_BUCKETS),
    n.M_VALIDATIONS: ("counter", frozenset({n.L_STAGE, n.L_VALIDATOR, n.L_RESULT}), None),
    n.M_BUDGET_SPENT: ("gauge", frozenset({n.L_BUDGET}), None),
    n.M_BUDGET_LIMIT: ("gauge", frozenset({n.L_BUDGET}), None),
    BUDGET_SOFT_RATIO: ("gauge", frozenset({n.L_BUDGET}), None),
    n.M_BUDGET_REJECTIONS: ("counter", frozenset({n.L_BUDGET}), None),
    n.M_RELEASE_INFO + "_info": (
        "gauge",
        frozenset({n.L_RELEASE, "service", "environment", *RELEASE}),
        None,
    ),
    n.M_IN_FLIGHT: ("gauge", frozenset({n.L_REQUEST}), None),
    n.M_INTERNAL_ERRORS: ("counter", frozenset({n.L_WHERE}), None),
    n.M_EXPORT_FAILURES: ("counter", frozenset({n.L_SIGNAL}), None),
    n.M_LABEL_OVERFLOW: ("counter", frozenset({n.L_LABEL}), None),
}


class HTTPStatusError(Exception):
    """A provider SDK error carrying an HTTP status, as openai/anthropic/httpx errors do."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class SchemaError(Exception):
    """The app's own bug in prompt assembly (an exception no table knows)."""


# --- the scripted mix ---------------------------------------------------------------------


@chainsight.traced_stage("retrieval", name="search", system="qdrant", collection="kb")
def search(question: str, *, fail: bool = False, empty: bool = False) -> list[str]:
    """A retrieval that returns three documents (one id twice), none, or fails to connect."""
    if fail:
        raise ConnectionError("qdrant: connection refused")
    ids = [] if empty else ["d1", "d2", "d1"]
    chainsight.current_stage().record_documents(
        count=len(ids), scores=[0.42, 0.91, 0.42][: len(ids)], ids=ids
    )
    return ids


@chainsight.traced_stage("model", name="generate", provider="openai", model="gpt-4o")
def generate(prompt: str, *, status: int | None = None) -> str:
    """A model call using 1000 input (400 cached), 200 output (50 reasoning) tokens."""
    if status is not None:
        raise HTTPStatusError(status)
    chainsight.current_stage().record_usage(
        input_tokens=1000,
        output_tokens=200,
        cached_input_tokens=400,
        reasoning_output_tokens=50,
    )
    return "answer"


@chainsight.traced_stage("model", name="stream", provider="openai", model="gpt-4o")
async def stream(prompt: str) -> AsyncIterator[str]:
    """A streamed model call: the first chunk after ~20 ms, so TTFC is observable."""
    await asyncio.sleep(0.02)
    yield "ans"
    yield "wer"
    chainsight.current_stage().record_usage(input_tokens=10, output_tokens=2)


def validate(answer: str, *, passed: bool) -> None:
    """An output check, passing or failing."""
    with chainsight.stage("validation", name="check", validator="json_schema") as v:
        v.record_validation(passed=passed, reason=None if passed else "not JSON")


def one_request(
    tenant: str,
    *,
    retrieval_fails: bool = False,
    provider_status: int | None = None,
    prompt_bug: bool = False,
    validation_passes: bool = True,
) -> None:
    """One answer_ticket request; the keyword arguments inject one failure each."""
    with chainsight.request("answer_ticket", tenant=tenant, feature="copilot", team="support"):
        docs = search("q", fail=retrieval_fails)
        with chainsight.stage("prompt", name="assemble", prompt_name="answer"):
            if prompt_bug:
                raise SchemaError("missing field 'docs'")
            prompt = ",".join(docs)
        answer = generate(prompt, status=provider_status)
        validate(answer, passed=validation_passes)


def run_mix() -> None:
    """The scripted traffic mix: ok, an error per fault domain, degraded, cancelled, rejected."""
    one_request("acme")  # ok
    one_request("acme")  # ok
    with pytest.raises(ConnectionError):
        one_request("acme", retrieval_fails=True)  # vector_store / connection
    with pytest.raises(HTTPStatusError):
        one_request("acme", provider_status=503)  # provider / server_error
    with pytest.raises(SchemaError):
        one_request("acme", prompt_bug=True)  # app / test_metrics.SchemaError
    one_request("acme", validation_passes=False)  # model / validation_failed

    # degraded: the provider rate-limits, a cheaper model answers.
    with (
        chainsight.request("answer_ticket", tenant="acme", feature="copilot", team="support"),
        chainsight.stage("model", name="generate", provider="openai", model="gpt-4o") as s,
    ):
        try:
            raise HTTPStatusError(429)
        except HTTPStatusError:
            s.fallback(to="gpt-4o-mini", reason="rate_limited")

    # an empty retrieval in an otherwise ok request
    with chainsight.request("answer_ticket", tenant="acme", feature="copilot", team="support"):
        search("q", empty=True)

    # cancelled: the caller gives up on a slow model call
    async def cancelled() -> None:
        async def slow() -> None:
            with chainsight.request("answer_ticket", tenant="acme", feature="copilot"):
                async with chainsight.stage(
                    "model", name="generate", provider="openai", model="gpt-4o"
                ):
                    await asyncio.sleep(10)

        task = asyncio.ensure_future(slow())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())

    # streamed call (TTFC)
    async def streamed() -> None:
        with chainsight.request("stream_answer", tenant="acme", feature="copilot"):
            chunks = [c async for c in stream("p")]
        assert chunks == ["ans", "wer"]

    asyncio.run(streamed())

    # unpriced model; a bad usage value is dropped and counted, never raised
    with (
        chainsight.request("answer_ticket", tenant="acme", feature="labs"),
        chainsight.stage("model", name="local", provider="vllm", model="no-such-model") as m,
    ):
        m.record_usage(input_tokens=7, output_tokens=3)
        m.record_usage(input_tokens=-1)

    # budget: the capped tenant's first call is admitted and overspends, the second refused
    one_request("capped")
    with pytest.raises(chainsight.BudgetExceeded):
        one_request("capped")


@pytest.fixture
def mixed(chainsight_capture: Capture) -> Capture:
    """chainsight with a release, a hard budget for one tenant, after the scripted mix ran."""
    chainsight.configure(
        release=RELEASE,
        environment="test",
        budgets=[chainsight.Budget("daily", 0.0001, hard=True, match={"tenant": "capped"})],
    )
    run_mix()
    return chainsight_capture


def families(registry: CollectorRegistry) -> dict[str, Metric]:
    """The registry's families by name."""
    return {m.name: m for m in registry.collect()}


def value(cap: Capture, name: str, **labels: str) -> float:
    """A sample value that must exist."""
    found = cap.metric(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def total(cap: Capture, name: str, **match: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``match``."""
    return sum(
        s.value
        for m in cap.registry.collect()
        for s in m.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in match.items())
    )


# --- names, types, labels, buckets --------------------------------------------------------


def test_every_family_has_the_contract_name_type_and_labels(mixed: Capture) -> None:
    # export failures need a failing exporter; count one directly so the family has a sample.
    _config.current().metrics.span_export_failed(1)
    # a second fallback reason past a limit of one overflows the guard
    chainsight.configure(label_limits={"reason": 1})
    with chainsight.stage("retrieval", name="search", system="qdrant") as s:
        s.fallback(to="bm25", reason="timeout")
    assert value(mixed, "chainsight_label_overflow_total", label="reason") == 1
    found = families(mixed.registry)
    assert sorted(found) == sorted(CONTRACT), "a metric family was added or removed"
    for name, (kind, labels, _buckets) in CONTRACT.items():
        family = found[name]
        assert family.type == kind, name
        assert family.documentation, f"{name} has no HELP text"
        assert family.samples, f"the scripted mix produced no sample of {name}"
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)


def test_histogram_bucket_bounds(mixed: Capture) -> None:
    found = families(mixed.registry)
    for name, (kind, _labels, buckets) in CONTRACT.items():
        if kind != "histogram":
            continue
        assert buckets is not None
        bucket_samples = [s for s in found[name].samples if s.name == f"{name}_bucket"]
        first = bucket_samples[0].labels
        key = {k: v for k, v in first.items() if k != "le"}
        bounds = [
            s.labels["le"]
            for s in bucket_samples
            if {k: v for k, v in s.labels.items() if k != "le"} == key
        ]
        # the exact strings rules and dashboards must match, e.g. le="1.0", le="1.048576e+06"
        expected = [floatToGoString(b) for b in buckets]  # type: ignore[no-untyped-call]
        assert bounds == [*expected, "+Inf"], name


def test_latency_buckets_contain_the_slo_thresholds() -> None:
    # Rules match le="1.0" and le="10.0" literally; a bound that moves breaks every SLO.
    assert {1.0, 2.5, 10.0} <= set(n.LATENCY_BUCKETS)
    assert list(n.LATENCY_BUCKETS) == sorted(n.LATENCY_BUCKETS)


def test_every_family_is_documented() -> None:
    text = METRICS_DOC.read_text(encoding="utf-8")
    for name, (kind, labels, _buckets) in CONTRACT.items():
        exposed = f"{name}_total" if kind == "counter" else name
        assert f"`{exposed}`" in text, f"docs/metrics.md does not document {exposed}"
        for label in labels - set(RELEASE) - {"service", "environment"}:
            assert f"`{label}`" in text, f"docs/metrics.md does not mention label {label}"


# --- values after the scripted mix ------------------------------------------------------


def test_requests_by_outcome_and_fault(mixed: Capture) -> None:
    name = "chainsight_requests_total"
    base = {"request": "answer_ticket", "feature": "copilot", "release": RELEASE_ID}
    expected = {
        ("ok", "none"): 4,  # two plain, the empty retrieval, the capped tenant's first
        ("error", n.FAULT_VECTOR_STORE): 1,
        ("error", n.FAULT_PROVIDER): 1,
        ("error", n.FAULT_APP): 1,
        ("error", n.FAULT_MODEL): 1,
        ("cancelled", "none"): 1,
        ("rejected", "none"): 1,
    }
    for (outcome, fault), count in expected.items():
        assert value(mixed, name, **base, outcome=outcome, fault=fault) == count, (outcome, fault)
    assert value(mixed, name, **{**base, "feature": "labs"}, outcome="ok", fault="none") == 1
    assert value(mixed, name, **{**base, "request": "stream_answer"}, outcome="ok", fault="none")
    assert total(mixed, name) == 13
    assert total(mixed, "chainsight_request_duration_seconds_count") == 13


def test_degraded_request_keeps_the_fault_of_what_failed(mixed: Capture) -> None:
    assert (
        value(
            mixed,
            "chainsight_requests_total",
            request="answer_ticket",
            feature="copilot",
            release=RELEASE_ID,
            outcome="degraded",
            fault=n.FAULT_PROVIDER,
        )
        == 1
    )


def test_degraded_request_is_counted(mixed: Capture) -> None:
    # Whatever its fault label, the degraded request is counted once.
    assert total(mixed, "chainsight_requests_total", outcome="degraded") == 1
    assert (
        value(
            mixed,
            "chainsight_fallbacks_total",
            stage="generate",
            kind="model",
            to="gpt-4o-mini",
            reason="rate_limited",
        )
        == 1
    )


def test_stage_errors_by_fault_domain_and_error_type(mixed: Capture) -> None:
    name = "chainsight_stage_errors_total"
    assert (
        value(
            mixed,
            name,
            stage="search",
            kind="retrieval",
            system="qdrant",
            fault=n.FAULT_VECTOR_STORE,
            error_type=n.ERR_CONNECTION,
        )
        == 1
    )
    assert (
        value(
            mixed,
            name,
            stage="generate",
            kind="model",
            system="openai",
            fault=n.FAULT_PROVIDER,
            error_type=n.ERR_SERVER_ERROR,
        )
        == 1
    )
    # the degraded stage is counted with what failed, so a fallback storm shows up here too
    assert (
        value(
            mixed,
            name,
            stage="generate",
            kind="model",
            system="openai",
            fault=n.FAULT_PROVIDER,
            error_type=n.ERR_RATE_LIMITED,
        )
        == 1
    )
    assert (
        value(
            mixed,
            name,
            stage="assemble",
            kind="prompt",
            system="",
            fault=n.FAULT_APP,
            error_type=f"{__name__}.SchemaError",
        )
        == 1
    )
    assert (
        value(
            mixed,
            name,
            stage="check",
            kind="validation",
            system="",
            fault=n.FAULT_MODEL,
            error_type=n.ERR_VALIDATION_FAILED,
        )
        == 1
    )
    # cancelled and rejected stages are not errors
    assert total(mixed, name) == 5


def test_stage_duration_counts_by_outcome(mixed: Capture) -> None:
    name = "chainsight_stage_duration_seconds_count"
    gen = {"stage": "generate", "kind": "model", "system": "openai", "release": RELEASE_ID}
    # ok: two plain, the validation-failed request, the capped tenant's first call
    assert value(mixed, name, **gen, outcome="ok") == 4
    assert value(mixed, name, **gen, outcome="error") == 1
    assert value(mixed, name, **gen, outcome="degraded") == 1
    assert value(mixed, name, **gen, outcome="cancelled") == 1
    assert value(mixed, name, **gen, outcome="rejected") == 1
    search_labels = {"stage": "search", "kind": "retrieval", "system": "qdrant"}
    # every request reaches the retrieval; one of them fails it
    assert value(mixed, name, **search_labels, release=RELEASE_ID, outcome="ok") == 8
    assert value(mixed, name, **search_labels, release=RELEASE_ID, outcome="error") == 1
    cancelled = value(mixed, "chainsight_stage_duration_seconds_sum", **gen, outcome="cancelled")
    assert 0.005 < cancelled < 5.0  # cancelled after ~10 ms, not when the 10 s sleep would end


def test_tokens_cost_and_genai_histograms(mixed: Capture) -> None:
    priced_calls = 4  # two ok, the validation-failed one, the capped tenant's admitted call
    tok = {"provider": "openai", "model": "gpt-4o", "feature": "copilot"}
    acme = {**tok, "tenant": "acme"}
    assert value(mixed, "chainsight_tokens_total", **acme, token_type="input") == 3 * 1000 + 10
    assert value(mixed, "chainsight_tokens_total", **acme, token_type="output") == 3 * 200 + 2
    assert value(mixed, "chainsight_tokens_total", **acme, token_type="cache_read") == 3 * 400
    assert value(mixed, "chainsight_tokens_total", **acme, token_type="reasoning") == 3 * 50
    assert value(mixed, "chainsight_tokens_total", **tok, tenant="capped", token_type="input") == (
        1000
    )
    assert total(mixed, "chainsight_tokens_total", token_type="cache_write") == 0

    # gpt-4o: 2.50 USD per 1M input, 1.25 cached input, 10.00 output (prices.toml)
    per_call = (600 * 2.5 + 400 * 1.25 + 200 * 10.0) / 1e6
    stream_call = (10 * 2.5 + 2 * 10.0) / 1e6
    cost = value(mixed, "chainsight_cost_usd_total", **acme, team="support")
    assert cost == pytest.approx(3 * per_call, rel=1e-9)
    assert value(mixed, "chainsight_cost_usd_total", **acme, team="") == pytest.approx(
        stream_call, rel=1e-9
    )
    assert total(mixed, "chainsight_cost_usd_total") == pytest.approx(
        priced_calls * per_call + stream_call, rel=1e-9
    )
    request_cost = {"request": "answer_ticket", "feature": "copilot"}
    assert value(mixed, "chainsight_request_cost_usd_count", **request_cost) == priced_calls
    assert value(mixed, "chainsight_request_cost_usd_sum", **request_cost) == pytest.approx(
        priced_calls * per_call, rel=1e-9
    )
    # 0.004 USD per request falls in the (0.0025, 0.005] bucket
    assert value(mixed, "chainsight_request_cost_usd_bucket", **request_cost, le="0.0025") == 0
    assert value(mixed, "chainsight_request_cost_usd_bucket", **request_cost, le="0.005") == 4

    genai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "gpt-4o",
        "gen_ai_response_model": "",  # the mix records usage without naming the answering model
    }
    tokens = "gen_ai_client_token_usage"
    assert value(mixed, f"{tokens}_count", **genai, gen_ai_token_type="input") == priced_calls + 1
    assert value(mixed, f"{tokens}_sum", **genai, gen_ai_token_type="output") == (
        priced_calls * 200 + 2
    )
    duration = "gen_ai_client_operation_duration_seconds_count"
    # error_type is empty for the priced calls, the stream and the cancelled call; the call a
    # budget refused is observed too, as an error of its own kind (docs/metrics.md).
    assert value(mixed, duration, **genai, error_type="") == priced_calls + 2
    assert value(mixed, duration, **genai, error_type=n.ERR_SERVER_ERROR) == 1
    assert value(mixed, duration, **genai, error_type=n.ERR_RATE_LIMITED) == 1
    assert value(mixed, duration, **genai, error_type=n.ERR_BUDGET_EXCEEDED) == 1
    ttfc_count = value(mixed, "gen_ai_client_operation_time_to_first_chunk_seconds_count", **genai)
    ttfc_sum = value(mixed, "gen_ai_client_operation_time_to_first_chunk_seconds_sum", **genai)
    assert ttfc_count == 1
    assert 0.015 < ttfc_sum < 1.0


def _model_labels(cap: Capture, name: str) -> set[tuple[str, str]]:
    """The (request model, response model) pairs of ``name``'s samples with a count."""
    return {
        (s.labels[n.L_GEN_AI_REQUEST_MODEL], s.labels[n.L_GEN_AI_RESPONSE_MODEL])
        for m in cap.registry.collect()
        for s in m.samples
        if s.name == name and s.value > 0
    }


@pytest.mark.parametrize(
    ("asked", "named", "expected"),
    [
        # the model that answered differs from the one asked for: both, on both families
        ("gpt-4o", "gpt-4o-2024-08-06", ("gpt-4o", "gpt-4o-2024-08-06")),
        # the same model named again: no response model, as on the span
        ("gpt-4o", "gpt-4o", ("gpt-4o", "")),
        # the stage was not told what it asked for: only the answering model is known
        (None, "gpt-4o-2024-08-06", ("", "gpt-4o-2024-08-06")),
        # nothing named at all
        ("gpt-4o", None, ("gpt-4o", "")),
    ],
)
def test_duration_and_token_usage_name_the_model_by_one_rule(
    chainsight_capture: Capture, asked: str | None, named: str | None, expected: tuple[str, str]
) -> None:
    with chainsight.stage("model", name="generate", provider="openai", model=asked) as s:
        s.record_usage(input_tokens=100, output_tokens=10, model=named)
    for name in (
        "gen_ai_client_operation_duration_seconds_count",
        "gen_ai_client_token_usage_count",
    ):
        assert _model_labels(chainsight_capture, name) == {expected}, name
    span = chainsight_capture.stage(name="generate").attributes
    assert span.get(n.GEN_AI_REQUEST_MODEL, "") == expected[0]
    assert span.get(n.GEN_AI_RESPONSE_MODEL, "") == expected[1]


def test_a_tool_loop_labels_each_call_with_the_model_that_answered_it(
    chainsight_capture: Capture,
) -> None:
    with chainsight.stage("model", name="loop", provider="openai", model="gpt-4o") as s:
        s.record_usage(input_tokens=100, output_tokens=10, model="gpt-4o-mini-2024-07-18")
        s.record_usage(input_tokens=200, output_tokens=20, model="gpt-4o-2024-08-06")
    tokens = _model_labels(chainsight_capture, "gen_ai_client_token_usage_count")
    assert tokens == {("gpt-4o", "gpt-4o-mini-2024-07-18"), ("gpt-4o", "gpt-4o-2024-08-06")}
    # One operation: labelled with the last call's model, as the span's gen_ai.response.model.
    duration = _model_labels(chainsight_capture, "gen_ai_client_operation_duration_seconds_count")
    assert duration == {("gpt-4o", "gpt-4o-2024-08-06")}
    span = chainsight_capture.stage(name="loop").attributes
    assert span[n.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"


def test_unpriced_calls_and_invalid_usage(mixed: Capture) -> None:
    assert value(mixed, "chainsight_unpriced_calls_total", provider="vllm", model="no-such-model")
    assert total(mixed, "chainsight_unpriced_calls_total") == 1
    # unpriced tokens still count: they are real usage, only their cost is unknown
    assert (
        value(
            mixed,
            "chainsight_tokens_total",
            provider="vllm",
            model="no-such-model",
            token_type="input",
            feature="labs",
            tenant="acme",
        )
        == 7
    )
    assert total(mixed, "chainsight_cost_usd_total", model="no-such-model") == 0
    assert value(mixed, "chainsight_internal_errors_total", where="invalid_argument:record_usage")


def test_retrieval_health(mixed: Capture) -> None:
    labels = {"stage": "search", "system": "qdrant"}
    assert value(mixed, "chainsight_retrieval_documents_count", **labels) == 8
    assert value(mixed, "chainsight_retrieval_documents_sum", **labels) == 7 * 3
    assert value(mixed, "chainsight_retrieval_documents_bucket", **labels, le="0.0") == 1
    assert value(mixed, "chainsight_retrieval_empty_total", **labels) == 1
    assert value(mixed, "chainsight_retrieval_duplicate_ids_total", **labels) == 7
    assert value(mixed, "chainsight_retrieval_top_score_count", **labels) == 7
    assert value(mixed, "chainsight_retrieval_top_score_bucket", **labels, le="0.9") == 0
    assert value(mixed, "chainsight_retrieval_top_score_bucket", **labels, le="1.0") == 7


def test_validations_budget_release_and_in_flight(mixed: Capture) -> None:
    v = {"stage": "check", "validator": "json_schema"}
    # two plain requests and the capped tenant's first; the 503 request never validated
    assert value(mixed, "chainsight_validations_total", **v, result="passed") == 3
    assert value(mixed, "chainsight_validations_total", **v, result="failed") == 1
    assert value(mixed, "chainsight_budget_rejections_total", budget="daily") == 1
    assert value(mixed, "chainsight_budget_limit_usd", budget="daily") == 0.0001
    assert value(mixed, "chainsight_budget_spent_usd", budget="daily") == pytest.approx(0.004)
    assert value(mixed, BUDGET_SOFT_RATIO, budget="daily") == 0.8
    assert (
        value(
            mixed,
            "chainsight_release_info",
            release=RELEASE_ID,
            service="test",
            environment="test",
            **RELEASE,
        )
        == 1
    )
    assert value(mixed, "chainsight_in_flight_requests", request="answer_ticket") == 0
    assert value(mixed, "chainsight_in_flight_requests", request="stream_answer") == 0


def test_in_flight_counts_open_requests(chainsight_capture: Capture) -> None:
    with chainsight.request("outer"), chainsight.request("outer"):
        assert value(chainsight_capture, "chainsight_in_flight_requests", request="outer") == 2
    assert value(chainsight_capture, "chainsight_in_flight_requests", request="outer") == 0


# --- exemplars ----------------------------------------------------------------------------

_EXEMPLAR = re.compile(r"^(\S+)_bucket\{(.*)\} \S+ # \{(.*)\} (\S+)")


def exemplars(registry: CollectorRegistry) -> dict[str, list[dict[str, str]]]:
    """Exemplar labels per histogram family, from an OpenMetrics scrape of ``registry``."""
    out: dict[str, list[dict[str, str]]] = {}
    scrape: bytes = openmetrics_latest(registry)  # type: ignore[no-untyped-call]
    for line in scrape.decode().splitlines():
        match = _EXEMPLAR.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3)))
            out.setdefault(match.group(1), []).append(labels)
    return out


def test_histograms_carry_trace_and_span_id_exemplars(chainsight_capture: Capture) -> None:
    one_request("acme")
    found = exemplars(chainsight_capture.registry)
    spans = {(s.trace_id, s.span_id): s for s in chainsight_capture.stages}
    for family in (
        n.M_STAGE_DURATION,
        n.M_REQUEST_DURATION,
        n.M_GEN_AI_OPERATION_DURATION,
    ):
        assert found.get(family), f"no exemplar on {family}"
        for labels in found[family]:
            assert set(labels) == {"trace_id", "span_id"}
            assert re.fullmatch("[0-9a-f]{32}", labels["trace_id"])
            assert re.fullmatch("[0-9a-f]{16}", labels["span_id"])
            key = (int(labels["trace_id"], 16), int(labels["span_id"], 16))
            assert key in spans, "the exemplar names a span that was not exported"
    request_span = chainsight_capture.stage(kind="request")
    (req,) = found[n.M_REQUEST_DURATION]
    assert int(req["span_id"], 16) == request_span.span_id


def test_unsampled_spans_leave_no_exemplar() -> None:
    cap = capture(sample_ratio=0.0)
    one_request("acme")
    assert value(cap, "chainsight_requests_total", request="answer_ticket", feature="copilot",
                 outcome="ok", fault="none", release="unknown") == 1  # fmt: skip
    assert exemplars(cap.registry) == {}


# --- the cardinality guard ----------------------------------------------------------------


def test_label_overflow_becomes_other_and_is_counted() -> None:
    cap = capture(label_limits={"tenant": 3})
    for i in range(10):
        with chainsight.request("r", tenant=f"t{i}", feature="f") as req:
            req.record_usage(input_tokens=1, model="gpt-4o")
    tenants = {
        s.labels["tenant"]
        for m in cap.registry.collect()
        for s in m.samples
        if s.name == "chainsight_tokens_total"
    }
    assert tenants == {"t0", "t1", "t2", n.OVERFLOW_VALUE}
    assert value(cap, "chainsight_tokens_total", provider="", model="gpt-4o",
                 token_type="input", feature="f", tenant=n.OVERFLOW_VALUE) == 7  # fmt: skip
    # one overflow per request for the tokens guard
    assert value(cap, "chainsight_label_overflow_total", label="tenant") == 7


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=20),
    values=st.lists(st.text(max_size=200), max_size=80),
)
def test_guard_keeps_at_most_limit_values(limit: int, values: list[str]) -> None:
    overflows: list[str] = []
    guard = LabelGuard({"tenant": limit}, overflows.append)
    out = [guard("m", "tenant", v) for v in values]
    kept = {v for v in out if v != n.OVERFLOW_VALUE}
    assert len(kept) <= limit
    assert all(len(v.encode()) <= MAX_LABEL_BYTES for v in out)
    assert len(overflows) == out.count(n.OVERFLOW_VALUE)
    # a value once admitted keeps its own label forever (no flapping into __other__)
    for given_value, label in zip(values, out, strict=True):
        if label != n.OVERFLOW_VALUE:
            assert given_value.startswith(label.replace("\ufffd", "")) or "\ufffd" in label
            assert guard("m", "tenant", given_value) == label


@given(values=st.lists(st.text(max_size=10), min_size=1, max_size=30))
def test_guard_limits_each_metric_separately(values: list[str]) -> None:
    guard = LabelGuard({"*": 1}, lambda _label: None)
    assert guard("a", "x", values[0]) == values[0]
    assert guard("b", "x", values[0]) == values[0]


# --- hostile input ------------------------------------------------------------------------

HOSTILE_TENANTS = 1_000_000
# Measured on a 2-core CI-like machine: 0.35-0.43 MB after warm-up (1.05 MB with every span
# sampled), 664 samples. The bound leaves room for allocator noise and fails on anything that keeps state
# per distinct value (a million short strings alone are > 50 MB).
RSS_GROWTH_BOUND_MB = 16.0

_HOSTILE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import chainsight
    from prometheus_client import CollectorRegistry

    def rss_kib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc/self/status")

    registry = CollectorRegistry()
    # Unsampled spans keep a million requests within the time limit; the guard and the metric
    # children are the same code whether or not the span records.
    chainsight.configure(registry=registry, exporter="none", service="hostile", sample_ratio=0.0)
    N = int(sys.argv[1])

    def batch(start, stop):
        for i in range(start, stop):
            with chainsight.request("r", tenant=f"tenant-{i}", feature="copilot") as req:
                req.record_usage(input_tokens=10, output_tokens=5, model="gpt-4o")

    batch(0, 20_000)  # warm up: caches, guard sets and all series reach their bound
    before = rss_kib()
    series_before = sum(len(m.samples) for m in registry.collect())
    began = time.perf_counter()
    batch(20_000, N)
    seconds = time.perf_counter() - began
    after = rss_kib()
    series = sum(len(m.samples) for m in registry.collect())
    tenants = {s.labels["tenant"] for m in registry.collect() for s in m.samples
               if s.name == "chainsight_tokens_total"}
    overflow = registry.get_sample_value("chainsight_label_overflow_total", {"label": "tenant"})
    print(json.dumps({"before_kib": before, "after_kib": after, "series": series,
                      "series_before": series_before,
                      "tenants": len(tenants), "overflow": overflow, "seconds": seconds}))
    """
)


def _run_hostile(count: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _HOSTILE_SCRIPT, str(count)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_a_million_distinct_tenants_keep_series_and_memory_bounded() -> None:
    result = _run_hostile(HOSTILE_TENANTS)
    growth_mb = (result["after_kib"] - result["before_kib"]) / 1024
    print(
        f"hostile input: {HOSTILE_TENANTS} tenants in {result['seconds']:.1f} s, "
        f"{result['series']} samples, RSS growth {growth_mb:.2f} MB"
    )
    # tenant values are capped at the default limit of 100, plus __other__
    assert result["tenants"] == 101
    assert result["overflow"] >= HOSTILE_TENANTS - 100
    # the series saturate during the warm-up and never grow after it
    assert result["series"] == result["series_before"]
    assert result["series"] < 1000
    assert math.isfinite(growth_mb)
    assert growth_mb < RSS_GROWTH_BOUND_MB, result


def test_hostile_label_values_survive_the_exposition(chainsight_capture: Capture) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    hostile = ['a"b', "line\nbreak", "back\\slash", "ü🙂", "x" * 1000, "{}=,"]
    for tenant in hostile:
        with chainsight.request("r", tenant=tenant, feature=tenant) as req:
            req.record_usage(input_tokens=1, model="gpt-4o")
    text = generate_latest(chainsight_capture.registry).decode()
    assert 'feature="a\\"b"' in text  # escaped, so the line still parses
    assert "x" * MAX_LABEL_BYTES not in text
    # A scraper reads back exactly the values given; a long one is cut to MAX_LABEL_BYTES
    # bytes, saying how much was cut.
    parsed = {
        sample.labels["tenant"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "chainsight_tokens_total"
    }
    long_one = "x" * 103 + "…[truncated 897 bytes]"
    assert len(long_one.encode()) <= MAX_LABEL_BYTES
    assert parsed == {*hostile[:-2], long_one, hostile[-1]}


def test_ok_exemplars_are_rate_limited_but_failures_always_attach(
    chainsight_capture: Capture,
) -> None:
    for _ in range(5):
        with chainsight.stage("tool", name="busy"):
            pass
    with pytest.raises(KeyError), chainsight.stage("tool", name="busy"):
        raise KeyError("x")
    found = exemplars(chainsight_capture.registry)
    stage_exemplars = found[n.M_STAGE_DURATION]
    # One ok exemplar in the first second, plus the failure's.
    assert len(stage_exemplars) == 2
    ids = {int(e["span_id"], 16) for e in stage_exemplars}
    oks = [s for s in chainsight_capture.stages if s.outcome == "ok"]
    error_span = next(s for s in chainsight_capture.stages if s.outcome == "error")
    assert error_span.span_id in ids
    # Without the rate limit each observation would overwrite it: the last ok span would show.
    assert oks[0].span_id in ids
    assert oks[-1].span_id not in ids


# --- children by label name ---------------------------------------------------------------


def _families(metrics: Any) -> dict[str, Any]:
    from chainsight.export.metric_families import Family

    return {k: v for k, v in vars(metrics).items() if isinstance(v, Family)}


def test_each_family_takes_its_label_values_by_name_in_declared_order() -> None:
    import inspect

    from chainsight.export.metrics import Metrics

    metrics = Metrics(CollectorRegistry(), None)
    families = _families(metrics)
    assert len(families) == 22
    for attr, family in families.items():
        params = inspect.signature(family.child).parameters.values()
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), attr
        assert tuple(p.name for p in params) == family.labelnames, attr
        assert tuple(family.metric._labelnames) == family.labelnames, attr


def test_children_are_cached_and_are_the_labelled_series() -> None:
    from chainsight.export.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry, None)
    stage, system = metrics.guarded("stage", "search"), metrics.guarded("system", "qdrant")
    error_type = metrics.guarded("error_type", "timeout")
    labels = {"stage": stage, "kind": "retrieval", "system": system, "fault": "vector_store",
              "error_type": error_type}  # fmt: skip
    child = metrics.stage_errors.child(**labels)
    again = metrics.stage_errors.child(**labels)
    assert child is again
    child.inc()
    assert registry.get_sample_value("chainsight_stage_errors_total", labels) == 1


def test_one_guard_key_per_label_name() -> None:
    from chainsight.export.metrics import GUARD_KEYS

    overflows: list[str] = []
    guard = LabelGuard({"tenant": 1}, overflows.append)
    assert guard.guarded("tenant", "a") == "a"
    # the name and its (metric, label) pair are the same set of admitted values
    metric, label = GUARD_KEYS["tenant"]
    assert guard(metric, label, "b") == n.OVERFLOW_VALUE
    assert guard.guarded("tenant", "a") == "a"
    assert overflows == ["tenant"]
