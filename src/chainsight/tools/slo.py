"""SLOs as code: a small YAML spec in, Prometheus recording and alerting rules out.

The output follows Sloth's conventions so that existing dashboards and habits carry over:
recording rules ``slo:sli_error:ratio_rate5m`` … ``ratio_rate3d`` plus the period window,
metadata rules (objective, error budget, burn rates, budget remaining, ``sloth_slo_info``),
labels ``sloth_id``/``sloth_service``/``sloth_slo``, and multi-window multi-burn-rate alerts
(Google SRE workbook, chapter 5): page when 5m and 1h, or 30m and 6h, burn too fast; ticket when
2h and 1d, or 6h and 3d, do. One ``absent()`` alert per SLO catches metrics that vanished.

A spec file looks like this (see ``slos/`` and ``docs/slo.md``)::

    service: chainsight
    slos:
      - name: request-availability
        objective: 99.5            # percent of good events
        window: 30d
        description: Requests answer without an error.
        sli:
          events:
            metric: chainsight_requests_total
            filter: {outcome: [ok, error, degraded]}
            bad: {outcome: [error]}
        alerting:
          name: ChainsightRequestAvailability

A latency SLI counts events slower than a histogram bucket bound as bad::

        sli:
          latency:
            metric: chainsight_stage_duration_seconds
            filter: {kind: model}
            threshold_seconds: 10.0   # must be a bucket bound; rendered as le="10.0"

Command line: ``chainsight slo generate SPEC [-o OUT] [--runbook-base URL]`` and
``chainsight slo validate SPEC``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import yaml

from chainsight import _names as n
from chainsight.errors import ConfigurationError

__all__ = [
    "ALERT_WINDOWS",
    "DEFAULT_RUNBOOK_BASE",
    "SLO",
    "BurnRates",
    "EventsSLI",
    "LatencySLI",
    "SLOSpec",
    "add_arguments",
    "alert_names",
    "burn_rates",
    "generate_rules",
    "le_label",
    "load_spec",
    "parse_spec",
    "promql_matchers",
    "render_rules",
    "run",
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

# Shorter periods make the 3-day ticket window meaningless; longer ones make rate() too costly.
_MIN_WINDOW_DAYS: Final = 7
_MAX_WINDOW_DAYS: Final = 90

_SPEC_KIND: Final = "chainsight.slo/v1"
_COMMON_LABELS: Final = frozenset({"job", "instance"})

_REQUEST_LABELS: Final = frozenset({n.L_REQUEST, n.L_FEATURE, n.L_OUTCOME, n.L_FAULT, n.L_RELEASE})
_REQUEST_DURATION_LABELS: Final = frozenset({n.L_REQUEST, n.L_OUTCOME, n.L_RELEASE})
_STAGE_LABELS: Final = frozenset({n.L_STAGE, n.L_KIND, n.L_SYSTEM, n.L_OUTCOME, n.L_RELEASE})
_VALIDATION_LABELS: Final = frozenset({n.L_STAGE, n.L_VALIDATOR, n.L_RESULT})
_GEN_AI_LABELS: Final = frozenset(
    {
        n.L_GEN_AI_OPERATION_NAME,
        n.L_GEN_AI_PROVIDER_NAME,
        n.L_GEN_AI_REQUEST_MODEL,
        n.L_GEN_AI_ERROR_TYPE,
    }
)

# Counters an events SLI may use (exposition names) and their labels.
_EVENT_METRICS: Final[Mapping[str, frozenset[str]]] = {
    f"{n.M_REQUESTS}_total": _REQUEST_LABELS,
    f"{n.M_VALIDATIONS}_total": _VALIDATION_LABELS,
    f"{n.M_REQUEST_DURATION}_count": _REQUEST_DURATION_LABELS,
    f"{n.M_STAGE_DURATION}_count": _STAGE_LABELS,
    f"{n.M_GEN_AI_OPERATION_DURATION}_count": _GEN_AI_LABELS,
}
# Histograms a latency SLI may use (family names), their labels and bucket bounds.
_LATENCY_METRICS: Final[Mapping[str, tuple[frozenset[str], tuple[float, ...]]]] = {
    n.M_REQUEST_DURATION: (_REQUEST_DURATION_LABELS, n.LATENCY_BUCKETS),
    n.M_STAGE_DURATION: (_STAGE_LABELS, n.LATENCY_BUCKETS),
    n.M_GEN_AI_OPERATION_DURATION: (_GEN_AI_LABELS, n.OPERATION_DURATION_BUCKETS),
}
# Typos in these values would match nothing and silently disable the SLO, so they are checked.
_KNOWN_VALUES: Final[Mapping[str, frozenset[str]]] = {
    n.L_OUTCOME: frozenset(n.OUTCOMES),
    n.L_FAULT: frozenset((*n.FAULTS, n.NO_FAULT)),
}

_LABEL_NAME_RE: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SLO_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_SERVICE_RE: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$")
_ALERT_NAME_RE: Final = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_DURATION_RE: Final = re.compile(r"^[1-9][0-9]*[smh]$")
_WINDOW_RE: Final = re.compile(r"^([1-9][0-9]*)d$")
_REGEX_SPECIALS: Final = frozenset("\\.+*?()|[]{}^$")


@dataclass(frozen=True)
class EventsSLI:
    """Bad events over all events of one counter.

    ``filter`` selects all events, ``bad`` the bad ones (merged over ``filter``). Each maps a
    label name to the label values it accepts.
    """

    metric: str
    filter: Mapping[str, tuple[str, ...]]
    bad: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class LatencySLI:
    """Events slower than ``threshold_seconds`` (a bucket bound of ``metric``) are bad."""

    metric: str
    filter: Mapping[str, tuple[str, ...]]
    threshold_seconds: float


@dataclass(frozen=True)
class SLO:
    """One service level objective, validated."""

    service: str
    name: str
    objective: Fraction  # percent, kept exact so that 99.9 gives a budget of exactly 0.001
    window_days: int
    description: str
    sli: EventsSLI | LatencySLI
    alert_name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    alert_labels: Mapping[str, str] = field(default_factory=dict)
    absent_for: str = "15m"

    @property
    def sloth_id(self) -> str:
        """The ``sloth_id`` label value: ``{service}-{name}``."""
        return f"{self.service}-{self.name}"

    @property
    def objective_ratio(self) -> float:
        """The objective as a ratio, e.g. 0.995."""
        return float(self.objective / 100)

    @property
    def error_budget(self) -> float:
        """The error budget as a ratio, e.g. 0.005."""
        return float(1 - self.objective / 100)


@dataclass(frozen=True)
class SLOSpec:
    """A parsed spec file: one service and its SLOs."""

    service: str
    slos: tuple[SLO, ...]


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


# --- spec parsing -------------------------------------------------------------------------------


def _fail(where: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"{where}: {message}")


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected a mapping, got {type(value).__name__} {value!r}")
    return value


def _check_keys(
    data: Mapping[str, Any], where: str, *, required: set[str], optional: set[str]
) -> None:
    missing = sorted(required - set(data))
    if missing:
        raise _fail(where, f"missing key(s) {missing}; add them (see docs/slo.md)")
    unknown = sorted(set(data) - required - optional)
    if unknown:
        allowed = sorted(required | optional)
        raise _fail(where, f"unknown key(s) {unknown}; allowed keys are {allowed}")


def _string(value: object, where: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, f"expected a non-empty string, got {value!r}")
    if pattern is not None and not pattern.match(value):
        raise _fail(where, f"{value!r} does not match {pattern.pattern}")
    return value


def _selector(
    value: object, where: str, allowed_labels: frozenset[str]
) -> dict[str, tuple[str, ...]]:
    data = _mapping({} if value is None else value, where)
    result: dict[str, tuple[str, ...]] = {}
    for label, raw in data.items():
        label_where = f"{where}.{label}"
        if not isinstance(label, str) or not _LABEL_NAME_RE.match(label):
            raise _fail(where, f"{label!r} is not a valid Prometheus label name")
        if label not in allowed_labels:
            raise _fail(
                label_where,
                f"the metric has no label {label!r}; its labels are {sorted(allowed_labels)}",
            )
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise _fail(label_where, "an empty list matches nothing; give at least one value")
        values = tuple(_string(item, label_where) for item in items)
        known = _KNOWN_VALUES.get(label)
        if known is not None:
            unknown = sorted(set(values) - known)
            if unknown:
                raise _fail(label_where, f"unknown value(s) {unknown}; use {sorted(known)}")
        result[label] = values
    return result


def _parse_objective(value: object, where: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail(where, f"expected a percentage such as 99.5, got {value!r}")
    try:
        # Through str() so that 99.9 is the decimal 99.9, not its binary approximation.
        objective = Fraction(str(value))
    except ValueError:
        raise _fail(where, f"expected a percentage such as 99.5, got {value!r}") from None
    if not 0 < objective < 100:
        raise _fail(where, f"{value!r} is not a percentage strictly between 0 and 100 (e.g. 99.5)")
    return objective


def _parse_window(value: object, where: str) -> int:
    match = _WINDOW_RE.match(value) if isinstance(value, str) else None
    days = int(match.group(1)) if match else 0
    if not _MIN_WINDOW_DAYS <= days <= _MAX_WINDOW_DAYS:
        raise _fail(
            where,
            f"expected a whole number of days between {_MIN_WINDOW_DAYS}d and "
            f"{_MAX_WINDOW_DAYS}d such as 30d or 28d, got {value!r}",
        )
    return days


def _parse_sli(value: object, where: str) -> EventsSLI | LatencySLI:
    data = _mapping(value, where)
    if len(data) != 1 or next(iter(data)) not in ("events", "latency"):
        raise _fail(where, f"expected exactly one of 'events' or 'latency', got {sorted(data)}")
    kind, body = next(iter(data.items()))
    where = f"{where}.{kind}"
    body = _mapping(body, where)
    if kind == "events":
        _check_keys(body, where, required={"metric", "bad"}, optional={"filter"})
        metric = _string(body["metric"], f"{where}.metric")
        if metric not in _EVENT_METRICS:
            raise _fail(
                f"{where}.metric",
                f"{metric!r} is not a counter chainsight exports; use one of "
                f"{sorted(_EVENT_METRICS)}",
            )
        labels = _EVENT_METRICS[metric] | _COMMON_LABELS
        selected = _selector(body.get("filter"), f"{where}.filter", labels)
        bad = _selector(body["bad"], f"{where}.bad", labels)
        if not bad:
            raise _fail(f"{where}.bad", "give at least one label that marks an event as bad")
        for label, values in bad.items():
            outside = sorted(set(values) - set(selected.get(label, values)))
            if outside:
                raise _fail(
                    f"{where}.bad.{label}",
                    f"value(s) {outside} are excluded by the filter {list(selected[label])}: "
                    "bad events must be a subset of all events",
                )
        return EventsSLI(metric=metric, filter=selected, bad=bad)

    _check_keys(body, where, required={"metric", "threshold_seconds"}, optional={"filter"})
    metric = _string(body["metric"], f"{where}.metric")
    if metric not in _LATENCY_METRICS:
        raise _fail(
            f"{where}.metric",
            f"{metric!r} is not a latency histogram chainsight exports; use one of "
            f"{sorted(_LATENCY_METRICS)} (the family name, without _bucket)",
        )
    labels, buckets = _LATENCY_METRICS[metric]
    if isinstance(body.get("filter"), Mapping) and "le" in body["filter"]:
        raise _fail(f"{where}.filter", "do not filter on 'le'; set threshold_seconds instead")
    selected = _selector(body.get("filter"), f"{where}.filter", labels | _COMMON_LABELS)
    threshold = body["threshold_seconds"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise _fail(f"{where}.threshold_seconds", f"expected a number, got {threshold!r}")
    if float(threshold) not in buckets:
        raise _fail(
            f"{where}.threshold_seconds",
            f"{threshold!r} is not a bucket bound of {metric}; a latency SLI can only count "
            f"at a bound. Use one of {[float(b) for b in buckets]}",
        )
    return LatencySLI(metric=metric, filter=selected, threshold_seconds=float(threshold))


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", text) if part)


def _parse_slo(data: Mapping[str, Any], service: str, where: str) -> SLO:
    _check_keys(
        data,
        where,
        required={"name", "objective", "window", "sli"},
        optional={"description", "labels", "alerting"},
    )
    name = _string(data["name"], f"{where}.name", _SLO_NAME_RE)
    where = f"{where} ({name})"
    alerting = _mapping(data.get("alerting", {}), f"{where}.alerting")
    _check_keys(
        alerting, f"{where}.alerting", required=set(), optional={"name", "labels", "absent_for"}
    )
    alert_name = _string(
        alerting.get("name", _camel(service) + _camel(name)),
        f"{where}.alerting.name",
        _ALERT_NAME_RE,
    )
    return SLO(
        service=service,
        name=name,
        objective=_parse_objective(data["objective"], f"{where}.objective"),
        window_days=_parse_window(data["window"], f"{where}.window"),
        description=_string(data.get("description", name), f"{where}.description"),
        sli=_parse_sli(data["sli"], f"{where}.sli"),
        alert_name=alert_name,
        labels=_plain_labels(data.get("labels"), f"{where}.labels"),
        alert_labels=_plain_labels(alerting.get("labels"), f"{where}.alerting.labels"),
        absent_for=_string(
            alerting.get("absent_for", "15m"), f"{where}.alerting.absent_for", _DURATION_RE
        ),
    )


def _plain_labels(value: object, where: str) -> dict[str, str]:
    data = _mapping({} if value is None else value, where)
    labels: dict[str, str] = {}
    for key, raw in data.items():
        if not isinstance(key, str) or not _LABEL_NAME_RE.match(key) or key.startswith("__"):
            raise _fail(where, f"{key!r} is not a valid label name")
        if key.startswith("sloth_") or key in ("severity", "alertname"):
            raise _fail(where, f"label {key!r} is set by the generator; remove it from the spec")
        labels[key] = _string(str(raw), f"{where}.{key}")
    domain = labels.get("fault_domain")
    if domain is not None and domain not in n.FAULTS:
        raise _fail(f"{where}.fault_domain", f"{domain!r} is not a fault domain; use {n.FAULTS}")
    return labels


def parse_spec(data: object, *, source: str = "<spec>") -> SLOSpec:
    """Validate a loaded spec document; raise :class:`ConfigurationError` naming the bad field."""
    root = _mapping(data, source)
    _check_keys(root, source, required={"service", "slos"}, optional={"version"})
    if root.get("version", 1) != 1:
        raise _fail(f"{source}.version", f"only version 1 is known, got {root['version']!r}")
    service = _string(root["service"], f"{source}.service", _SERVICE_RE)
    raw_slos = root["slos"]
    if not isinstance(raw_slos, list) or not raw_slos:
        raise _fail(f"{source}.slos", f"expected a non-empty list of SLOs, got {raw_slos!r}")
    slos = tuple(
        _parse_slo(_mapping(item, f"{source}.slos[{i}]"), service, f"{source}.slos[{i}]")
        for i, item in enumerate(raw_slos)
    )
    seen: set[str] = set()
    for slo in slos:
        for key in (slo.name, slo.alert_name):
            if key in seen:
                raise _fail(source, f"{key!r} is used by two SLOs; names must be unique")
            seen.add(key)
    return SLOSpec(service=service, slos=slos)


def load_spec(path: str | Path) -> SLOSpec:
    """Read and validate a spec file (YAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read SLO spec {str(path)!r}: {exc.strerror}; check the path"
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"SLO spec {str(path)!r} is not valid YAML: {exc}") from exc
    return parse_spec(data, source=str(path))


