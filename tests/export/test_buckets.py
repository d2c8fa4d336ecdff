"""The latency bucket ladder, and the resolution helper the triage asks what it can tell.

The integration test ``tests/integration/test_latency_resolution.py`` checks the same claim
against a real Prometheus's ``histogram_quantile``.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainsight import _names as n
from chainsight.export.buckets import (
    GENAI_DURATION_BUCKETS,
    STAGE_DURATION_BUCKETS,
    BucketResolution,
    bucket_resolution,
    can_tell_apart,
)

ROOT = Path(__file__).resolve().parents[2]

# The bounds shipped before the finer ladder: dashboards, SLO rules and alerts may match any of
# them literally (le="2.5"), so every one must still exist.
EARLIER_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)


def test_the_ladder_keeps_every_earlier_bound() -> None:
    assert set(EARLIER_BOUNDS) <= set(STAGE_DURATION_BUCKETS)
    assert STAGE_DURATION_BUCKETS == n.LATENCY_BUCKETS
    assert GENAI_DURATION_BUCKETS == n.OPERATION_DURATION_BUCKETS


def test_neighbouring_bounds_are_at_most_one_and_a_half_apart() -> None:
    bounds = STAGE_DURATION_BUCKETS
    assert list(bounds) == sorted(set(bounds))
    assert bounds[0] == 0.005
    assert bounds[-1] >= 60.0
    ratios = [upper / lower for lower, upper in itertools.pairwise(bounds)]
    assert max(ratios) <= 1.5 + 1e-9


@given(st.floats(min_value=0.005, max_value=40.0, exclude_min=True))
def test_twice_as_slow_always_lands_in_another_bucket(latency: float) -> None:
    assert can_tell_apart(latency, 2 * latency)
    assert bucket_resolution(latency).sees(2.0)
    assert bucket_resolution(2 * latency).sees(0.5)


def test_the_slowdown_of_the_issue_is_visible_and_doubling_bounds_hide_some() -> None:
    # 1.66 s -> 4.00 s (2.4x) lands in different buckets of both ladders...
    assert bucket_resolution(1.66) == BucketResolution(1.5, 2.0)
    assert bucket_resolution(4.0) == BucketResolution(3.5, 5.0)
    assert can_tell_apart(1.66, 4.0)
    # ...but a 2x change at 1 s did not, with the earlier bounds: 1.1 s and 2.2 s shared (1, 2.5].
    assert not can_tell_apart(1.1, 2.2, EARLIER_BOUNDS)
    assert can_tell_apart(1.1, 2.2)
    # The GenAI family keeps the conventions' doubling advice: a factor of 2 per bucket.
    assert bucket_resolution(1.66, GENAI_DURATION_BUCKETS) == BucketResolution(1.28, 2.56)
    assert bucket_resolution(1.66, GENAI_DURATION_BUCKETS).factor == pytest.approx(2.0)


def test_a_bound_belongs_to_its_own_bucket_as_le_does() -> None:
    # Prometheus counts an observation equal to a bound in that bound's bucket (le = <=).
    assert bucket_resolution(1.0) == BucketResolution(0.75, 1.0)
    assert bucket_resolution(1.0000001) == BucketResolution(1.0, 1.5)


def test_the_open_ended_buckets_cannot_tell_anything() -> None:
    first = bucket_resolution(0.001)
    last = bucket_resolution(500.0)
    assert first == BucketResolution(0.0, 0.005)
    assert last == BucketResolution(80.0, math.inf)
    assert first.factor == math.inf
    assert last.factor == math.inf
    assert not last.sees(10.0)
    assert not can_tell_apart(100.0, 1000.0)
    assert bucket_resolution(0.0) == BucketResolution(0.0, 0.005)


def test_sees_refuses_meaningless_changes() -> None:
    resolution = bucket_resolution(1.66)
    assert not resolution.sees(1.2)
    assert resolution.sees(1.5)
    for change in (0.0, -2.0, math.nan, math.inf):
        assert not resolution.sees(change)


@pytest.mark.parametrize("latency", [-0.1, math.nan])
def test_a_latency_that_is_not_one_is_a_value_error(latency: float) -> None:
    with pytest.raises(ValueError, match="latency must be a number of seconds"):
        bucket_resolution(latency)


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0)])
def test_bounds_that_are_not_a_ladder_are_a_value_error(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="ascending"):
        bucket_resolution(1.0, bounds)


def test_docs_state_the_bounds_and_the_series_count() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    shown = ", ".join(str(b) for b in STAGE_DURATION_BUCKETS)
    assert shown in text, "docs/metrics.md#buckets does not list the latency bounds"
    # per label set: one series per bound, +Inf, _sum and _count
    assert f"{len(STAGE_DURATION_BUCKETS) + 3} series" in text
