"""The verdict: compare the window with the baseline per fault domain, rank the failing ones.

``docs/triage.md`` explains the rules; the thresholds below are the whole of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

from chainsight import _names as n
from chainsight.tools.triage_figures import (
    QUANTILE,
    LatencyDistribution,
    Period,
    ReleaseFigures,
    Tally,
)
from chainsight.tools.triage_lines import Skipped
from chainsight.tools.triage_next import NextStep, next_step
from chainsight.tools.triage_onset import Onset
from chainsight.tools.triage_releases import ReleaseBlame, blame_release, releases_to_dict
from chainsight.tools.triage_units import (
    format_count,
    format_duration,
    format_percent,
    format_seconds,
)

__all__ = [
    "HEALTHY",
    "MIN_REQUESTS",
    "DomainFigures",
    "Fault",
    "Impact",
    "Report",
    "analyse",
]

HEALTHY: Final = "healthy"

# Thresholds. They are deliberately coarse: triage is a first look for the on-call engineer, and a
# false alarm on a healthy service costs more trust than a small fault found a minute later.
#: An error signal needs the domain's error ratio to rise by at least this much (absolute) ...
MIN_ERROR_EXCESS: Final = 0.02
#: ... to at least this multiple of the baseline ratio ...
MIN_ERROR_FACTOR: Final = 1.5
#: ... and at least this many affected requests in the window.
MIN_ERROR_EVENTS: Final = 3.0
#: Fewer requests than this in the window cannot show an error signal, so "healthy" would be a
#: claim without evidence: the sources call such a window "cannot judge" (exit 2) instead.
MIN_REQUESTS: Final = MIN_ERROR_EVENTS
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
    impact: Impact = field(default_factory=lambda: Impact(0.0, 0.0, 0.0))
    impact_baseline: Impact | None = None
    absorbed_failures: float = 0.0
    retries: float = 0.0
    fallback_stage: str | None = None

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
            "users": {
                "now": self.impact.to_dict(),
                "baseline": self.impact_baseline.to_dict() if self.impact_baseline else None,
            },
            "absorbed_stage_failures": _r(self.absorbed_failures),
            "retried_attempts": _r(self.retries),
            "fallback_stage": self.fallback_stage,
        }


@dataclass(frozen=True)
class Impact:
    """What users saw, as shares of requests: failed, served by a fallback, and served normally
    although a stage failed (a retry or a handler absorbed it)."""

    failed: float
    degraded: float
    absorbed: float

    @property
    def seen(self) -> float:
        """The share of requests users saw fail or degrade."""
        return self.failed + self.degraded

    def to_dict(self) -> dict[str, float | None]:
        """The JSON shape: ``failed``, ``degraded``, ``absorbed`` ratios."""
        return {
            "failed": _r(self.failed),
            "degraded": _r(self.degraded),
            "absorbed": _r(self.absorbed),
        }


def _impact(period: Period, domain: str | None) -> Impact:
    """What users saw in ``period``, in one domain or (``None``) over all of them."""
    if period.requests <= 0:
        return Impact(0.0, 0.0, 0.0)
    if domain is None:
        failed, degraded = period.user_failed, period.user_degraded
        absorbed = max(period.absorbed.values(), default=0.0)
    else:
        failed, degraded = period.failed[domain], period.degraded[domain]
        absorbed = period.absorbed[domain]
    share = period.requests
    return Impact(min(failed / share, 1.0), min(degraded / share, 1.0), min(absorbed / share, 1.0))


@dataclass(frozen=True)
class Fault:
    """One failing domain in the verdict."""

    domain: str
    component: str | None
    evidence: str
    score: float
    release: ReleaseBlame | None = None
    next: NextStep | None = None

    def line(self) -> str:
        """``provider in openai/gpt-4o: ...``, or ``model in answer@8 (prompt): ...``."""
        if self.release is not None:
            return (
                f"{self.domain} in {self.release.name}: {self.release.evidence()}; {self.evidence}"
            )
        where = f" in {self.component}" if self.component else ""
        return f"{self.domain}{where}: {self.evidence}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape (``verdict.faults[]``)."""
        return {
            "domain": self.domain,
            "component": self.component,
            "evidence": self.evidence,
            "score": _r(self.score),
            "release": self.release.to_dict() if self.release is not None else None,
            "next": self.next.to_dict() if self.next is not None else None,
        }


