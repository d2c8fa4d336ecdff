"""Where the incident began: one change point in each domain's error and latency series.

A fixed window (a quarter of the file) hides an incident longer than it: the baseline then holds
the incident too. Instead, each domain's series is searched for the one split that best explains
it as "before" and "worse after", by likelihood ratio:

- **errors**: the requests in time order, each touched by a failure in the domain or not (a
  Bernoulli series); the split maximises the log-likelihood ratio of two rates against one;
- **latency**: the domain's stage calls in time order, as log durations (a slowdown multiplies
  durations); the split maximises the log-likelihood ratio of two means against one, with the
  variance within the two parts.

A split counts only when the part after is clearly worse (errors: at least 2 points more and
1.5 times the rate before; latency: a geometric mean at least 1.5 times the one before), each
part holds at least :data:`MIN_SEGMENT` events, and the ratio is at least :data:`MIN_LLR`
(:data:`MIN_LATENCY_LLR` for latency), above what noise reaches. The most evident change over
all domains wins; its time is the onset.
It sees one change: an incident that has ended, or two in a row, gives the most evident edge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MIN_LATENCY_LLR",
    "MIN_LLR",
    "MIN_SEGMENT",
    "Onset",
    "error_change",
    "find_onset",
    "latency_change",
]

#: Events each side of a split needs, so a handful of early failures is never an "incident".
MIN_SEGMENT: Final = 20
#: Log-likelihood ratio an error change needs. The best split of a healthy series reaches about
#: 5, rarely 8 (simulated: rates 0.4-10%, 200-3000 requests); 20 failures in 240 requests after
#: 290 clean ones score about 15.
MIN_LLR: Final = 10.0
#: A latency change needs more: durations drift with the machine's load, and a busy host moves
#: every call's duration a little at once.
MIN_LATENCY_LLR: Final = 15.0
#: An error rate after the split must exceed the one before by this much (absolute) ...
MIN_RATE_EXCESS: Final = 0.02
#: ... and be at least this multiple of it; latency's geometric mean must grow this much too.
MIN_FACTOR: Final = 1.5
#: Candidate splits evaluated per series: past this, every n-th position (long files stay fast).
_MAX_CANDIDATES: Final = 4000


@dataclass(frozen=True)
class Onset:
    """A change point: when it began, in which domain, on which signal, how evident it is."""

    at: float
    domain: str
    signal: str
    llr: float


def _bernoulli(successes: float, count: float) -> float:
    """The log-likelihood of ``successes`` in ``count`` trials at their own rate."""
    if count <= 0 or successes <= 0 or successes >= count:
        return 0.0
    p = successes / count
    return successes * math.log(p) + (count - successes) * math.log(1 - p)


def _positions(n: int) -> range:
    step = max(1, (n - 2 * MIN_SEGMENT) // _MAX_CANDIDATES)
    return range(MIN_SEGMENT, n - MIN_SEGMENT + 1, step)


def error_change(times: Sequence[float], bad: Sequence[bool]) -> tuple[float, float] | None:
    """``(onset time, llr)`` of the best upward change of the rate of ``bad``, or ``None``."""
    n = len(bad)
    if n < 2 * MIN_SEGMENT:
        return None
    sums = [0]
    for flag in bad:
        sums.append(sums[-1] + (1 if flag else 0))
    total = sums[-1]
    whole = _bernoulli(total, n)
    best: tuple[float, int] | None = None
    for k in _positions(n):
        before, after = sums[k] / k, (total - sums[k]) / (n - k)
        if after - before < MIN_RATE_EXCESS or after < MIN_FACTOR * before:
            continue
        llr = _bernoulli(sums[k], k) + _bernoulli(total - sums[k], n - k) - whole
        if best is None or llr > best[0]:
            best = (llr, k)
    if best is None or best[0] < MIN_LLR:
        return None
    llr, k = best
    return (times[k - 1] + times[k]) / 2, llr


def binned_error_change(
    ends: Sequence[float], bad: Sequence[float], totals: Sequence[float]
) -> tuple[float, float] | None:
    """The same search over counts per time bin (from Prometheus): bin ``i`` ends at
    ``ends[i]`` and holds ``bad[i]`` failing requests of ``totals[i]``. Each side of the split
    needs :data:`MIN_SEGMENT` requests; the onset is the end of the last bin before it."""
    bins = len(totals)
    sums, counts = [0.0], [0.0]
    for b, t in zip(bad, totals, strict=True):
        sums.append(sums[-1] + min(b, t))
        counts.append(counts[-1] + t)
    whole = _bernoulli(sums[-1], counts[-1])
    best: tuple[float, int] | None = None
    for k in range(1, bins):
        before, after = counts[k], counts[-1] - counts[k]
        if before < MIN_SEGMENT or after < MIN_SEGMENT:
            continue
        rate_before, rate_after = sums[k] / before, (sums[-1] - sums[k]) / after
        if rate_after - rate_before < MIN_RATE_EXCESS or rate_after < MIN_FACTOR * rate_before:
            continue
        llr = _bernoulli(sums[k], before) + _bernoulli(sums[-1] - sums[k], after) - whole
        if best is None or llr > best[0]:
            best = (llr, k)
    if best is None or best[0] < MIN_LLR:
        return None
    return ends[best[1] - 1], best[0]


def latency_change(times: Sequence[float], seconds: Sequence[float]) -> tuple[float, float] | None:
    """``(onset time, llr)`` of the best upward shift of log durations, or ``None``."""
    n = len(seconds)
    if n < 2 * MIN_SEGMENT:
        return None
    logs = [math.log(max(s, 1e-6)) for s in seconds]
    sums, squares = [0.0], [0.0]
    for value in logs:
        sums.append(sums[-1] + value)
        squares.append(squares[-1] + value * value)

    def spread(lo: int, hi: int) -> float:
        """Sum of squared deviations from the mean of ``logs[lo:hi]``."""
        total = sums[hi] - sums[lo]
        return max(squares[hi] - squares[lo] - total * total / (hi - lo), 0.0)

    # A floor on the variance: identical durations (a synthetic file, a cached stage) must not
    # make any shift infinitely evident. 1% of a log unit is far below real jitter.
    floor = 1e-4 * n
    whole = spread(0, n) + floor
    best: tuple[float, int] | None = None
    for k in _positions(n):
        mean_before, mean_after = sums[k] / k, (sums[n] - sums[k]) / (n - k)
        if mean_after - mean_before < math.log(MIN_FACTOR):
            continue
        llr = n / 2 * math.log(whole / (spread(0, k) + spread(k, n) + floor))
        if best is None or llr > best[0]:
            best = (llr, k)
    if best is None or best[0] < MIN_LATENCY_LLR:
        return None
    llr, k = best
    return (times[k - 1] + times[k]) / 2, llr


def find_onset(
    requests: Sequence[tuple[float, frozenset[str]]],
    calls: Sequence[tuple[float, str, float]],
    domains: Sequence[str],
) -> Onset | None:
    """The most evident change over ``domains``: ``requests`` are ``(end, domains touched)``,
    ``calls`` ``(end, domain, seconds)``, both in time order."""
    found: list[Onset] = []
    times = [t for t, _ in requests]
    for domain in domains:
        change = error_change(times, [domain in touched for _, touched in requests])
        if change is not None:
            found.append(Onset(change[0], domain, "errors", change[1]))
        mine = [(t, s) for t, d, s in calls if d == domain]
        change = latency_change([t for t, _ in mine], [s for _, s in mine])
        if change is not None:
            found.append(Onset(change[0], domain, "latency", change[1]))
    return max(found, key=lambda o: o.llr, default=None)
