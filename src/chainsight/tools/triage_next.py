"""The next step a verdict gives: the runbook for the domain, the dashboard panel to open, the
rollback line for a release fault, and what Prometheus's latency buckets cannot tell.

The runbooks are the shipped ``docs/runbooks/`` pages (one per alert; the domain's alert is the
one whose runbook fits), the panels those of the shipped Grafana dashboards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from chainsight import _names as n
from chainsight.tools.triage_figures import BucketLatency
from chainsight.tools.triage_releases import ReleaseBlame
from chainsight.tools.triage_units import format_seconds

__all__ = ["NextStep", "next_step", "resolution_note"]

_RUNBOOKS: Final = "docs/runbooks/"
_ONCALL: Final = "AI chain — on-call"
_RELEASES: Final = "AI chain — releases"

# domain -> (runbook for errors, runbook for latency, on-call panel for errors, for latency)
_STEPS: Final[Mapping[str, tuple[str, str, str, str]]] = {
    n.FAULT_PROVIDER: (
        "ChainsightProviderErrorSpike.md",
        "ChainsightProviderLatencySpike.md",
        "Provider errors by error type",
        "Model call latency p95 by model",
    ),
    n.FAULT_VECTOR_STORE: (
        "ChainsightVectorStoreErrors.md",
        "ChainsightVectorStoreErrors.md",
        "Vector store errors",
        "Stage latency p95 by stage",
    ),
    n.FAULT_MODEL: (
        "ChainsightValidationFailureSpike.md",
        "ChainsightValidationFailureSpike.md",
        "Validation failure rate by validator",
        "Stage latency p95 by stage",
    ),
    n.FAULT_APP: (
        "ChainsightRequestAvailabilityBudgetBurnTicket.md",
        "ChainsightRequestAvailabilityBudgetBurnTicket.md",
        "Stage errors by stage and fault domain",
        "Stage latency p95 by stage",
    ),
}


@dataclass(frozen=True)
class NextStep:
    """What to open and do next for one fault."""

    runbook: str
    dashboard: str
    rollback: str | None

    def lines(self) -> list[str]:
        """The report's ``next:`` lines."""
        lines = [f"  runbook: {self.runbook}", f"  dashboard: {self.dashboard}"]
        if self.rollback:
            lines.append(f"  rollback: {self.rollback}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape (``verdict.faults[].next``)."""
        return {"runbook": self.runbook, "dashboard": self.dashboard, "rollback": self.rollback}


def next_step(domain: str, signals: Sequence[str], release: ReleaseBlame | None) -> NextStep:
    """The runbook, panel and (for a release fault) rollback line for a fault in ``domain``."""
    errors_book, latency_book, errors_panel, latency_panel = _STEPS.get(domain, _STEPS[n.FAULT_APP])
    latency_only = "errors" not in signals
    runbook = _RUNBOOKS + (latency_book if latency_only else errors_book)
    if release is not None:
        panel = (
            "Validation pass rate by release"
            if release.figure.startswith("validation")
            else "Error ratio by release and fault domain"
        )
        return NextStep(runbook, f"{_RELEASES} > {panel}", release.rollback())
    panel = latency_panel if latency_only else errors_panel
    return NextStep(runbook, f"{_ONCALL} > {panel}", None)


def _bucket_around(bounds: Sequence[float], seconds: float) -> tuple[float, float] | None:
    """The finite bucket ``(lower, upper]`` holding ``seconds``; ``None`` past the last one."""
    lower = 0.0
    for bound in sorted(bounds):
        if math.isinf(bound):
            return None
        if seconds <= bound:
            return lower, bound
        lower = bound
    return None


#: A bucket at least this wide (upper over lower bound) cannot show a latency change of the
#: factor triage looks for (2x): both p95s interpolate inside it.
_COARSE: Final = 2.0
#: A rise of p95 this large that did not make a latency signal is worth a note when coarse.
_NOTED_RISE: Final = 1.2


def resolution_note(
    domain: str, now: BucketLatency | None, base: BucketLatency | None, fallback: Sequence[float]
) -> str | None:
    """Say so when the histogram's buckets around ``domain``'s baseline p95 are too wide to
    tell a 2x change, and p95 rose without a latency signal; ``None`` otherwise.

    The bounds are those Prometheus returned, else ``fallback`` (the buckets the stage-duration
    histogram is defined with).
    """
    if now is None or base is None:
        return None
    p95, p95_base = now.quantile(0.95), base.quantile(0.95)
    if p95 is None or p95_base is None or p95_base <= 0 or p95 < p95_base * _NOTED_RISE:
        return None
    bounds = list(now.buckets) or list(fallback)
    around = _bucket_around(bounds, p95_base)
    if around is None:
        return (
            f"{domain}: p95 {format_seconds(p95_base)} is past the last finite latency bucket: "
            "Prometheus cannot tell a change there; judge latency from the span file"
        )
    lower, upper = around
    if lower <= 0 or upper / lower < _COARSE:
        return None
    return (
        f"{domain}: p95 rose from {format_seconds(p95_base)} to {format_seconds(p95)}, but the "
        f"latency buckets there run from {format_seconds(lower)} to {format_seconds(upper)} "
        f"({upper / lower:.1f}x apart): a change under that factor cannot be told from "
        "Prometheus; judge latency from the span file"
    )