# --- rule generation ----------------------------------------------------------------------------


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
    # `>= 0` drops the NaN of an idle window (0/0): no sample instead of a NaN that would poison
    # the period average. `or vector(0)`: prometheus-client creates the bad series only at the
    # first bad event, and a missing numerator must read as "no errors", not as "no data".
    if isinstance(sli, EventsSLI):
        return (
            f"(\n  (sum(rate({first}[{window}])) or vector(0))\n  /\n"
            f"  sum(rate({total}[{window}]))\n) >= 0"
        )
    return (
        f"(\n  1 - (\n    sum(rate({first}[{window}]))\n    /\n"
        f"    sum(rate({total}[{window}]))\n  )\n) >= 0"
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


def _burn_alert(
    slo: SLO,
    alertname: str,
    severity: str,
    pairs: tuple[tuple[float, str, str], tuple[float, str, str]],
    runbook_base: str,
) -> dict[str, Any]:
    ids = _ids(slo)
    budget = _fmt(slo.error_budget)
    clauses = []
    for factor, short, long in pairs:
        clauses.append(
            "(\n"
            f"  max(slo:sli_error:ratio_rate{short}{{{ids}}} > ({_fmt(factor)} * {budget}))"
            " without (sloth_window)\n"
            "  and\n"
            f"  max(slo:sli_error:ratio_rate{long}{{{ids}}} > ({_fmt(factor)} * {budget}))"
            " without (sloth_window)\n"
            ")"
        )
    (f1, s1, l1), (f2, s2, l2) = pairs
    speed = "fast" if severity == "page" else "steadily"
    labels = {**slo.alert_labels, "severity": severity, "sloth_severity": severity}
    return {
        "alert": alertname,
        "expr": "\nor\n".join(clauses),
        "labels": labels,
        "annotations": {
            "summary": f"SLO {slo.service}/{slo.name} is burning its error budget {speed}",
            "description": (
                f"Error ratio {{{{ $value | humanizePercentage }}}} over the short window "
                f"({_bad_definition(slo)}); the objective is {_pct(slo.objective)}% over "
                f"{slo.window_days}d (error budget {_pct(slo.error_budget * 100)}%). "
                f"Burn rate above {f1:g}x over {s1} and {l1}, or above {f2:g}x over {s2} and "
                f"{l2}. SLO: {slo.description}"
            ),
            "runbook_url": f"{runbook_base.rstrip('/')}/{alertname}.md",
        },
    }


def _slo_groups(slo: SLO, runbook_base: str) -> list[dict[str, Any]]:
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
    join = "on(sloth_id, sloth_slo, sloth_service) group_left"
    meta_rules: list[dict[str, Any]] = [
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
    rates = burn_rates(slo.window_days)
    page, ticket, absent = alert_names(slo)
    _, _, watched = _selectors(slo.sli)
    alert_rules = [
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
    return [
        {"name": f"chainsight-slo-sli-recordings-{slo.sloth_id}", "rules": sli_rules},
        {"name": f"chainsight-slo-meta-recordings-{slo.sloth_id}", "rules": meta_rules},
        {"name": f"chainsight-slo-alerts-{slo.sloth_id}", "rules": alert_rules},
    ]


def generate_rules(
    spec: SLOSpec, *, runbook_base: str = DEFAULT_RUNBOOK_BASE
) -> dict[str, list[dict[str, Any]]]:
    """Return the Prometheus rule file (as data) for every SLO of ``spec``."""
    groups: list[dict[str, Any]] = []
    for slo in spec.slos:
        groups.extend(_slo_groups(slo, runbook_base))
    return {"groups": groups}


class _Dumper(yaml.SafeDumper):
    """Safe YAML with PromQL kept readable: multi-line strings as literal blocks, no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def render_rules(spec: SLOSpec, *, source: str, runbook_base: str = DEFAULT_RUNBOOK_BASE) -> str:
    """Return the rule file text, with a header naming the spec it was generated from."""
    header = (
        f"# Generated by `chainsight slo generate {source}`. Do not edit by hand:\n"
        "# change the spec and regenerate (see docs/alerts.md).\n"
    )
    body = yaml.dump(
        generate_rules(spec, runbook_base=runbook_base),
        Dumper=_Dumper,
        sort_keys=False,
        width=1000,
        allow_unicode=True,
    )
    return header + body


# --- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``generate`` and ``validate`` subcommands to ``chainsight slo``."""
    sub = parser.add_subparsers(dest="slo_command", metavar="ACTION", required=True)
    gen = sub.add_parser(
        "generate",
        help="write Prometheus recording and alerting rules for an SLO spec",
        description="Write Prometheus recording and alerting rules (Sloth conventions).",
    )
    gen.add_argument("spec", metavar="SPEC", help="SLO spec file (YAML)")
    gen.add_argument(
        "-o", "--output", metavar="OUT", help="rule file to write (default: standard output)"
    )
    gen.add_argument(
        "--runbook-base",
        default=DEFAULT_RUNBOOK_BASE,
        metavar="URL",
        help="base of every runbook_url; <URL>/<AlertName>.md (default: %(default)s)",
    )
    val = sub.add_parser(
        "validate",
        help="check an SLO spec and summarise it",
        description="Check an SLO spec and print what it promises and when it alerts.",
    )
    val.add_argument("spec", metavar="SPEC", help="SLO spec file (YAML)")


def _summary(slo: SLO) -> str:
    rates = burn_rates(slo.window_days)
    page, ticket, absent = alert_names(slo)
    return (
        f"{slo.sloth_id}: {_pct(slo.objective)}% over {slo.window_days}d "
        f"(error budget {_pct(slo.error_budget * 100)}%); {slo.sli.metric}; "
        f"page {page} at {rates.page_fast:g}x/{rates.page_slow:g}x, "
        f"ticket {ticket} at {rates.ticket_fast:g}x/{rates.ticket_slow:g}x, "
        f"missing data {absent} after {slo.absent_for}"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``chainsight slo generate|validate``; return 0, or 2 for a bad spec or path."""
    try:
        spec = load_spec(args.spec)
        if args.slo_command == "validate":
            for slo in spec.slos:
                print(_summary(slo))
            return 0
        text = render_rules(spec, source=args.spec, runbook_base=args.runbook_base)
        if args.output is None:
            sys.stdout.write(text)
        else:
            try:
                Path(args.output).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot write {args.output!r}: {exc.strerror}; check the directory exists"
                ) from exc
    except ConfigurationError as exc:
        print(f"chainsight slo: error: {exc}", file=sys.stderr)
        return 2
    return 0
