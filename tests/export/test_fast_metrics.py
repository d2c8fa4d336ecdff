"""``chainsight.export.fast_metrics`` against the installed prometheus-client.

The fast classes write a labelled child's values directly and find a histogram bucket with
``bisect``. These tests fail when a client upgrade changes the code they shortcut (the
fingerprints), or when a sequence of writes gives a different exposition or a different error
through the fast classes than through the client's own: then re-read the client's new code
against ``export/fast_metrics.py``, adapt it, and update the fingerprints.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.values import MutexValue

from chainsight._names import LATENCY_BUCKETS
from chainsight.export.fast_metrics import FastCounter, FastGauge, FastHistogram
from chainsight.export.metric_families import StageDuration, Tokens
from tests._fingerprint import fingerprint

# sha256 (first 16 hex digits) of the client code the fast classes reproduce or rely on, as in
# prometheus-client 0.26.0.
_FINGERPRINTS: dict[str, tuple[Callable[..., Any], str]] = {
    "Counter.inc": (Counter.inc, "a974907585d081bb"),
    "Gauge.inc": (Gauge.inc, "e705c1cdd8caf96f"),
    "Gauge.dec": (Gauge.dec, "90a3666bc9b2f5e8"),
    "Histogram.observe": (Histogram.observe, "38beca3be1d1595b"),
    "Histogram._prepare_buckets": (Histogram._prepare_buckets, "e857c68ce98710d9"),
    "Histogram._metric_init": (Histogram._metric_init, "61aeac1b768d4786"),
    "MetricWrapperBase._is_observable": (MetricWrapperBase._is_observable, "8b11dfaa5144c496"),
    "MetricWrapperBase._raise_if_not_observable": (
        MetricWrapperBase._raise_if_not_observable,
        "711b6c97ff265d9f",
    ),
    "MetricWrapperBase.labels": (MetricWrapperBase.labels, "9c643d18655cb7f6"),
    "MutexValue.inc": (MutexValue.inc, "cbb724b5da1f910c"),
}


@pytest.mark.parametrize("name", sorted(_FINGERPRINTS))
def test_the_client_code_the_fast_classes_shortcut_is_unchanged(name: str) -> None:
    func, expected = _FINGERPRINTS[name]
    found = fingerprint(func)
    assert found == expected, (
        f"prometheus-client's {name} changed (fingerprint {found}, expected {expected}); "
        "chainsight.export.fast_metrics shortcuts it: compare the new code with "
        "export/fast_metrics.py, adapt it, then update _FINGERPRINTS"
    )


def test_the_families_chainsight_writes_use_the_fast_classes() -> None:
    registry = CollectorRegistry()
    stage = StageDuration(registry).child(
        stage="s", kind="model", system="openai", outcome="ok", release="r"
    )
    tokens = Tokens(registry).metric.labels("openai", "gpt-4o", "input", "f", "t")
    assert type(stage) is FastHistogram
    assert type(tokens) is FastCounter


amounts = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([*LATENCY_BUCKETS, 0.0, -0.0]),  # exactly on a bound: the bucket is <=
)
exemplars = st.none() | st.just({"trace_id": "abc"})
# (labelled child or the parent, method, amount, exemplar)
writes = st.lists(
    st.tuples(st.booleans(), st.sampled_from(["inc", "dec", "observe"]), amounts, exemplars),
    max_size=25,
)


def _apply(
    kinds: tuple[type[Counter], type[Gauge], type[Histogram]], ops: Any
) -> tuple[bytes, list[str]]:
    """Run ``ops`` on a counter, gauge and histogram of ``kinds``; the exposition and errors."""
    counter_class, gauge_class, histogram_class = kinds
    registry = CollectorRegistry()
    counter = counter_class("c", "c", ("l",), registry=registry)
    gauge = gauge_class("g", "g", ("l",), registry=registry)
    histogram = histogram_class("h", "h", ("l",), registry=registry, buckets=LATENCY_BUCKETS)
    errors: list[str] = []
    for child, method, amount, exemplar in ops:
        try:
            if method == "observe":
                target: Any = histogram.labels("x") if child else histogram
                target.observe(amount, exemplar)
            elif method == "inc" and exemplar is not None:
                (counter.labels("x") if child else counter).inc(amount, exemplar)
            elif method == "inc":
                (gauge.labels("x") if child else gauge).inc(amount)
                (counter.labels("x") if child else counter).inc(amount)
            else:
                (gauge.labels("x") if child else gauge).dec(amount)
        except (ValueError, TypeError) as exc:
            errors.append(f"{method}: {type(exc).__name__}: {exc}")
    exposition = b"\n".join(
        line for line in generate_latest(registry).splitlines() if b"_created" not in line
    )
    return exposition, errors


@settings(max_examples=300, deadline=None)
@given(ops=writes)
def test_fast_classes_expose_and_raise_what_the_client_does(ops: Any) -> None:
    assert _apply((FastCounter, FastGauge, FastHistogram), ops) == _apply(
        (Counter, Gauge, Histogram), ops
    )


def test_the_comparison_sees_a_wrong_bucket() -> None:
    # The property above would pass vacuously if both sides were the same code: a histogram
    # that puts a value on a bound into the next bucket must differ from the client.
    class OffByOne(FastHistogram):
        def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
            from bisect import bisect_right

            if not self._labelvalues or amount != amount or exemplar:  # noqa: PLR0124
                super().observe(amount, exemplar)
                return
            self._sum.inc(amount)
            index = min(bisect_right(self._upper_bounds, amount), len(self._buckets) - 1)
            self._buckets[index].inc(1)

    ops = [(True, "observe", LATENCY_BUCKETS[3], None)]
    wrong = _apply((FastCounter, FastGauge, OffByOne), ops)
    assert wrong != _apply((Counter, Gauge, Histogram), ops)
    assert _apply((FastCounter, FastGauge, FastHistogram), ops) == _apply(
        (Counter, Gauge, Histogram), ops
    )


def test_a_mostrecent_gauge_still_refuses_inc() -> None:
    gauge = FastGauge("g", "g", ("l",), registry=None, multiprocess_mode="mostrecent")
    with pytest.raises(RuntimeError, match="mostrecent"):
        gauge.labels("x").inc()
    assert math.isfinite(gauge.labels("x")._value.get())
