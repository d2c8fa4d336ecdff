"""The bucket bounds of the latency histograms, and what they can tell apart.

A Prometheus histogram knows how many observations fell in each bucket, nothing finer:
``histogram_quantile`` places a quantile inside its bucket by assuming the observations there are
spread evenly. Two latencies in the same bucket are therefore indistinguishable from Prometheus,
however different they were. :func:`bucket_resolution` says, for a latency, which bucket holds
it and by what factor a change must move it to be seen for sure; :func:`can_tell_apart` says
whether two latencies (or two quantile estimates) lie in different buckets.

For the triage and anyone else reading the histograms: pass the bounds of the family read
(:data:`STAGE_DURATION_BUCKETS` for ``chainsight_stage_duration_seconds`` and
``chainsight_request_duration_seconds``, :data:`GENAI_DURATION_BUCKETS` for the GenAI duration and
time to first chunk). Pure functions of their arguments; nothing here touches a registry.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from typing import Final, NamedTuple

from chainsight import _names as n

__all__ = [
    "GENAI_DURATION_BUCKETS",
    "STAGE_DURATION_BUCKETS",
    "BucketResolution",
    "bucket_resolution",
    "can_tell_apart",
]

STAGE_DURATION_BUCKETS: Final[tuple[float, ...]] = n.LATENCY_BUCKETS
"""Upper bounds (seconds) of ``chainsight_stage_duration_seconds`` and
``chainsight_request_duration_seconds``: at most 1.5x apart from 5 ms to 80 s."""

GENAI_DURATION_BUCKETS: Final[tuple[float, ...]] = n.OPERATION_DURATION_BUCKETS
"""Upper bounds (seconds) of ``gen_ai_client_operation_duration_seconds`` and the time to first
chunk: the GenAI conventions' advice, doubling from 0.01 s to 81.92 s."""


class BucketResolution(NamedTuple):
    """The bucket a latency falls in: ``lower < latency <= upper`` (Prometheus's ``le``).

    ``lower`` is 0.0 in the first bucket and ``upper`` is ``math.inf`` past the last bound.
    """

    lower: float
    upper: float

    @property
    def factor(self) -> float:
        """``upper / lower``: a latency change by a smaller factor may stay inside this bucket
        and be invisible; by this factor or more it always leaves it. ``math.inf`` in the first
        and last buckets, which have no finite ratio (nothing there can be told apart)."""
        if self.lower <= 0.0 or math.isinf(self.upper):
            return math.inf
        return self.upper / self.lower

    def sees(self, change: float) -> bool:
        """Whether a change of latency by ``change`` (e.g. 2.0 for twice as slow, or 0.5 for
        twice as fast) from inside this bucket is always visible in the histogram."""
        if not change > 0.0 or math.isinf(change):
            return False
        return max(change, 1.0 / change) >= self.factor


def bucket_resolution(
    latency: float, bounds: Sequence[float] = STAGE_DURATION_BUCKETS
) -> BucketResolution:
    """The bucket of ``bounds`` (ascending upper bounds, in seconds) that holds ``latency``.

    >>> bucket_resolution(1.66)
    BucketResolution(lower=1.5, upper=2.0)
    >>> bucket_resolution(1.66).factor
    1.3333333333333333

    A negative or NaN ``latency``, or bounds that are empty or not ascending, raise
    ``ValueError``: there is no bucket to speak of.
    """
    _check_bounds(bounds)
    if math.isnan(latency) or latency < 0.0:
        raise ValueError(
            f"latency must be a number of seconds >= 0, got {latency!r}; pass the latency or "
            "quantile estimate read from the histogram"
        )
    index = bisect.bisect_left(bounds, latency)  # the first bound >= latency: its le bucket
    lower = float(bounds[index - 1]) if index > 0 else 0.0
    upper = float(bounds[index]) if index < len(bounds) else math.inf
    return BucketResolution(lower, upper)


def can_tell_apart(
    first: float, second: float, bounds: Sequence[float] = STAGE_DURATION_BUCKETS
) -> bool:
    """Whether ``first`` and ``second`` (seconds) fall in different buckets of ``bounds``.

    When they share a bucket, a difference between two ``histogram_quantile`` estimates is the
    interpolation's, not the traffic's: say the histogram cannot tell, and look at the spans.
    """
    return bucket_resolution(first, bounds) != bucket_resolution(second, bounds)


def _check_bounds(bounds: Sequence[float]) -> None:
    if not bounds or any(b >= c for b, c in itertools.pairwise(bounds)):
        raise ValueError(
            f"bounds must be a non-empty ascending sequence of bucket upper bounds, got "
            f"{tuple(bounds)!r}; use STAGE_DURATION_BUCKETS or GENAI_DURATION_BUCKETS"
        )