@dataclass
class Report:
    """The outcome of a triage: figures per domain and the verdict (faults, biggest first).

    ``skipped`` counts the lines of a span file that were not usable spans, by reason; the
    report shows them, so a verdict drawn from part of a file says so.
    """

    source: str
    at: float
    window_seconds: float
    baseline_seconds: float | None
    requests: float
    requests_baseline: float
    domains: dict[str, DomainFigures]
    faults: list[Fault]
    skipped: Skipped = field(default_factory=Skipped)
    impact: Impact = field(default_factory=lambda: Impact(0.0, 0.0, 0.0))
    impact_baseline: Impact | None = None
    onset: Onset | None = None
    releases: dict[str, ReleaseFigures] = field(default_factory=dict)
    releases_baseline: dict[str, ReleaseFigures] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """True when no domain shows a fault."""
        return not self.faults

    def verdict_line(self) -> str:
        """The one line an on-call engineer reads first."""
        if not self.faults:
            return f"verdict: {HEALTHY} - {self._healthy_evidence()}"
        first, *rest = [fault.line() for fault in self.faults]
        line = f"verdict: {first}"
        if rest:
            line += "; also " + "; also ".join(rest)
        if self.onset is not None:
            line += f"; since {self.since()}"
        return line

    def since(self) -> str | None:
        """When the incident began (``12:03:20 UTC``), if a change point was found."""
        if self.onset is None:
            return None
        when = datetime.fromtimestamp(self.onset.at, tz=timezone.utc)
        return (
            when.strftime("%H:%M:%S UTC")
            if self.at - self.onset.at < 86400
            else (when.strftime("%Y-%m-%d %H:%M:%S UTC"))
        )

    def users_line(self) -> str:
        """The headline: what users saw, then what retries absorbed upstream."""
        base = self.impact_baseline
        impact = self.impact
        line = (
            f"users: {format_percent(impact.failed)} of requests failed, "
            f"{format_percent(impact.degraded)} were served by a fallback"
        )
        if base is not None:
            line += f" (baseline {format_percent(base.failed)} and {format_percent(base.degraded)})"
        if self.impact.absorbed > 0:
            line += (
                f"; upstream: {format_percent(self.impact.absorbed)} more had a stage failure "
                "a retry or handler absorbed"
            )
        return line

    def _healthy_evidence(self) -> str:
        return (
            f"no fault domain's error ratio or p95 latency rose past the thresholds over "
            f"{format_count(self.requests)} requests in the last "
            f"{format_duration(self.window_seconds)}"
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
        verdict["faults"] = [f.to_dict() for f in self.faults]
        verdict["line"] = self.verdict_line()
        verdict["since"] = (
            datetime.fromtimestamp(self.onset.at, tz=timezone.utc).isoformat()
            if self.onset is not None
            else None
        )
        return {
            "source": self.source,
            "at": datetime.fromtimestamp(self.at, tz=timezone.utc).isoformat(),
            "window_seconds": _r(self.window_seconds),
            "baseline_seconds": _r(self.baseline_seconds),
            "requests": {"now": _r(self.requests), "baseline": _r(self.requests_baseline)},
            "users": {
                "now": self.impact.to_dict(),
                "baseline": self.impact_baseline.to_dict() if self.impact_baseline else None,
            },
            "onset": _onset_dict(self.onset),
            "notes": list(self.notes),
            "releases": releases_to_dict(self.releases, self.releases_baseline),
            "verdict": verdict,
            "domains": {name: figures.to_dict() for name, figures in self.domains.items()},
            "skipped_lines": self.skipped.to_dict(),
        }


def _onset_dict(onset: Onset | None) -> dict[str, Any] | None:
    if onset is None:
        return None
    return {
        "at": datetime.fromtimestamp(onset.at, tz=timezone.utc).isoformat(),
        "domain": onset.domain,
        "signal": onset.signal,
        "llr": _r(onset.llr),
    }


def _r(value: float | None) -> float | None:
    # JSON has no infinity or NaN; a figure that overflowed is unknown, not a crash of --json.
    return None if value is None or not math.isfinite(value) else round(value, 6)


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
class _Signal:
    """One reason to call a domain failing: how much it added, and the evidence line."""

    score: float
    evidence: str


@dataclass(frozen=True)
class _Slow(_Signal):
    """A latency signal, with the share of slow calls and where the slowdown grew most."""

    fraction: float
    stage: str | None
    component: str | None


def _error_signal(figures: DomainFigures) -> _Signal | None:
    """An error fault: the error ratio rose past the thresholds, or is high whatever the past.

    The ratio judged counts every request a failure in the domain touched, absorbed or not (an
    upstream failing is a fault even when retries hide it); the evidence leads with what users
    saw, and names the absorbed failures apart.
    """
    ratio, ratio_base, affected = (
        figures.error_ratio,
        figures.error_ratio_baseline,
        figures.affected,
    )
    excess = ratio - (ratio_base or 0.0)
    rose = excess >= MIN_ERROR_EXCESS and ratio >= MIN_ERROR_FACTOR * (ratio_base or 0.0)
    if not (affected >= MIN_ERROR_EVENTS and (rose or ratio >= HIGH_ERROR_RATIO)):
        return None
    score = max(0.0, excess, ratio if ratio >= HIGH_ERROR_RATIO else 0.0)
    impact, before = figures.impact, figures.impact_baseline
    text = f"{format_percent(impact.failed)} of requests failed for users"
    if impact.degraded > 0:
        text += f" and {format_percent(impact.degraded)} were served by a fallback"
    text += f" (baseline {format_percent(before.seen if before is not None else None)})"
    if figures.top_error_types:
        text += ", mostly " + ", ".join(
            f"{t} ({format_count(c)})" for t, c in figures.top_error_types[:2]
        )
    if figures.stage:
        text += f" at stage {figures.stage}"
    if figures.fallback_stage and figures.fallback_stage != figures.stage:
        text += f", fallback at {figures.fallback_stage}"
    if impact.absorbed > 0:
        text += (
            f"; retries or handlers absorbed it in {format_percent(impact.absorbed)} more "
            f"({format_count(figures.absorbed_failures)} stage failures"
            + (f", {format_count(figures.retries)} retried attempts)" if figures.retries else ")")
        )
    return _Signal(score, text)


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
        f"p95 latency {format_seconds(p95)} vs {format_seconds(p95_base)} baseline "
        f"({p95 / p95_base:.1f}x), {format_percent(fraction)} of calls slower than "
        f"{format_seconds(threshold)}" + (f" at stage {stage}" if stage else "")
    )
    return _Slow(score, evidence, fraction, stage, component)


