"""``chainsight triage``: name the failing fault domain from Prometheus or a JSONL span file.

Both sources are reduced to the same figures for two periods, *now* (the last window) and the
*baseline* (the time before it): requests finished, requests touched by an error or a fallback
in each fault domain, error types, the stage and component they came from, and stage latency
distributions. :func:`analyse` turns the two periods into a :class:`Report` whose verdict names
the most likely failing domain, or ``healthy``. ``docs/triage.md`` explains the rules.

Exit codes: 0 healthy, 1 a fault was found, 2 usage, file or connection errors.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final, Protocol

from chainsight import _names as n
from chainsight.errors import TriageError

__all__ = [
    "BucketLatency",
    "DomainFigures",
    "Fault",
    "LatencyDistribution",
    "Period",
    "Report",
    "SampleLatency",
    "Tally",
    "TriageError",
    "add_arguments",
    "analyse",
    "bucket_quantile",
    "domain_of_kind",
    "format_duration",
    "from_prometheus",
    "from_spans",
    "parse_duration",
    "render_text",
    "run",
    "triage",
]

HEALTHY: Final = "healthy"
QUANTILE: Final = 0.95

# Thresholds. They are deliberately coarse: triage is a first look for the on-call engineer, and a
# false alarm on a healthy service costs more trust than a small fault found a minute later.
#: An error signal needs the domain's error ratio to rise by at least this much (absolute) ...
MIN_ERROR_EXCESS: Final = 0.02
#: ... to at least this multiple of the baseline ratio ...
MIN_ERROR_FACTOR: Final = 1.5
#: ... and at least this many affected requests in the window.
MIN_ERROR_EVENTS: Final = 3.0
#: A ratio this high is a fault even if the baseline was as bad (the incident began earlier).
HIGH_ERROR_RATIO: Final = 0.10
#: A latency signal needs p95 to reach this multiple of the baseline p95 ...
LATENCY_FACTOR: Final = 2.0
#: ... and to grow by at least this many seconds, so that millisecond jitter in local stages
#: (CPU contention, garbage collection) never reads as a fault.
MIN_LATENCY_INCREASE_S: Final = 0.1
#: ... over at least this many stage calls in the window ...
MIN_LATENCY_SAMPLES: Final = 10.0
#: ... and at least this share of calls (more than in the baseline) must be that slow: a p95
#: pushed up by a few stalls (a GC pause, a busy CPU) is not a slow component.
MIN_SLOW_EXCESS: Final = 0.10

# Which fault domain a stage kind's latency and fallbacks belong to (architecture.md, "The model").
_KIND_DOMAIN: Final[Mapping[str, str]] = {
    "model": n.FAULT_PROVIDER,
    "embedding": n.FAULT_PROVIDER,
    "retrieval": n.FAULT_VECTOR_STORE,
    "validation": n.FAULT_MODEL,
}
_REQUEST_KIND: Final = "request"
# error.type values of a model-call failure that are the app's or the model's, not the provider's.
_NOT_PROVIDER_ERRORS: Final = frozenset(
    {
        n.ERR_BAD_REQUEST,
        n.ERR_AUTH,
        n.ERR_NOT_FOUND,
        n.ERR_CONTEXT_LENGTH,
        n.ERR_VALIDATION_FAILED,
        n.ERR_EMPTY_OUTPUT,
        n.ERR_CONTENT_FILTER,
        n.ERR_MALFORMED_OUTPUT,
        n.ERR_BUDGET_EXCEEDED,
    }
)
_FAILED_OUTCOMES: Final = frozenset({n.OUTCOME_ERROR, n.OUTCOME_DEGRADED})


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


# --- durations ----------------------------------------------------------------------------------

_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS: Final[Mapping[str, float]] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}


def parse_duration(text: str) -> float:
    """Parse a PromQL-style duration (``90s``, ``10m``, ``1h30m``, ``500ms``) into seconds.

    A bare number is taken as seconds. Raises :class:`TriageError` for anything else.
    """
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _DURATION_RE.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(value) or not value:
            raise TriageError(
                f"duration {text!r} is not understood; write it like Prometheus does, "
                "e.g. '30s', '10m', '1h30m' (or a number of seconds)"
            ) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise TriageError(f"duration {text!r} must be a positive length of time, e.g. '10m'")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds as a short PromQL duration (``1h30m``, ``45s``, ``250ms``)."""
    millis = round(seconds * 1000)
    if millis <= 0:
        return "0s"
    if millis % 1000:
        return f"{millis}ms"
    rest = millis // 1000
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def _parse_time(text: str) -> float:
    """Parse ``--at``: Unix seconds or an ISO 8601 / RFC 3339 timestamp."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise TriageError(
            f"--at {text!r} is not a time; give Unix seconds (1718000000) or an RFC 3339 "
            "timestamp (2024-06-10T06:13:20Z)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


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
    """

    requests: float = 0.0
    affected: Tally = field(default_factory=Tally)
    errors: Tally = field(default_factory=Tally)
    error_types: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    stages: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    components: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    fallbacks: Tally = field(default_factory=Tally)
    latency: Mapping[str, LatencyDistribution] = field(default_factory=dict)
    stage_latency: Mapping[str, Mapping[str, LatencyDistribution]] = field(default_factory=dict)
    component_latency: Mapping[str, Mapping[str, LatencyDistribution]] = field(default_factory=dict)


