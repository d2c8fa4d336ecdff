"""Release-aware triage: which release a fault belongs to, and the per-release table.

Every span carries the release (``chainsight.release.id`` and one ``chainsight.release.<key>``
per part) and ``chainsight_requests_total`` a ``release`` label, so the failing traffic can be
compared release by release. A fault is put on a release when, in the failing domain, that
release fails clearly more than the release it replaced or runs beside:

- **canary**: two releases served requests in the window and one fails at least twice as often,
  by at least 2 points, as the busiest other one;
- **release change**: the window holds one release, the baseline another, and the new one fails
  at least twice as often (by 2 points) as the old one did; a release that was healthy in the
  baseline too is not blamed (something else changed).

The figure compared is the domain's share of requests touched by a failure, or for the ``model``
domain, when validation failed, the share of requests whose answer failed validation.
``docs/triage.md`` ("Releases") explains it with what it cannot see.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from chainsight import _names as n
from chainsight.tools.triage_figures import QUANTILE, Period, ReleaseFigures
from chainsight.tools.triage_units import format_count, format_percent, format_seconds

__all__ = [
    "MAX_RELEASES",
    "MIN_RELEASE_REQUESTS",
    "ReleaseBlame",
    "blame_release",
    "parse_release_id",
    "release_table",
    "releases_to_dict",
]

#: Releases kept per period: a real service runs a few at once; past this a writer is inventing
#: them, and the table must stay bounded.
MAX_RELEASES: Final = 50
#: Requests a release needs in a period before its figures are compared.
MIN_RELEASE_REQUESTS: Final = 10.0
#: A release is blamed when its figure is at least this multiple of the other release's ...
RELEASE_FACTOR: Final = 2.0
#: ... and higher by at least this much (absolute).
MIN_RELEASE_EXCESS: Final = 0.02


@dataclass(frozen=True)
class ReleaseBlame:
    """A fault put on a release: what it is, what it replaced or runs beside, the figures."""

    release: str
    name: str
    previous: str
    figure: str
    ratio: float
    ratio_previous: float
    canary: bool

    def evidence(self) -> str:
        """``validation failures 25.0% vs 0.4% on answer@7 - consider rolling back``."""
        return (
            f"{self.figure} {format_percent(self.ratio)} vs {format_percent(self.ratio_previous)}"
            f" on {self.previous}{' (canary)' if self.canary else ''} - consider rolling back"
        )

    def rollback(self) -> str:
        """The rollback line of the verdict's next step."""
        if self.canary:
            return f"take {self.name} out of the rollout; {self.previous} serves well"
        return f"roll back {self.name} to {self.previous}, then triage again"

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape (``verdict.faults[].release``)."""
        return {
            "release": self.release,
            "name": self.name,
            "previous": self.previous,
            "figure": self.figure,
            "ratio": round(self.ratio, 6),
            "ratio_previous": round(self.ratio_previous, 6),
            "canary": self.canary,
            "rollback": self.rollback(),
        }


def parse_release_id(release: str) -> dict[str, str]:
    """The parts of a ``key=value,...`` release id (what ``configure(release={...})`` writes
    without an explicit ``id``); empty for any other id."""
    parts: dict[str, str] = {}
    for piece in release.split(",")[:MAX_RELEASES]:
        key, sep, value = piece.partition("=")
        if not sep or not key.isidentifier() or not value:
            return {}
        parts[key] = value
    return parts


def _figure(domain: str, releases: Iterable[ReleaseFigures]) -> tuple[str, bool]:
    """The figure to compare releases by in ``domain``: validation failures when there are."""
    if domain == n.FAULT_MODEL and any(r.validation_failures > 0 for r in releases):
        return "validation failures", True
    return f"{domain} errors", False


def _names(worst: ReleaseFigures, other: ReleaseFigures) -> tuple[str, str]:
    """``("answer@8 (prompt)", "answer@7")``: the parts that differ, or the whole ids."""
    changed = [k for k, v in worst.keys.items() if other.keys.get(k) != v]
    if not changed or not other.keys:
        return worst.release, other.release
    name = ", ".join(f"{worst.keys[k]} ({k})" for k in changed)
    return name, ", ".join(other.keys.get(k, "-") for k in changed)


def blame_release(domain: str, now: Period, base: Period | None) -> ReleaseBlame | None:
    """The release the fault in ``domain`` belongs to, or ``None`` (see the module's rules)."""
    candidates = [r for r in now.releases.values() if r.requests >= MIN_RELEASE_REQUESTS]
    earlier = [
        r
        for r in (base.releases.values() if base is not None else ())
        if r.requests >= MIN_RELEASE_REQUESTS
    ]
    figure, validation = _figure(domain, [*candidates, *earlier])

    def ratio(r: ReleaseFigures) -> float:
        return r.validation_ratio if validation else r.ratio(domain)

    if not candidates:
        return None
    worst = max(candidates, key=ratio)
    beside = [r for r in candidates if r.release != worst.release]
    before = [r for r in earlier if r.release != worst.release]
    if beside:
        other, canary = max(beside, key=lambda r: r.requests), True
    elif before:
        other, canary = max(before, key=lambda r: r.requests), False
        was = next((r for r in earlier if r.release == worst.release), None)
        if was is not None and ratio(was) * RELEASE_FACTOR <= ratio(worst):
            return None  # it served well before: the release did not do it
    else:
        return None
    now_ratio, other_ratio = ratio(worst), ratio(other)
    if now_ratio - other_ratio < MIN_RELEASE_EXCESS or now_ratio < RELEASE_FACTOR * other_ratio:
        return None
    name, previous = _names(worst, other)
    return ReleaseBlame(worst.release, name, previous, figure, now_ratio, other_ratio, canary)


# --- the per-release table (--by release) ---------------------------------------------------

#: At most this many characters of a release id in the table's first column.
_ID_MAX: Final = 100


def _shown_id(release: str, width: int) -> str:
    """The id in ``width`` characters; a longer one loses its middle, not its end, because ids
    of releases that differ often differ only at the end (``...,prompt=answer@8``)."""
    if len(release) <= width:
        return release
    head = (width - 3) // 2
    return release[:head] + "..." + release[len(release) - (width - 3 - head) :]


def _row(period: str, figures: ReleaseFigures, width: int) -> str:
    release = _shown_id(figures.release, width)
    ratios = "".join(f"{format_percent(figures.ratio(d)):>14}" for d in n.FAULTS)
    p95 = figures.latency.quantile(QUANTILE) if figures.latency is not None else None
    cost = figures.cost_per_request
    return (
        f"{release:<{width}}{period:>9}{format_count(figures.requests):>10}{ratios}"
        f"{format_seconds(p95):>9}{'-' if cost is None else f'{cost:.5f}':>11}"
        f"{format_percent(figures.validation_ratio):>12}"
    )


def release_table(
    now: Mapping[str, ReleaseFigures], base: Mapping[str, ReleaseFigures]
) -> list[str]:
    """The ``--by release`` table: one row per release and period, newest period first; the
    domain columns are the share of the release's requests a failure in the domain touched."""
    ids = [f.release for f in (*now.values(), *base.values())]
    width = min(max((len(i) for i in ids), default=7) + 2, _ID_MAX)
    header = (
        f"{'release':<{width}}{'period':>9}{'requests':>10}"
        + "".join(f"{d:>14}" for d in n.FAULTS)
        + f"{'p95':>9}{'USD/req':>11}{'validation':>12}"
    )
    rows = [_row("now", f, width) for f in sorted(now.values(), key=lambda f: -f.requests)]
    rows += [_row("baseline", f, width) for f in sorted(base.values(), key=lambda f: -f.requests)]
    return [header, *rows] if rows else [header, "(no request carried a release)"]


def _release_dict(figures: ReleaseFigures) -> dict[str, Any]:
    p95 = figures.latency.quantile(QUANTILE) if figures.latency is not None else None
    cost = figures.cost_per_request
    return {
        "parts": dict(figures.keys),
        "requests": round(figures.requests, 6),
        "error_ratio": {d: round(figures.ratio(d), 6) for d in n.FAULTS},
        "failed": {d: round(figures.failed[d], 6) for d in n.FAULTS},
        "p95_seconds": None if p95 is None else round(p95, 6),
        "cost_per_request_usd": None if cost is None else round(cost, 9),
        "validation_failure_ratio": round(figures.validation_ratio, 6),
    }


def releases_to_dict(
    now: Mapping[str, ReleaseFigures], base: Mapping[str, ReleaseFigures]
) -> dict[str, dict[str, Any]]:
    """The ``releases`` object of ``--json``: per period, per release id."""
    return {
        "now": {k: _release_dict(v) for k, v in now.items()},
        "baseline": {k: _release_dict(v) for k, v in base.items()},
    }
