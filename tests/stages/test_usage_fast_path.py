"""``record_usage``'s short way (input and output counts on labels seen before) against the
general path: the same spans, the same metrics, the same cost, to the bit."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

import chainsight
from chainsight.cost.prices import PriceTable, cost_usd
from chainsight.stages import usage_metrics
from chainsight.testing import Capture, capture

# Metric lines that depend on time, not on what was recorded.
_TIMED = (b"_created", b"duration_seconds", b"operation_duration")

counts = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=2**53 - 1),
    st.sampled_from([0, 1, 1200, 2**53 - 1]),
)
# (stage kind, provider, model, input, output, cache reads, inside a request)
calls = st.lists(
    st.tuples(
        st.sampled_from(["model", "embedding", "rerank"]),
        st.sampled_from(["openai", "anthropic", "cohere"]),
        st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "rerank-v3.5", "nope"]),
        counts,
        counts,
        st.none() | st.integers(min_value=0, max_value=500),
        st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


def _run(plan: list[tuple[Any, ...]]) -> tuple[list[dict[str, Any]], bytes]:
    """Run ``plan`` on a fresh capture; each span's attributes, and the untimed metrics."""
    chainsight.reset()
    cap = capture()
    for kind, provider, model, inp, out, cached, in_request in plan:
        if in_request:
            with (
                chainsight.request("r", feature="f", tenant="t"),
                chainsight.stage(kind, provider=provider, model=model) as stage,
            ):
                stage.record_usage(input_tokens=inp, output_tokens=out, cached_input_tokens=cached)
        else:
            with chainsight.stage(kind, provider=provider, model=model) as stage:
                stage.record_usage(input_tokens=inp, output_tokens=out, cached_input_tokens=cached)
    spans = [dict(span.attributes or {}) for span in cap.spans]
    metrics = b"\n".join(
        line
        for line in generate_latest(cap.registry).splitlines()
        if not any(part in line for part in _TIMED)
    )

    return spans, metrics


def _general_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage_metrics, "record_short", lambda *_args: False)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(plan=calls)
def test_the_short_way_records_what_the_general_path_does(
    plan: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan * 2  # the second half revisits every label set: the short way can run
    fast = _run(plan)
    with monkeypatch.context() as patch:
        _general_only(patch)
        general = _run(plan)
    assert fast == general


def test_the_short_way_is_taken_for_the_common_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # The property above compares something only if the short way runs: count its successes.
    taken: list[bool] = []
    original = usage_metrics.record_short

    def spy(*args: Any) -> bool:
        result = original(*args)
        taken.append(result)
        return result

    monkeypatch.setattr(usage_metrics, "record_short", spy)
    plan = [("model", "openai", "gpt-4o", 1200, 300, None, True)] * 3
    _run(plan)
    assert taken == [False, True, True]  # the first call fills the memo


def test_the_short_way_prices_to_the_bit(chainsight_capture: Capture) -> None:
    price = PriceTable.bundled().lookup("gpt-4o", "openai")
    assert price is not None
    for inp, out in [(1200, 300), (3, 7), (2**53 - 1, 1), (0, 5)]:
        chainsight_capture.clear()
        for _ in range(2):  # the second call takes the short way
            with chainsight.stage("model", provider="openai", model="gpt-4o") as stage:
                stage.record_usage(input_tokens=inp, output_tokens=out)
        expected = cost_usd(price, input_tokens=inp, output_tokens=out)
        costs = [s.attributes.get("chainsight.cost.usd") for s in chainsight_capture.stages]
        assert costs == [expected, expected]


def test_new_prices_are_used_after_configure() -> None:
    chainsight.reset()
    cap = capture()
    for _ in range(2):
        with chainsight.stage("model", provider="openai", model="gpt-4o") as stage:
            stage.record_usage(input_tokens=1000, output_tokens=0)
    chainsight.configure(prices={"openai/gpt-4o": {"unit": "1M_tokens", "input": 100.0}})
    with chainsight.stage("model", provider="openai", model="gpt-4o") as stage:
        stage.record_usage(input_tokens=1000, output_tokens=0)
    costs = [s.attributes.get("chainsight.cost.usd") for s in cap.stages]
    assert costs == [0.0025, 0.0025, 0.1]
