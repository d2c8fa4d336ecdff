"""The figures of one period, whatever the source: counts by fault domain and latencies.

A span file gives exact durations (:class:`SampleLatency`), Prometheus cumulative histogram
buckets (:class:`BucketLatency`); the analysis sees both through :class:`LatencyDistribution`.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from chainsight import _names as n

__all__ = [
    "FAILED_OUTCOMES",
    "QUANTILE",
    "REQUEST_KIND",
    "BucketLatency",
    "LatencyDistribution",
    "Period",
    "ReleaseFigures",
    "SampleLatency",
    "Tally",
    "bucket_quantile",
    "domain_of_kind",
]

# Which fault domain a stage kind's latency and fallbacks belong to (architecture.md, "The model").
_KIND_DOMAIN: Final[Mapping[str, str]] = {
    "model": n.FAULT_PROVIDER,
    "embedding": n.FAULT_PROVIDER,
    "retrieval": n.FAULT_VECTOR_STORE,
    "validation": n.FAULT_MODEL,
}
#: The latency quantile triage compares.
QUANTILE: Final = 0.95
#: The stage kind of a request span (the root of a trace).
REQUEST_KIND: Final = "request"
#: Outcomes that count a request or a stage as touched by a fault.
FAILED_OUTCOMES: Final = frozenset({n.OUTCOME_ERROR, n.OUTCOME_DEGRADED})


class Tally(dict[str, float]):
    """Counts by name, with float values (Prometheus ``increase()`` extrapolates)."""

    def __missing__(self, key: str) -> float:
        return 0.0

    def most_common(self, k: int | None = None) -> list[tuple[str, float]]:
        """The ``k`` largest entries, biggest first; ties keep insertion order."""
        ranked = sorted(self.items(), key=lambda item: -item[1])
        return ranked if k is None else ranked[:k]


def domain_of_kind(kind: str) -> str:
    """The fault domain whose health a stage of ``kind`` reflects (``app`` for local work)."""
    return _KIND_DOMAIN.get(kind, n.FAULT_APP)


# --- latency distributions ----------------------------------------------------------------------


class LatencyDistribution(Protocol):
    """What the analysis needs of a latency distribution, exact or bucketed."""

    @property
    def count(self) -> float:
        """Number of observations."""

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile in seconds, or ``None`` without observations."""

    def fraction_above(self, seconds: float) -> float:
        """The fraction of observations slower than ``seconds`` (0 without observations)."""


@dataclass
class SampleLatency:
    """Exact durations, from a span file."""

    samples: list[float] = field(default_factory=list)
    _sorted: bool = field(default=False, repr=False)

    def add(self, seconds: float) -> None:
        """Record one observation."""
        self.samples.append(seconds)
        self._sorted = False

    def _ordered(self) -> list[float]:
        if not self._sorted:
            self.samples.sort()
            self._sorted = True
        return self.samples

    @property
    def count(self) -> float:
        """Number of observations."""
        return float(len(self.samples))

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile: the smallest sample with at least ``q`` of samples at or below."""
        data = self._ordered()
        if not data:
            return None
        index = max(0, math.ceil(q * len(data)) - 1)
        return data[min(index, len(data) - 1)]

    def fraction_above(self, seconds: float) -> float:
        """Fraction of samples strictly slower than ``seconds``."""
        data = self._ordered()
        if not data:
            return 0.0
        return (len(data) - bisect.bisect_right(data, seconds)) / len(data)


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated as PromQL's histogram_quantile.

    ``buckets`` are ``(upper bound, cumulative count)`` pairs, ``math.inf`` for ``+Inf``, in any
    order. Returns ``None`` when the histogram is empty. A rank in the ``+Inf`` bucket gives the
    highest finite bound, as Prometheus does.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    # Counts from increase() can be slightly non-monotonic; enforce it as Prometheus does.
    fixed: list[tuple[float, float]] = []
    running = 0.0
    for bound, count in ordered:
        running = max(running, count)
        fixed.append((bound, running))
    total = fixed[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in fixed:
        if count >= rank and count > 0:
            if math.isinf(bound):
                finite = [b for b, _ in fixed if not math.isinf(b)]
                return finite[-1] if finite else None
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return None  # pragma: no cover - rank <= total always finds a bucket


@dataclass
class BucketLatency:
    """A histogram's cumulative buckets summed over series, from Prometheus."""

    buckets: dict[float, float] = field(default_factory=dict)

    def add(self, upper_bound: float, cumulative: float) -> None:
        """Add one series' cumulative count for bucket ``le=upper_bound``."""
        self.buckets[upper_bound] = self.buckets.get(upper_bound, 0.0) + cumulative

    @property
    def count(self) -> float:
        """Number of observations (the ``+Inf`` bucket)."""
        return self.buckets.get(math.inf, max(self.buckets.values(), default=0.0))

    def quantile(self, q: float) -> float | None:
        """Interpolated quantile, as ``histogram_quantile`` computes it."""
        return bucket_quantile(q, list(self.buckets.items()))

    def fraction_above(self, seconds: float) -> float:
        """Fraction slower than ``seconds``, interpolating linearly inside the bucket."""
        total = self.count
        if total <= 0:
            return 0.0
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in sorted(self.buckets.items()):
            if seconds < bound:
                if math.isinf(bound):
                    at_or_below = lower_count
                else:
                    share = (seconds - lower_bound) / (bound - lower_bound)
                    at_or_below = lower_count + max(0.0, share) * (count - lower_count)
                return max(0.0, min(1.0, 1.0 - at_or_below / total))
            lower_bound, lower_count = bound, count
        return 0.0