def _quantile(dist: LatencyDistribution | None) -> float | None:
    return dist.quantile(QUANTILE) if dist is not None else None


def _domain(domain: str, now: Period, base: Period | None) -> DomainFigures:
    """One domain's figures, its signals and the evidence for them."""
    requests = now.requests
    affected = min(now.affected[domain], requests)
    ratio_base: float | None = None
    fallback_base: float | None = None
    if base is not None and base.requests > 0:
        ratio_base = min(base.affected[domain], base.requests) / base.requests
        fallback_base = min(base.fallbacks[domain] / base.requests, 1.0)
    dist = now.latency.get(domain)
    figures = DomainFigures(
        domain=domain,
        error_ratio=affected / requests if requests > 0 else 0.0,
        error_ratio_baseline=ratio_base,
        affected=affected,
        top_error_types=now.error_types.get(domain, Tally()).most_common(3),
        p95_seconds=_quantile(dist),
        p95_seconds_baseline=_quantile(base.latency.get(domain) if base is not None else None),
        latency_samples=dist.count if dist is not None else 0.0,
        slow_fraction=0.0,
        fallback_rate=min(now.fallbacks[domain] / requests, 1.0) if requests > 0 else 0.0,
        fallback_rate_baseline=fallback_base,
        stage=_top(now.stages.get(domain)),
        component=_top(now.components.get(domain)),
        signals=[],
        score=0.0,
        evidence="",
        impact=_impact(now, domain),
        impact_baseline=_impact(base, domain) if base is not None and base.requests else None,
        absorbed_failures=now.absorbed_failures[domain],
        retries=now.retries[domain],
        fallback_stage=_top(now.fallback_stages.get(domain)),
    )
    errors = _error_signal(figures)
    slow = _latency_signal(domain, now, base)
    found = [(name, s) for name, s in (("errors", errors), ("latency", slow)) if s is not None]
    evidence = [s.evidence for _, s in found]
    if slow is not None:
        figures.slow_fraction = slow.fraction
        if errors is None:
            figures.stage = slow.stage or figures.stage
            figures.component = slow.component or figures.component
    if domain in (n.FAULT_APP, n.FAULT_MODEL) and figures.stage:
        figures.component = figures.stage
    if figures.fallback_rate > 0 and found:
        evidence.append(
            f"fallback rate {format_percent(figures.fallback_rate)} "
            f"(baseline {format_percent(fallback_base)})"
        )
    figures.signals = [name for name, _ in found]
    figures.score = max((s.score for _, s in found), default=0.0)
    figures.evidence = "; ".join(evidence)
    return figures