@dataclass
class DomainFigures:
    """The per-domain figures a report shows."""

    domain: str
    error_ratio: float
    error_ratio_baseline: float | None
    affected: float
    top_error_types: list[tuple[str, float]]
    p95_seconds: float | None
    p95_seconds_baseline: float | None
    latency_samples: float
    slow_fraction: float
    fallback_rate: float
    fallback_rate_baseline: float | None
    stage: str | None
    component: str | None
    signals: list[str]
    score: float
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of these figures (``domains.<name>`` in ``--json``)."""
        return {
            "error_ratio": {"now": _r(self.error_ratio), "baseline": _r(self.error_ratio_baseline)},
            "affected_requests": _r(self.affected),
            "top_error_types": [{"type": t, "count": _r(c)} for t, c in self.top_error_types],
            "p95_seconds": {
                "now": _r(self.p95_seconds),
                "baseline": _r(self.p95_seconds_baseline),
            },
            "latency_samples": _r(self.latency_samples),
            "fallback_rate": {
                "now": _r(self.fallback_rate),
                "baseline": _r(self.fallback_rate_baseline),
            },
            "stage": self.stage,
            "component": self.component,
            "signals": self.signals,
            "score": _r(self.score),
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class Fault:
    """One failing domain in the verdict."""

    domain: str
    component: str | None
    evidence: str
    score: float


@dataclass
class Report:
    """The outcome of a triage: figures per domain and the verdict (faults, biggest first)."""

    source: str
    at: float
    window_seconds: float
    baseline_seconds: float | None
    requests: float
    requests_baseline: float
    domains: dict[str, DomainFigures]
    faults: list[Fault]

    @property
    def healthy(self) -> bool:
        """True when no domain shows a fault."""
        return not self.faults

    def verdict_line(self) -> str:
        """The one line an on-call engineer reads first."""
        if not self.faults:
            return f"verdict: {HEALTHY} - {self._healthy_evidence()}"
        parts = []
        for fault in self.faults:
            where = f" in {fault.component}" if fault.component else ""
            parts.append(f"{fault.domain}{where}: {fault.evidence}")
        first, *rest = parts
        line = f"verdict: {first}"
        if rest:
            line += "; also " + "; also ".join(rest)
        return line

    def _healthy_evidence(self) -> str:
        return (
            f"no fault domain's error ratio or p95 latency rose past the thresholds over "
            f"{_count(self.requests)} requests in the last {format_duration(self.window_seconds)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object: ``verdict.domain/component/evidence/faults`` and ``domains``."""
        if self.faults:
            top = self.faults[0]
            verdict: dict[str, Any] = {
                "domain": top.domain,
                "component": top.component,
                "evidence": top.evidence,
            }
        else:
            verdict = {"domain": HEALTHY, "component": None, "evidence": self._healthy_evidence()}
        verdict["faults"] = [
            {
                "domain": f.domain,
                "component": f.component,
                "evidence": f.evidence,
                "score": _r(f.score),
            }
            for f in self.faults
        ]
        verdict["line"] = self.verdict_line()
        return {
            "source": self.source,
            "at": datetime.fromtimestamp(self.at, tz=timezone.utc).isoformat(),
            "window_seconds": _r(self.window_seconds),
            "baseline_seconds": _r(self.baseline_seconds),
            "requests": {"now": _r(self.requests), "baseline": _r(self.requests_baseline)},
            "verdict": verdict,
            "domains": {name: figures.to_dict() for name, figures in self.domains.items()},
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _count(value: float) -> str:
    return str(round(value)) if value >= 10 or value == round(value) else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


# --- the analysis ---------------------------------------------------------------------------


def _top(counter: Tally | None) -> str | None:
    if not counter:
        return None
    ((name, _),) = counter.most_common(1)
    return name


def _slowest_grown(
    now: Mapping[str, LatencyDistribution], baseline: Mapping[str, LatencyDistribution]
) -> str | None:
    """The key whose p95 grew the most against its own baseline."""
    best: tuple[float, str] | None = None
    for key, dist in now.items():
        p_now = dist.quantile(QUANTILE)
        before = baseline.get(key)
        p_base = before.quantile(QUANTILE) if before is not None else None
        if p_now is None or p_base is None or p_base <= 0:
            continue
        growth = p_now / p_base
        if best is None or growth > best[0]:
            best = (growth, key)
    return best[1] if best else None


@dataclass(frozen=True)
class _Slow:
    score: float
    fraction: float
    stage: str | None
    component: str | None
    evidence: str


def _latency_signal(domain: str, now: Period, base: Period | None) -> _Slow | None:
    """A latency fault in ``domain``: p95 at least doubled, by a noticeable amount."""
    dist = now.latency.get(domain)
    base_dist = base.latency.get(domain) if base is not None else None
    if dist is None or base_dist is None:
        return None
    p95, p95_base = dist.quantile(QUANTILE), base_dist.quantile(QUANTILE)
    if p95 is None or p95_base is None or p95_base <= 0:
        return None
    if not (
        dist.count >= MIN_LATENCY_SAMPLES
        and p95 >= p95_base * LATENCY_FACTOR
        and p95 - p95_base >= MIN_LATENCY_INCREASE_S
    ):
        return None
    threshold = max(p95_base * LATENCY_FACTOR, p95_base + MIN_LATENCY_INCREASE_S)
    fraction = dist.fraction_above(threshold)
    # Score: the share of calls this slowdown added, comparable with an error ratio's excess.
    score = max(0.0, fraction - base_dist.fraction_above(threshold))
    if score < MIN_SLOW_EXCESS:
        return None
    stage = _slowest_grown(
        now.stage_latency.get(domain, {}),
        base.stage_latency.get(domain, {}) if base is not None else {},
    )
    component = _slowest_grown(
        now.component_latency.get(domain, {}),
        base.component_latency.get(domain, {}) if base is not None else {},
    )
    evidence = (
        f"p95 latency {_secs(p95)} vs {_secs(p95_base)} baseline ({p95 / p95_base:.1f}x), "
        f"{_pct(fraction)} of calls slower than {_secs(threshold)}"
        + (f" at stage {stage}" if stage else "")
    )
    return _Slow(score, fraction, stage, component, evidence)


def _domain(domain: str, now: Period, base: Period | None) -> DomainFigures:
    requests = now.requests
    affected = min(now.affected[domain], requests)
    ratio = affected / requests if requests > 0 else 0.0
    ratio_base: float | None = None
    fallback_base: float | None = None
    if base is not None and base.requests > 0:
        ratio_base = min(base.affected[domain], base.requests) / base.requests
        fallback_base = min(base.fallbacks[domain] / base.requests, 1.0)
    fallback_rate = min(now.fallbacks[domain] / requests, 1.0) if requests > 0 else 0.0
    dist = now.latency.get(domain)
    base_dist = base.latency.get(domain) if base is not None else None
    p95 = dist.quantile(QUANTILE) if dist is not None else None
    p95_base = base_dist.quantile(QUANTILE) if base_dist is not None else None
    samples = dist.count if dist is not None else 0.0

    signals: list[str] = []
    score = 0.0
    evidence: list[str] = []
    errors_excess = ratio - (ratio_base or 0.0)
    error_signal = affected >= MIN_ERROR_EVENTS and (
        (errors_excess >= MIN_ERROR_EXCESS and ratio >= MIN_ERROR_FACTOR * (ratio_base or 0.0))
        or ratio >= HIGH_ERROR_RATIO
    )
    top_types = now.error_types.get(domain, Tally()).most_common(3)
    stage = _top(now.stages.get(domain))
    component = _top(now.components.get(domain))
    if error_signal:
        signals.append("errors")
        score = max(score, errors_excess, ratio if ratio >= HIGH_ERROR_RATIO else 0.0)
        text = f"{_pct(ratio)} of requests failed or fell back (baseline {_pct(ratio_base)})"
        if top_types:
            text += ", mostly " + ", ".join(f"{t} ({_count(c)})" for t, c in top_types[:2])
        if stage:
            text += f" at stage {stage}"
        evidence.append(text)

    slow = _latency_signal(domain, now, base)
    if slow is not None:
        signals.append("latency")
        score = max(score, slow.score)
        evidence.append(slow.evidence)
        if not error_signal:
            stage = slow.stage or stage
            component = slow.component or component
    if domain in (n.FAULT_APP, n.FAULT_MODEL) and stage:
        component = stage
    if fallback_rate > 0 and signals:
        evidence.append(f"fallback rate {_pct(fallback_rate)} (baseline {_pct(fallback_base)})")
    return DomainFigures(
        domain=domain,
        error_ratio=ratio,
        error_ratio_baseline=ratio_base,
        affected=affected,
        top_error_types=top_types,
        p95_seconds=p95,
        p95_seconds_baseline=p95_base,
        latency_samples=samples,
        slow_fraction=slow.fraction if slow is not None else 0.0,
        fallback_rate=fallback_rate,
        fallback_rate_baseline=fallback_base,
        stage=stage,
        component=component,
        signals=signals,
        score=score,
        evidence="; ".join(evidence),
    )


def analyse(
    now: Period,
    baseline: Period | None,
    *,
    source: str,
    at: float,
    window_seconds: float,
    baseline_seconds: float | None,
) -> Report:
    """Compare ``now`` with ``baseline`` per fault domain and rank the failing domains.

    A domain is failing when its error ratio rose (or is high) or its p95 stage latency at least
    doubled; its score is the fraction of requests (or calls) the fault added, so faults rank
    biggest first.
    """
    domains = {d: _domain(d, now, baseline) for d in n.FAULTS}
    faults = sorted(
        (Fault(f.domain, f.component, f.evidence, f.score) for f in domains.values() if f.signals),
        key=lambda f: (-f.score, n.FAULTS.index(f.domain)),
    )
    return Report(
        source=source,
        at=at,
        window_seconds=window_seconds,
        baseline_seconds=baseline_seconds,
        requests=now.requests,
        requests_baseline=baseline.requests if baseline is not None else 0.0,
        domains=domains,
        faults=faults,
    )


def render_text(report: Report) -> str:
    """The human report: a table per fault domain, then the verdict line."""
    when = datetime.fromtimestamp(report.at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    base = (
        f"the {format_duration(report.baseline_seconds)} before"
        if report.baseline_seconds
        else "everything before"
    )
    lines = [
        f"chainsight triage - {report.source}",
        f"window: last {format_duration(report.window_seconds)} to {when} "
        f"({_count(report.requests)} requests); baseline: {base} "
        f"({_count(report.requests_baseline)} requests)",
        "",
        f"{'domain':<13}{'errors now':>11}{'baseline':>10}  {'p95 now':>8}{'baseline':>10}"
        f"{'fallbacks':>11}  top error types / most affected",
    ]
    for figures in report.domains.values():
        types = ", ".join(f"{t} {_count(c)}" for t, c in figures.top_error_types) or "-"
        where = figures.stage or "-"
        if figures.component and figures.component != figures.stage:
            where += f" ({figures.component})"
        lines.append(
            f"{figures.domain:<13}{_pct(figures.error_ratio):>11}"
            f"{_pct(figures.error_ratio_baseline):>10}  {_secs(figures.p95_seconds):>8}"
            f"{_secs(figures.p95_seconds_baseline):>10}{_pct(figures.fallback_rate):>11}  "
            f"{types} / {where}"
        )
    lines += ["", report.verdict_line()]
    return "\n".join(lines)


# --- source: a JSONL span file ----------------------------------------------------------------


@dataclass
class _Span:
    trace_id: str
    end: float
    duration: float
    attributes: dict[str, Any]
    events: list[dict[str, Any]]

    @property
    def kind(self) -> str:
        return str(self.attributes.get(n.CS_STAGE_KIND, ""))

    @property
    def stage(self) -> str:
        return str(
            self.attributes.get(n.CS_STAGE_NAME) or self.attributes.get(n.CS_REQUEST_NAME, "")
        )

    @property
    def outcome(self) -> str:
        return str(self.attributes.get(n.CS_OUTCOME, ""))

    @property
    def fault(self) -> str | None:
        value = self.attributes.get(n.CS_FAULT)
        return value if value in n.FAULTS else None


def _component(span: _Span, domain: str) -> str:
    attrs = span.attributes
    if domain == n.FAULT_PROVIDER:
        provider = attrs.get(n.GEN_AI_PROVIDER_NAME)
        model = attrs.get(n.GEN_AI_REQUEST_MODEL)
        if provider and model:
            return f"{provider}/{model}"
        return str(provider or model or span.stage)
    if domain == n.FAULT_VECTOR_STORE:
        system = attrs.get(n.DB_SYSTEM_NAME)
        collection = attrs.get(n.DB_COLLECTION_NAME)
        if system and collection:
            return f"{system}/{collection}"
        return str(system or attrs.get(n.GEN_AI_DATA_SOURCE_ID) or span.stage)
    return span.stage


def _read_spans(path: str) -> list[_Span]:
    spans: list[_Span] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    attributes = record.get("attributes") or {}
                    events = record.get("events") or []
                    start = int(record["start_time_unix_nano"])
                    end = int(record["end_time_unix_nano"])
                    spans.append(
                        _Span(
                            trace_id=str(record["trace_id"]),
                            end=end / 1e9,
                            duration=max(0.0, (end - start) / 1e9),
                            attributes=attributes if isinstance(attributes, dict) else {},
                            events=[e for e in events if isinstance(e, dict)],
                        )
                    )
                except (ValueError, KeyError, TypeError, AttributeError):
                    # A line cut short by a writer that is still running, or not a span at all:
                    # skip it rather than refuse the whole file.
                    continue
    except FileNotFoundError:
        raise TriageError(
            f"span file {path!r} does not exist; point --spans at the JSONL file your app writes "
            "with configure(exporter='jsonl:PATH')"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TriageError(f"span file {path!r} cannot be read: {exc}") from None
    return spans


def _origin_errors(trace: list[_Span]) -> list[_Span]:
    """Failed spans where the failure started (each counted once, at its origin).

    A ``degraded`` span with a fault handled a failure with a fallback: it counts too, with
    what failed.
    """
    failed = [
        s for s in trace if s.outcome in _FAILED_OUTCOMES and s.fault and s.kind != _REQUEST_KIND
    ]
    origins = [s for s in failed if s.attributes.get(n.CS_ERROR_ORIGIN) in (None, "", s.stage)]
    return origins or failed


def _fill_requests(period: Period, roots: list[_Span], traces: Mapping[str, list[_Span]]) -> None:
    for root in roots:
        period.requests += 1
        trace = traces.get(root.trace_id, [])
        touched: set[str] = set()
        fell_back: set[str] = set()
        for span in _origin_errors(trace):
            domain = span.fault or n.FAULT_APP
            touched.add(domain)
            period.errors[domain] += 1
            period.error_types[domain][str(span.attributes.get(n.ERROR_TYPE, "unknown"))] += 1
            period.stages[domain][span.stage] += 1
            period.components[domain][_component(span, domain)] += 1
        root_fault = root.fault
        if root.outcome in _FAILED_OUTCOMES and root_fault and root_fault not in touched:
            touched.add(root_fault)
            period.errors[root_fault] += 1
            period.error_types[root_fault][str(root.attributes.get(n.ERROR_TYPE, "unknown"))] += 1
            origin = root.attributes.get(n.CS_ERROR_ORIGIN)
            if origin:
                period.stages[root_fault][str(origin)] += 1
                if root_fault in (n.FAULT_APP, n.FAULT_MODEL):
                    period.components[root_fault][str(origin)] += 1
        for span in trace:
            if span.attributes.get(n.CS_FALLBACK_TO) or any(
                event.get("name") == n.EVENT_FALLBACK for event in span.events
            ):
                if span.kind == _REQUEST_KIND:
                    fell_back.add(root_fault or n.FAULT_APP)
                else:
                    fell_back.add(domain_of_kind(span.kind))
        for domain in touched | fell_back:
            period.affected[domain] += 1
        for domain in fell_back:
            period.fallbacks[domain] += 1


def _fill_latency(period: Period, spans: Iterable[_Span]) -> None:
    latency: dict[str, SampleLatency] = {}
    by_stage: dict[str, dict[str, SampleLatency]] = defaultdict(dict)
    by_component: dict[str, dict[str, SampleLatency]] = defaultdict(dict)
    for span in spans:
        domain = domain_of_kind(span.kind)
        latency.setdefault(domain, SampleLatency()).add(span.duration)
        by_stage[domain].setdefault(span.stage, SampleLatency()).add(span.duration)
        if domain in (n.FAULT_PROVIDER, n.FAULT_VECTOR_STORE):
            key = _component(span, domain)
            by_component[domain].setdefault(key, SampleLatency()).add(span.duration)
    period.latency, period.stage_latency, period.component_latency = (
        latency,
        by_stage,
        by_component,
    )


def from_spans(
    path: str,
    *,
    window: float | None = None,
    baseline: float | None = None,
    at: float | None = None,
) -> Report:
    """Triage a JSONL span file: the last ``window`` seconds against the time before it.

    ``at`` (Unix seconds) is the end of the window; the default is the last span's end. Without
    ``window`` it is a quarter of the file's time range, at most 10 minutes; without
    ``baseline`` the baseline is everything before the window.
    """
    spans = _read_spans(path)
    roots = [s for s in spans if s.kind == _REQUEST_KIND]
    if not roots:
        raise TriageError(
            f"span file {path!r} holds no request spans ({n.CS_STAGE_KIND}='request') among "
            f"{len(spans)} spans; wrap each unit of work in chainsight.request(...) and make sure "
            "the exporter is 'jsonl:PATH'"
        )
    end = at if at is not None else max(s.end for s in spans)
    first = min(s.end - s.duration for s in spans)
    if window is None:
        window = min(600.0, max((end - first) / 4, 1e-3))
    start = end - window
    base_start = start - baseline if baseline is not None else -math.inf

    traces: dict[str, list[_Span]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    now, before = Period(), Period()
    _fill_requests(now, [r for r in roots if start < r.end <= end], traces)
    _fill_requests(before, [r for r in roots if base_start < r.end <= start], traces)
    stages = [s for s in spans if s.kind and s.kind != _REQUEST_KIND]
    _fill_latency(now, (s for s in stages if start < s.end <= end))
    _fill_latency(before, (s for s in stages if base_start < s.end <= start))
    if now.requests == 0:
        raise TriageError(
            f"span file {path!r} has no request that finished in the {format_duration(window)} "
            f"before {datetime.fromtimestamp(end, tz=timezone.utc).isoformat()}; widen --window "
            "or move --at"
        )
    return analyse(
        now,
        before,
        source=f"spans {path}",
        at=end,
        window_seconds=window,
        baseline_seconds=baseline,
    )


# --- source: the Prometheus HTTP API --------------------------------------------------------


class _Prometheus:
    """A minimal client of ``/api/v1/query`` whose errors say which URL and what failed."""

    def __init__(self, url: str, timeout: float) -> None:
        if not re.match(r"^https?://[^/\s]+", url):
            raise TriageError(
                f"--prometheus {url!r} is not an HTTP URL; give the server's base URL, "
                "e.g. http://127.0.0.1:9090"
            )
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        endpoint = f"{self.url}/api/v1/query"
        try:
            with urllib.request.urlopen(  # noqa: S310 - the scheme is checked in __init__
                f"{endpoint}?{params}", timeout=self.timeout
            ) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = _prometheus_error(exc.read())
            raise TriageError(
                f"Prometheus at {self.url} answered HTTP {exc.code} to {endpoint}"
                f"{': ' + detail if detail else ''} (query: {expr})"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TriageError(
                f"cannot reach Prometheus at {self.url}: {reason}; check the URL and that "
                "Prometheus is running"
            ) from None
        try:
            payload = json.loads(body)
        except ValueError:
            raise TriageError(
                f"{endpoint} did not answer JSON; is {self.url} a Prometheus server?"
            ) from None
        if not isinstance(payload, dict) or payload.get("status") != "success":
            detail = _prometheus_error(body) or "no error given"
            raise TriageError(f"Prometheus at {self.url} refused the query {expr}: {detail}")
        data = payload.get("data") or {}
        result = data.get("result") if isinstance(data, dict) else None
        if data.get("resultType") != "vector" or not isinstance(result, list):
            raise TriageError(f"Prometheus at {self.url} gave an unexpected answer to {expr}")
        return result


def _prometheus_error(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:200].strip()
    if isinstance(payload, dict):
        return f"{payload.get('errorType', '')}: {payload.get('error', '')}".strip(": ")
    return ""


def _value(sample: Mapping[str, Any]) -> float:
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def _le(text: str) -> float:
    return math.inf if text in ("+Inf", "Inf", "inf") else float(text)


def _increase(metric: str, by: Sequence[str], selector: str, window: float) -> str:
    return f"sum by ({', '.join(by)}) (increase({metric}{{{selector}}}[{format_duration(window)}]))"


_GENAI_BY: Final = (n.L_GEN_AI_PROVIDER_NAME, n.L_GEN_AI_REQUEST_MODEL)


def _prometheus_period(client: _Prometheus, selector: str, at: float, window: float) -> Period:
    period = Period()
    q = client.query
    requests = q(_increase(n.M_REQUESTS + "_total", (n.L_FAULT, n.L_OUTCOME), selector, window), at)
    for sample in requests:
        labels, value = sample.get("metric", {}), _value(sample)
        period.requests += value
        fault = labels.get(n.L_FAULT)
        if labels.get(n.L_OUTCOME) in _FAILED_OUTCOMES and fault in n.FAULTS:
            period.affected[fault] += value
    by_fault_request = Tally(period.affected)

    stage_errors = q(
        _increase(
            n.M_STAGE_ERRORS + "_total",
            (n.L_STAGE, n.L_KIND, n.L_SYSTEM, n.L_FAULT, n.L_ERROR_TYPE),
            selector,
            window,
        ),
        at,
    )
    per_stage: dict[str, Tally] = defaultdict(Tally)
    per_type: dict[tuple[str, str], Tally] = defaultdict(Tally)
    kinds: dict[str, str] = {}
    systems: dict[tuple[str, str], Tally] = defaultdict(Tally)
    for sample in stage_errors:
        labels, value = sample.get("metric", {}), _value(sample)
        fault = labels.get(n.L_FAULT)
        if fault not in n.FAULTS or value <= 0:
            continue
        stage = labels.get(n.L_STAGE, "")
        per_stage[fault][stage] += value
        per_type[(fault, stage)][labels.get(n.L_ERROR_TYPE, "unknown")] += value
        kinds[stage] = labels.get(n.L_KIND, "")
        if labels.get(n.L_SYSTEM):
            systems[(fault, stage)][labels[n.L_SYSTEM]] += value
    for fault, stages in per_stage.items():
        top_stage = _pick_stage(stages, kinds, fault)
        top_count = max(stages.values())
        period.stages[fault] = Tally({top_stage: top_count})
        period.errors[fault] = top_count
        period.affected[fault] = max(by_fault_request[fault], top_count)
        period.error_types[fault] = per_type[(fault, top_stage)]
        if fault in (n.FAULT_VECTOR_STORE, n.FAULT_PROVIDER) and systems[(fault, top_stage)]:
            period.components[fault] = systems[(fault, top_stage)]
        else:
            period.components[fault] = Tally({top_stage: top_count})

    calls = q(
        _increase(
            n.M_GEN_AI_OPERATION_DURATION + "_count",
            (*_GENAI_BY, n.L_GEN_AI_ERROR_TYPE),
            selector,
            window,
        ),
        at,
    )
    provider_errors: Tally = Tally()
    for sample in calls:
        labels, value = sample.get("metric", {}), _value(sample)
        error_type = labels.get(n.L_GEN_AI_ERROR_TYPE, "")
        if value > 0 and error_type and error_type not in _NOT_PROVIDER_ERRORS:
            provider_errors[_genai_component(labels)] += value
    if provider_errors:
        # The GenAI metric knows provider *and* model; the stage metric only its system label.
        period.components[n.FAULT_PROVIDER] = provider_errors

    fallbacks = q(_increase(n.M_FALLBACKS + "_total", (n.L_KIND,), selector, window), at)
    for sample in fallbacks:
        domain = domain_of_kind(sample.get("metric", {}).get(n.L_KIND, ""))
        period.fallbacks[domain] += _value(sample)
        period.affected[domain] = max(period.affected[domain], period.fallbacks[domain])

    _fill_bucket_latency(period, client, selector, at, window)
    return period


def _fill_bucket_latency(
    period: Period, client: _Prometheus, selector: str, at: float, window: float
) -> None:
    latency: dict[str, BucketLatency] = {}
    by_stage: dict[str, dict[str, BucketLatency]] = defaultdict(dict)
    by_component: dict[str, BucketLatency] = {}
    stage_buckets = client.query(
        _increase(n.M_STAGE_DURATION + "_bucket", (n.L_STAGE, n.L_KIND, "le"), selector, window),
        at,
    )
    for sample in stage_buckets:
        labels, value = sample.get("metric", {}), _value(sample)
        domain = domain_of_kind(labels.get(n.L_KIND, ""))
        bound = _le(labels.get("le", "+Inf"))
        latency.setdefault(domain, BucketLatency()).add(bound, value)
        by_stage[domain].setdefault(labels.get(n.L_STAGE, ""), BucketLatency()).add(bound, value)
    genai_buckets = client.query(
        _increase(n.M_GEN_AI_OPERATION_DURATION + "_bucket", (*_GENAI_BY, "le"), selector, window),
        at,
    )
    for sample in genai_buckets:
        labels = sample.get("metric", {})
        by_component.setdefault(_genai_component(labels), BucketLatency()).add(
            _le(labels.get("le", "+Inf")), _value(sample)
        )
    period.latency, period.stage_latency = latency, by_stage
    period.component_latency = {n.FAULT_PROVIDER: by_component}


def _pick_stage(stages: Mapping[str, float], kinds: Mapping[str, str], domain: str) -> str:
    """The stage most affected by ``domain``'s errors, from per-stage error counts.

    An error passes through every enclosing stage and each counts it, so counts tie; among the
    stages within 5% of the top count, one whose kind belongs to the domain wins (the retrieval
    stage for a vector store fault), since it is most likely where the error started.
    """
    top = max(stages.values())
    close = [stage for stage, count in stages.items() if count >= 0.95 * top]
    close.sort(key=lambda stage: (domain_of_kind(kinds.get(stage, "")) != domain, -stages[stage]))
    return close[0]


def _genai_component(labels: Mapping[str, str]) -> str:
    provider = labels.get(n.L_GEN_AI_PROVIDER_NAME, "")
    model = labels.get(n.L_GEN_AI_REQUEST_MODEL, "")
    return f"{provider}/{model}" if provider and model else provider or model or "unknown"


def from_prometheus(
    url: str,
    *,
    window: float = 600.0,
    baseline: float = 3600.0,
    at: float | None = None,
    selector: str = "",
    timeout: float = 10.0,
) -> Report:
    """Triage from Prometheus: ``increase()`` over the last ``window`` vs the ``baseline`` before.

    ``selector`` holds extra label matchers (``job="bot",namespace="prod"``) added to every
    query. Raises :class:`TriageError` when Prometheus is unreachable, refuses a query, has no
    chainsight series or saw no request finish in the window.
    """
    client = _Prometheus(url, timeout)
    when = at if at is not None else time.time()
    selector = selector.strip().strip("{}").strip()
    # A range function, not an instant selector: after a target stops, staleness markers hide
    # its series from instant queries, and looking back at an incident must still work.
    present = client.query(
        f"count(count_over_time({n.M_REQUESTS}_total{{{selector}}}[{format_duration(window)}]))",
        when,
    )
    if not present:
        where = f" matching {{{selector}}}" if selector else ""
        raise TriageError(
            f"Prometheus at {client.url} has no {n.M_REQUESTS}_total series{where}: it is "
            "empty or does not scrape a chainsight app. Check its targets page "
            f"({client.url}/targets) and that the app serves /metrics "
            "(configure(metrics_port=...))"
        )
    now = _prometheus_period(client, selector, when, window)
    if now.requests <= 0:
        raise TriageError(
            f"Prometheus at {client.url} has chainsight series but no request finished in the "
            f"last {format_duration(window)}; there is no traffic to judge. Widen --window or "
            "check that the app is receiving requests"
        )
    before = _prometheus_period(client, selector, when - window, baseline)
    return analyse(
        now,
        before,
        source=f"prometheus {client.url}",
        at=when,
        window_seconds=window,
        baseline_seconds=baseline,
    )


# --- command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``chainsight triage`` options to ``parser``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--prometheus",
        metavar="URL",
        help="base URL of a Prometheus that scrapes chainsight metrics, e.g. http://127.0.0.1:9090",
    )
    source.add_argument(
        "--spans", metavar="PATH", help="a JSONL span file (configure(exporter='jsonl:PATH'))"
    )
    parser.add_argument(
        "--window",
        metavar="DURATION",
        help="the recent period to judge (PromQL duration: 30s, 10m, 1h). Default: 10m for "
        "Prometheus; for a span file a quarter of its time range, at most 10m",
    )
    parser.add_argument(
        "--baseline",
        metavar="DURATION",
        help="the period before the window to compare with. Default: 1h for Prometheus; "
        "everything before the window for a span file",
    )
    parser.add_argument(
        "--at",
        metavar="TIME",
        help="end of the window (Unix seconds or RFC 3339). Default: now for Prometheus, the "
        "last span for a span file. Use it to look back at an incident",
    )
    parser.add_argument(
        "--selector",
        default="",
        metavar="MATCHERS",
        help="extra PromQL label matchers for every query, e.g. 'job=\"support-bot\"'",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="HTTP timeout per Prometheus query (default 10)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


def triage(args: argparse.Namespace) -> Report:
    """Run the triage the parsed ``args`` ask for; raise :class:`TriageError` on bad input."""
    window = parse_duration(args.window) if args.window else None
    baseline = parse_duration(args.baseline) if args.baseline else None
    at = _parse_time(args.at) if args.at else None
    if args.spans:
        return from_spans(args.spans, window=window, baseline=baseline, at=at)
    if args.timeout <= 0:
        raise TriageError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    return from_prometheus(
        args.prometheus,
        window=window or 600.0,
        baseline=baseline or 3600.0,
        at=at,
        selector=args.selector,
        timeout=args.timeout,
    )


def run(args: argparse.Namespace) -> int:
    """``chainsight triage``: print the report; exit 0 healthy, 1 fault found, 2 cannot judge."""
    try:
        report = triage(args)
    except TriageError as exc:
        print(f"chainsight triage: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(render_text(report))
    return 0 if report.healthy else 1