# --- the figures of one period ------------------------------------------------------------------


@dataclass
class Period:
    """Everything the analysis knows about one time range, whatever the source.

    ``affected`` counts requests touched by an error or fallback in a domain; the other counters
    are keyed by domain. ``components`` holds provider/model, vector store or stage names.

    What the user saw is counted apart from what failed upstream: ``failed`` (the request's
    outcome was ``error``) and ``degraded`` (a fallback served it) by the domain of the failure,
    ``absorbed`` the requests served normally although a stage of theirs failed in the domain (a
    retry or a handler absorbed it), ``absorbed_failures`` those stage failures and ``retries``
    the repeated attempts of one stage under one parent. ``releases`` holds the same facts by
    release id (``triage_releases``).
    """

    requests: float = 0.0
    affected: Tally = field(default_factory=Tally)
    failed: Tally = field(default_factory=Tally)
    degraded: Tally = field(default_factory=Tally)
    absorbed: Tally = field(default_factory=Tally)
    absorbed_failures: Tally = field(default_factory=Tally)
    retries: Tally = field(default_factory=Tally)
    fallback_stages: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    errors: Tally = field(default_factory=Tally)
    error_types: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    stages: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    components: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    fallbacks: Tally = field(default_factory=Tally)
    latency: Mapping[str, LatencyDistribution] = field(default_factory=dict)
    stage_latency: Mapping[str, Mapping[str, LatencyDistribution]] = field(default_factory=dict)
    component_latency: Mapping[str, Mapping[str, LatencyDistribution]] = field(default_factory=dict)
    releases: dict[str, ReleaseFigures] = field(default_factory=dict)

    @property
    def user_failed(self) -> float:
        """Requests whose outcome was ``error``, whatever the domain."""
        return min(sum(self.failed.values()), self.requests)

    @property
    def user_degraded(self) -> float:
        """Requests a fallback served, whatever the domain."""
        return min(sum(self.degraded.values()), self.requests)


@dataclass
class ReleaseFigures:
    """One release's requests in one period: failures by domain, latency, cost, validation.

    ``keys`` are the parts of the release (``{"prompt": "answer@8", "model": ...}``), from the
    ``chainsight.release.<key>`` span attributes or parsed from a ``key=value,...`` id.
    """

    release: str
    keys: dict[str, str] = field(default_factory=dict)
    requests: float = 0.0
    affected: Tally = field(default_factory=Tally)
    failed: Tally = field(default_factory=Tally)
    validation_failures: float = 0.0
    latency: LatencyDistribution | None = None
    cost_usd: float | None = None

    def ratio(self, domain: str) -> float:
        """The share of this release's requests touched by a failure in ``domain``."""
        return min(self.affected[domain] / self.requests, 1.0) if self.requests > 0 else 0.0

    @property
    def validation_ratio(self) -> float:
        """The share of this release's requests whose answer failed validation."""
        return min(self.validation_failures / self.requests, 1.0) if self.requests > 0 else 0.0

    @property
    def cost_per_request(self) -> float | None:
        """Mean cost of a request in USD, ``None`` when no cost was recorded."""
        if self.cost_usd is None or self.requests <= 0:
            return None
        return self.cost_usd / self.requests
