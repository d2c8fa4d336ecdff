"""A small timing harness: calibrated batches, interleaved rounds, medians.

On a 2-core machine shared with other work, a neighbour's burst lasts longer than one batch of a
micro-benchmark. Running every case once per round (A/B/C/A/B/C…) spreads each burst over all
cases instead of one, and the median over rounds discards the rounds it hit. Ratios to the
reference are taken within a round, so a slow round slows the reference too.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "BenchmarkError",
    "Case",
    "CaseResult",
    "calibrate",
    "percentile",
    "run_interleaved",
    "run_once",
]


class BenchmarkError(RuntimeError):
    """A benchmark did not measure what it claims (a correctness check failed)."""


@dataclass
class Case:
    """One micro-benchmark: ``run(loops)`` performs the operation ``loops`` times.

    ``setup`` runs before each timed batch, outside the timing (e.g. ``configure()`` for this
    case's settings); ``check`` runs the case once and raises :class:`BenchmarkError` if its
    effects (spans, metrics) are not what the case claims to measure.
    """

    name: str
    description: str
    run: Callable[[int], None]
    setup: Callable[[], None] = lambda: None
    check: Callable[[], None] | None = None
    group: str = "micro"


@dataclass
class CaseResult:
    """Per-call timings of one case over all rounds, and its ratios to the reference."""

    name: str
    description: str
    loops: int
    ns_per_call: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    @property
    def median_ns(self) -> float:
        """Median nanoseconds per call over the rounds."""
        return statistics.median(self.ns_per_call)

    @property
    def median_ratio(self) -> float:
        """Median over rounds of (this case / the reference in the same round)."""
        return statistics.median(self.ratios)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary."""
        return {
            "description": self.description,
            "loops_per_round": self.loops,
            "rounds": len(self.ns_per_call),
            "ns_per_call": round(self.median_ns, 1),
            "ns_p25": round(percentile(self.ns_per_call, 25), 1),
            "ns_p75": round(percentile(self.ns_per_call, 75), 1),
            "ratio_to_R": round(self.median_ratio, 3),
        }


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile of ``values`` by linear interpolation (``pct`` from 0 to 100)."""
    if not values:
        raise ValueError("percentile() of an empty sequence; measure something first")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile pct={pct!r} must be from 0 to 100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * pct / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _time_batch(case: Case, loops: int) -> int:
    case.setup()
    case.run(min(loops, 50))  # warm caches a configure() may have invalidated
    gc.collect()
    start = time.perf_counter_ns()
    case.run(loops)
    return time.perf_counter_ns() - start


def calibrate(case: Case, target_ns: int) -> int:
    """The loop count for which one batch of ``case`` takes about ``target_ns``."""
    loops = 1
    while True:
        elapsed = _time_batch(case, loops)
        if elapsed >= target_ns / 4 or loops >= 10_000_000:
            break
        loops *= 4
    per_call = max(elapsed / loops, 1.0)
    return max(1, int(target_ns / per_call))


def run_interleaved(
    cases: Sequence[Case],
    reference: str,
    *,
    rounds: int,
    target_ns: int,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, CaseResult]:
    """Time every case once per round, in a shuffled order, for ``rounds`` rounds.

    The order changes each round so no case always follows the same neighbour (a case that
    leaves garbage or a busy export thread behind would otherwise always tax the same victim).
    """
    names = [case.name for case in cases]
    if reference not in names:
        raise ValueError(f"reference case {reference!r} is not among the cases {names}")
    loops = {case.name: calibrate(case, target_ns) for case in cases}
    results = {
        case.name: CaseResult(case.name, case.description, loops[case.name]) for case in cases
    }
    shuffler = random.Random(seed)
    order = list(cases)
    for number in range(rounds):
        shuffler.shuffle(order)
        this_round: dict[str, float] = {}
        for case in order:
            this_round[case.name] = _time_batch(case, loops[case.name]) / loops[case.name]
        ref = this_round[reference]
        for name, ns in this_round.items():
            results[name].ns_per_call.append(ns)
            results[name].ratios.append(ns / ref)
        if progress is not None:
            progress(f"round {number + 1}/{rounds}")
    return results


def run_once(cases: Sequence[Case], reference: str) -> dict[str, CaseResult]:
    """Smoke mode: each case's check, then one call of each; no calibration, one round."""
    timings: dict[str, float] = {}
    for case in cases:
        if case.check is not None:
            case.check()
        timings[case.name] = float(_time_batch(case, 1))
    ref = timings[reference]
    return {
        case.name: CaseResult(
            case.name, case.description, 1, [timings[case.name]], [timings[case.name] / ref]
        )
        for case in cases
    }