def analyse(
    now: Period,
    baseline: Period | None,
    *,
    source: str,
    at: float,
    window_seconds: float,
    baseline_seconds: float | None,
    skipped: Skipped | None = None,
    onset: Onset | None = None,
    notes: list[str] | None = None,
) -> Report:
    """Compare ``now`` with ``baseline`` per fault domain and rank the failing domains.

    A domain is failing when its error ratio rose (or is high) or its p95 stage latency at least
    doubled; its score is the fraction of requests (or calls) the fault added, so faults rank
    biggest first. An error fault that one release explains (``triage_releases``) names it, and
    every fault carries its next step (``triage_next``).
    """
    domains = {d: _domain(d, now, baseline) for d in n.FAULTS}
    faults = []
    for figures in domains.values():
        if not figures.signals:
            continue
        blame = (
            blame_release(figures.domain, now, baseline) if "errors" in figures.signals else None
        )
        faults.append(
            Fault(
                figures.domain,
                figures.component,
                figures.evidence,
                figures.score,
                release=blame,
                next=next_step(figures.domain, figures.signals, blame),
            )
        )
    faults.sort(key=lambda f: (-f.score, n.FAULTS.index(f.domain)))
    has_base = baseline is not None and baseline.requests > 0
    return Report(
        source=source,
        at=at,
        window_seconds=window_seconds,
        baseline_seconds=baseline_seconds,
        requests=now.requests,
        requests_baseline=baseline.requests if baseline is not None else 0.0,
        domains=domains,
        faults=faults,
        skipped=skipped if skipped is not None else Skipped(),
        impact=_impact(now, None),
        impact_baseline=_impact(baseline, None) if baseline is not None and has_base else None,
        onset=onset if faults else None,
        releases=dict(now.releases),
        releases_baseline=dict(baseline.releases) if baseline is not None else {},
        notes=list(notes or ()),
    )
