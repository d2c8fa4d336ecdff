"""Prometheus recording and alerting rules for SLOs, following Sloth's conventions.

:func:`generate_rules` returns the rule file as data (``{"groups": [...]}``); writing it as YAML
is ``chainsight.tools.slo``'s job. Per SLO there are three groups: the SLI error ratios over
every alert window and the period, the metadata (objective, budget, burn rates, budget
remaining, ``sloth_slo_info``), and the page, ticket and missing-metric alerts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

from chainsight import _names as n
from chainsight.tools.slo_release import release_groups
from chainsight.tools.slo_spec import SLO, EventsSLI, LatencySLI, SLOSpec

__all__ = [
    "ALERT_WINDOWS",
    "DEFAULT_RUNBOOK_BASE",
    "BurnRates",
    "alert_names",
    "burn_rates",
    "describe",
    "generate_rules",
    "le_label",
    "promql_matchers",
]

DEFAULT_RUNBOOK_BASE: Final = "https://github.com/chainsight-dev/chainsight/blob/main/docs/runbooks"

# The windows of Sloth's recording rules; the period window (e.g. 30d) is added per SLO.
ALERT_WINDOWS: Final = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

# (share of the period's error budget spent, long window hours, short window, long window):
# the SRE workbook's table. Over 30 days these give the factors 14.4, 6, 3 and 1.
_PAGE_FAST: Final = (Fraction(2, 100), 1, "5m", "1h")
_PAGE_SLOW: Final = (Fraction(5, 100), 6, "30m", "6h")
_TICKET_FAST: Final = (Fraction(10, 100), 24, "2h", "1d")
_TICKET_SLOW: Final = (Fraction(10, 100), 72, "6h", "3d")

_SPEC_KIND: Final = "chainsight.slo/v1"
_REGEX_SPECIALS: Final = frozenset("\\.+*?()|[]{}^$")


@dataclass(frozen=True)
class BurnRates:
    """Burn-rate factors for the four alert window pairs of one period length."""

    page_fast: float
    page_slow: float
    ticket_fast: float
    ticket_slow: float


def burn_rates(window_days: int) -> BurnRates:
    """Return the burn-rate factors for an SLO period of ``window_days`` days.

    Each factor is the burn rate that spends a fixed share of the period's error budget within
    the long window: 2 % in 1h, 5 % in 6h (page), 10 % in 1d, 10 % in 3d (ticket). For 30 days
    they are 14.4, 6, 3 and 1.
    """
    hours = window_days * 24

    def factor(share: Fraction, long_hours: int) -> float:
        return float(share * hours / long_hours)

    return BurnRates(
        page_fast=factor(_PAGE_FAST[0], _PAGE_FAST[1]),
        page_slow=factor(_PAGE_SLOW[0], _PAGE_SLOW[1]),
        ticket_fast=factor(_TICKET_FAST[0], _TICKET_FAST[1]),
        ticket_slow=factor(_TICKET_SLOW[0], _TICKET_SLOW[1]),
    )


def le_label(bound: float) -> str:
    """Return the ``le`` label value prometheus-client writes for a bucket bound.

    ``1`` becomes ``"1.0"``; a rule matching ``le="1"`` would find nothing. Large bounds switch
    to Go's exponent form (``1e+06``) as the client does.
    """
    value = float(bound)
    if value == float("inf"):
        return "+Inf"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:
        digits = (text[:dot] + text[dot + 1 :]).rstrip("0")
        mantissa = f"{digits[0]}.{digits[1:]}".rstrip(".")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _promql_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _regex_escape(value: str) -> str:
    return "".join(f"\\{ch}" if ch in _REGEX_SPECIALS else ch for ch in value)


def promql_matchers(selector: Mapping[str, Sequence[str]]) -> str:
    """Render label matchers, sorted by label: one value as ``=``, several as an anchored ``=~``.

    Values are escaped for RE2 and for PromQL strings, so any text is matched literally.
    """
    parts = []
    for label in sorted(selector):
        values = tuple(selector[label])
        if len(values) == 1:
            parts.append(f"{label}={_promql_string(values[0])}")
        else:
            pattern = "|".join(_regex_escape(v) for v in values)
            parts.append(f"{label}=~{_promql_string(pattern)}")
    return ",".join(parts)


# --- rule groups ---------------------------------------------------------------------------------


def alert_names(slo: SLO) -> tuple[str, str, str]:
    """Return the page, ticket and missing-metric alert names of one SLO."""
    return (
        f"{slo.alert_name}BudgetBurnPage",
        f"{slo.alert_name}BudgetBurnTicket",
        f"{slo.alert_name}MetricAbsent",
    )


def _selectors(sli: EventsSLI | LatencySLI) -> tuple[str, str, str]:
    """Return (bad-or-good series, all series, series whose absence means broken metrics)."""
    if isinstance(sli, EventsSLI):
        total = f"{sli.metric}{{{promql_matchers(sli.filter)}}}"
        bad = f"{sli.metric}{{{promql_matchers({**sli.filter, **sli.bad})}}}"
        return bad, total, total
    good_labels = {**sli.filter, "le": (le_label(sli.threshold_seconds),)}
    good = f"{sli.metric}_bucket{{{promql_matchers(good_labels)}}}"
    total = f"{sli.metric}_count{{{promql_matchers(sli.filter)}}}"
    # Absence of the threshold bucket also catches a bucket layout that no longer has the bound.
    return good, total, good


def _sli_expr(sli: EventsSLI | LatencySLI, window: str) -> str:
    first, total, _ = _selectors(sli)
    # Per job, so that an alert carries the `job` its runbook's triage command selects on.
    # `>= 0` drops the NaN of an idle window (0/0): no sample instead of a NaN that would poison
    # the period average. The `or 0 * ...` arm: prometheus-client creates the bad series only at
    # the first bad event, and a missing numerator must read as "no errors", not as "no data".
    if isinstance(sli, EventsSLI):
        return (
            f"(\n  (\n    sum by (job) (rate({first}[{window}]))\n    or\n"
            f"    0 * sum by (job) (rate({total}[{window}]))\n  )\n  /\n"
            f"  sum by (job) (rate({total}[{window}]))\n) >= 0"
        )
    return (
        f"(\n  1 - (\n    sum by (job) (rate({first}[{window}]))\n    /\n"
        f"    sum by (job) (rate({total}[{window}]))\n  )\n) >= 0"
    )


def _fmt(value: float) -> str:
    return repr(value)


def _pct(value: Fraction | float) -> str:
    return f"{float(value):g}"


def _sloth_labels(slo: SLO) -> dict[str, str]:
    return {
        **slo.labels,
        "sloth_id": slo.sloth_id,
        "sloth_service": slo.service,
        "sloth_slo": slo.name,
    }


def _ids(slo: SLO) -> str:
    return promql_matchers(
        {
            "sloth_id": (slo.sloth_id,),
            "sloth_service": (slo.service,),
            "sloth_slo": (slo.name,),
        }
    )


def _bad_definition(slo: SLO) -> str:
    if isinstance(slo.sli, LatencySLI):
        return f"bad: slower than {slo.sli.threshold_seconds:g}s"
    rules = ", ".join(f"{label} in {'|'.join(values)}" for label, values in slo.sli.bad.items())
    return f"bad: {rules}"


def _names_domain(slo: SLO) -> bool:
    """Whether the alert can name the fault domain from the data (the SLI's bad events carry
    ``fault``) rather than from a fixed ``fault_domain`` label of the spec."""
    return (
        isinstance(slo.sli, EventsSLI)
        and slo.sli.metric == f"{n.M_REQUESTS}_total"
        and "fault_domain" not in slo.alert_labels
    )


def _seconds(window: str) -> int:
    return int(window[:-1]) * {"m": 60, "h": 3600, "d": 86400}[window[-1]]


def _burn_expr(slo: SLO, pairs: tuple[tuple[float, str, str], tuple[float, str, str]]) -> str:
    """Either pair burning, each with a floor of events in its long window."""
    ids = _ids(slo)
    budget = _fmt(slo.error_budget)
    _, total, _ = _selectors(slo.sli)
    clauses = []
    for factor, short, long in pairs:
        clauses.append(
            "(\n"
            f"  max(slo:sli_error:ratio_rate{short}{{{ids}}} > ({_fmt(factor)} * {budget}))"
            " without (sloth_window)\n"
            "  and\n"
            f"  max(slo:sli_error:ratio_rate{long}{{{ids}}} > ({_fmt(factor)} * {budget}))"
            " without (sloth_window)\n"
            "  and on (job)\n"
            f"  sum by (job) (rate({total}[{long}])) * {_seconds(long)} >= {slo.min_events}\n"
            ")"
        )
    return "\nor\n".join(clauses)


def _burn_alert(
    slo: SLO,
    alertname: str,
    severity: str,
    pairs: tuple[tuple[float, str, str], tuple[float, str, str]],
    runbook_base: str,
) -> dict[str, Any]:
    (f1, s1, l1), (f2, s2, l2) = pairs
    speed = "fast" if severity == "page" else "steadily"
    labels = {
        **slo.alert_labels,
        "severity": severity,
        "sloth_severity": severity,
        "sloth_id": slo.sloth_id,
        "sloth_service": slo.service,
        "sloth_slo": slo.name,
    }
    burning = _burn_expr(slo, pairs)
    rule = (
        f"Burn rate above {f1:g}x over {s1} and {l1}, or above {f2:g}x over {s2} and {l2}, "
        f"with at least {slo.min_events} events in the long window."
    )
    if _names_domain(slo):
        first, total, _ = _selectors(slo.sli)
        # The longer short window: whichever pair burns, its errors fall inside it.
        window = max(s1, s2, key=_seconds)
        # The domain with the most errors, as the error ratio it alone causes: the page says
        # where to look, and `job` is what the runbook's triage command selects on.
        expr = (
            "topk by (job) (1,\n  sum by (job, fault_domain) (\n"
            f'    label_replace(rate({first}[{window}]), "fault_domain", "$1", "fault", "(.*)")\n'
            f"  )\n)\n/ on (job) group_left ()\nsum by (job) (rate({total}[{window}]))\n"
            f"and on (job)\n(\n{burning}\n)"
        )
        description = (
            f"{{{{ $labels.fault_domain }}}} faults failed {{{{ $value | humanizePercentage }}}} "
            f"of requests in {{{{ $labels.job }}}} over the last {window}, more than any other "
            f"fault domain ({_bad_definition(slo)}); the objective is {_pct(slo.objective)}% "
            f"over {slo.window_days}d (error budget {_pct(slo.error_budget * 100)}%). {rule} "
            f"SLO: {slo.description}"
        )
    else:
        expr = burning
        description = (
            f"Error ratio {{{{ $value | humanizePercentage }}}} over the short window in "
            f"{{{{ $labels.job }}}} ({_bad_definition(slo)}); the objective is "
            f"{_pct(slo.objective)}% over {slo.window_days}d (error budget "
            f"{_pct(slo.error_budget * 100)}%). {rule} SLO: {slo.description}"
        )
    return {
        "alert": alertname,
        "expr": expr,
        "for": slo.page_for if severity == "page" else slo.ticket_for,
        "labels": labels,
        "annotations": {
            "summary": f"SLO {slo.service}/{slo.name} is burning its error budget {speed}",
            "description": description,
            "runbook_url": f"{runbook_base.rstrip('/')}/{alertname}.md",
        },
    }


def _slo_groups(slo: SLO, runbook_base: str) -> list[dict[str, Any]]:
    """The three rule groups of one SLO: SLI recordings, metadata recordings, alerts."""
    return [
        {"name": f"chainsight-slo-sli-recordings-{slo.sloth_id}", "rules": _sli_rules(slo)},
        {"name": f"chainsight-slo-meta-recordings-{slo.sloth_id}", "rules": _meta_rules(slo)},
        {
            "name": f"chainsight-slo-alerts-{slo.sloth_id}",
            "rules": _alert_rules(slo, runbook_base),
        },
    ]


def _sli_rules(slo: SLO) -> list[dict[str, Any]]:
    """The error ratio over every alert window, and over the SLO period."""
    base = _sloth_labels(slo)
    period = f"{slo.window_days}d"
    ids = _ids(slo)
    sli_rules: list[dict[str, Any]] = [
        {
            "record": f"slo:sli_error:ratio_rate{window}",
            "expr": _sli_expr(slo.sli, window),
            "labels": {**base, "sloth_window": window},
        }
        for window in ALERT_WINDOWS
    ]
    # The period ratio is the mean of the 5m ratios over the period (Sloth's approximation: each
    # 5m window weighs the same whatever its traffic); idle windows have no sample.
    sli_rules.append(
        {
            "record": f"slo:sli_error:ratio_rate{period}",
            "expr": f"avg_over_time(slo:sli_error:ratio_rate5m{{{ids}}}[{period}])",
            "labels": {**base, "sloth_window": period},
        }
    )
    return sli_rules


def _meta_rules(slo: SLO) -> list[dict[str, Any]]:
    """Objective, error budget, period, burn rates, budget remaining and ``sloth_slo_info``."""
    base = _sloth_labels(slo)
    period = f"{slo.window_days}d"
    ids = _ids(slo)
    join = "on(sloth_id, sloth_slo, sloth_service) group_left"
    return [
        {
            "record": "slo:objective:ratio",
            "expr": f"vector({_fmt(slo.objective_ratio)})",
            "labels": base,
        },
        {
            "record": "slo:error_budget:ratio",
            "expr": f"vector({_fmt(slo.error_budget)})",
            "labels": base,
        },
        {
            "record": "slo:time_period:days",
            "expr": f"vector({slo.window_days})",
            "labels": base,
        },
        {
            "record": "slo:current_burn_rate:ratio",
            "expr": (
                f"slo:sli_error:ratio_rate5m{{{ids}}}\n/ {join}\nslo:error_budget:ratio{{{ids}}}"
            ),
            "labels": base,
        },
        {
            "record": "slo:period_burn_rate:ratio",
            "expr": (
                f"slo:sli_error:ratio_rate{period}{{{ids}}}\n/ {join}\n"
                f"slo:error_budget:ratio{{{ids}}}"
            ),
            "labels": base,
        },
        {
            "record": "slo:period_error_budget_remaining:ratio",
            "expr": f"1 - slo:period_burn_rate:ratio{{{ids}}}",
            "labels": base,
        },
        {
            "record": "sloth_slo_info",
            "expr": "vector(1)",
            "labels": {
                **base,
                "sloth_mode": "cli-gen-prom",
                "sloth_spec": _SPEC_KIND,
                "sloth_objective": _pct(slo.objective),
            },
        },
    ]


def _alert_rules(slo: SLO, runbook_base: str) -> list[dict[str, Any]]:
    """The page and ticket burn-rate alerts, and the alert for a missing metric."""
    rates = burn_rates(slo.window_days)
    page, ticket, absent = alert_names(slo)
    _, _, watched = _selectors(slo.sli)
    return [
        _burn_alert(
            slo,
            page,
            "page",
            ((rates.page_fast, "5m", "1h"), (rates.page_slow, "30m", "6h")),
            runbook_base,
        ),
        _burn_alert(
            slo,
            ticket,
            "ticket",
            ((rates.ticket_fast, "2h", "1d"), (rates.ticket_slow, "6h", "3d")),
            runbook_base,
        ),
        {
            "alert": absent,
            "expr": f"absent({watched})",
            "for": slo.absent_for,
            "labels": {
                **slo.alert_labels,
                "severity": "ticket",
                "sloth_id": slo.sloth_id,
                "sloth_service": slo.service,
                "sloth_slo": slo.name,
            },
            "annotations": {
                "summary": f"SLO {slo.service}/{slo.name} has no data: its metric is missing",
                "description": (
                    f"No series match {watched} for {slo.absent_for}, so the SLO "
                    "cannot be measured and its burn-rate alerts cannot fire. Check that "
                    "Prometheus scrapes the service and that chainsight exports this metric."
                ),
                "runbook_url": f"{runbook_base.rstrip('/')}/{absent}.md",
            },
        },
    ]


def generate_rules(
    spec: SLOSpec, *, runbook_base: str = DEFAULT_RUNBOOK_BASE
) -> dict[str, list[dict[str, Any]]]:
    """Return the Prometheus rule file (as data) for every SLO of ``spec``."""
    groups: list[dict[str, Any]] = []
    for slo in spec.slos:
        groups.extend(_slo_groups(slo, runbook_base))
    if spec.releases is not None:
        groups.extend(release_groups(spec.releases, runbook_base))
    return {"groups": groups}


def describe(slo: SLO) -> str:
    """One line for ``chainsight slo validate``: what ``slo`` promises and when it alerts."""
    rates = burn_rates(slo.window_days)
    page, ticket, absent = alert_names(slo)
    return (
        f"{slo.sloth_id}: {_pct(slo.objective)}% over {slo.window_days}d "
        f"(error budget {_pct(slo.error_budget * 100)}%); {slo.sli.metric}; "
        f"page {page} at {rates.page_fast:g}x/{rates.page_slow:g}x, "
        f"ticket {ticket} at {rates.ticket_fast:g}x/{rates.ticket_slow:g}x, "
        f"missing data {absent} after {slo.absent_for}"
    )
