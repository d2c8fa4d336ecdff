"""The SLO spec: its data model and the validation of a loaded spec document.

:func:`parse_spec` takes the document as loaded (mappings, lists, strings, numbers) and returns
an :class:`SLOSpec`, or raises :class:`ConfigurationError` naming the bad field and the fix.
Reading the YAML file is ``chainsight.tools.slo``'s job. The format is in ``docs/slo.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final

from chainsight import _names as n
from chainsight.tools.slo_fields import (
    ALERT_NAME_RE,
    DURATION_RE,
    check_keys,
    fail,
    mapping,
    number,
    string,
)
from chainsight.tools.slo_release import ReleaseSpec, parse_releases

__all__ = [
    "SLO",
    "EventsSLI",
    "LatencySLI",
    "SLOSpec",
    "parse_spec",
]

# Shorter periods make the 3-day ticket window meaningless; longer ones make rate() too costly.
_MIN_WINDOW_DAYS: Final = 7
_MAX_WINDOW_DAYS: Final = 90

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
        n.L_GEN_AI_RESPONSE_MODEL,
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
_WINDOW_RE: Final = re.compile(r"^([1-9][0-9]*)d$")


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
    # A burn must hold this long before it notifies: a short burst at start-up or one bad
    # minute stays silent (the issue was a ticket 20 s after Prometheus started).
    page_for: str = "2m"
    ticket_for: str = "15m"
    # A window pair only counts when its long window holds at least this many events: on a
    # young or quiet series one error is a large ratio.
    min_events: int = 100

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
    releases: ReleaseSpec | None = None


# --- validation ----------------------------------------------------------------------------------


def _selector(
    value: object, where: str, allowed_labels: frozenset[str]
) -> dict[str, tuple[str, ...]]:
    data = mapping({} if value is None else value, where)
    result: dict[str, tuple[str, ...]] = {}
    for label, raw in data.items():
        label_where = f"{where}.{label}"
        if not isinstance(label, str) or not _LABEL_NAME_RE.match(label):
            raise fail(where, f"{label!r} is not a valid Prometheus label name")
        if label not in allowed_labels:
            raise fail(
                label_where,
                f"the metric has no label {label!r}; its labels are {sorted(allowed_labels)}",
            )
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise fail(label_where, "an empty list matches nothing; give at least one value")
        values = tuple(string(item, label_where) for item in items)
        known = _KNOWN_VALUES.get(label)
        if known is not None:
            unknown = sorted(set(values) - known)
            if unknown:
                raise fail(label_where, f"unknown value(s) {unknown}; use {sorted(known)}")
        result[label] = values
    return result


def _parse_objective(value: object, where: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise fail(where, f"expected a percentage such as 99.5, got {value!r}")
    try:
        # Through str() so that 99.9 is the decimal 99.9, not its binary approximation.
        objective = Fraction(str(value))
    except ValueError:
        raise fail(where, f"expected a percentage such as 99.5, got {value!r}") from None
    if not 0 < objective < 100:
        raise fail(where, f"{value!r} is not a percentage strictly between 0 and 100 (e.g. 99.5)")
    return objective


def _parse_window(value: object, where: str) -> int:
    match = _WINDOW_RE.match(value) if isinstance(value, str) else None
    days = int(match.group(1)) if match else 0
    if not _MIN_WINDOW_DAYS <= days <= _MAX_WINDOW_DAYS:
        raise fail(
            where,
            f"expected a whole number of days between {_MIN_WINDOW_DAYS}d and "
            f"{_MAX_WINDOW_DAYS}d such as 30d or 28d, got {value!r}",
        )
    return days


def _parse_sli(value: object, where: str) -> EventsSLI | LatencySLI:
    data = mapping(value, where)
    if len(data) != 1 or next(iter(data)) not in ("events", "latency"):
        raise fail(where, f"expected exactly one of 'events' or 'latency', got {sorted(data)}")
    kind, body = next(iter(data.items()))
    where = f"{where}.{kind}"
    body = mapping(body, where)
    if kind == "events":
        check_keys(body, where, required={"metric", "bad"}, optional={"filter"})
        metric = string(body["metric"], f"{where}.metric")
        if metric not in _EVENT_METRICS:
            raise fail(
                f"{where}.metric",
                f"{metric!r} is not a counter chainsight exports; use one of "
                f"{sorted(_EVENT_METRICS)}",
            )
        labels = _EVENT_METRICS[metric] | _COMMON_LABELS
        selected = _selector(body.get("filter"), f"{where}.filter", labels)
        bad = _selector(body["bad"], f"{where}.bad", labels)
        if not bad:
            raise fail(f"{where}.bad", "give at least one label that marks an event as bad")
        for label, values in bad.items():
            outside = sorted(set(values) - set(selected.get(label, values)))
            if outside:
                raise fail(
                    f"{where}.bad.{label}",
                    f"value(s) {outside} are excluded by the filter {list(selected[label])}: "
                    "bad events must be a subset of all events",
                )
        return EventsSLI(metric=metric, filter=selected, bad=bad)

    check_keys(body, where, required={"metric", "threshold_seconds"}, optional={"filter"})
    metric = string(body["metric"], f"{where}.metric")
    if metric not in _LATENCY_METRICS:
        raise fail(
            f"{where}.metric",
            f"{metric!r} is not a latency histogram chainsight exports; use one of "
            f"{sorted(_LATENCY_METRICS)} (the family name, without _bucket)",
        )
    labels, buckets = _LATENCY_METRICS[metric]
    if isinstance(body.get("filter"), Mapping) and "le" in body["filter"]:
        raise fail(f"{where}.filter", "do not filter on 'le'; set threshold_seconds instead")
    selected = _selector(body.get("filter"), f"{where}.filter", labels | _COMMON_LABELS)
    threshold = body["threshold_seconds"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise fail(f"{where}.threshold_seconds", f"expected a number, got {threshold!r}")
    if float(threshold) not in buckets:
        raise fail(
            f"{where}.threshold_seconds",
            f"{threshold!r} is not a bucket bound of {metric}; a latency SLI can only count "
            f"at a bound. Use one of {[float(b) for b in buckets]}",
        )
    return LatencySLI(metric=metric, filter=selected, threshold_seconds=float(threshold))


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", text) if part)


def _parse_slo(data: Mapping[str, Any], service: str, where: str) -> SLO:
    check_keys(
        data,
        where,
        required={"name", "objective", "window", "sli"},
        optional={"description", "labels", "alerting"},
    )
    name = string(data["name"], f"{where}.name", _SLO_NAME_RE)
    where = f"{where} ({name})"
    alerting = mapping(data.get("alerting", {}), f"{where}.alerting")
    check_keys(
        alerting,
        f"{where}.alerting",
        required=set(),
        optional={"name", "labels", "absent_for", "page_for", "ticket_for", "min_events"},
    )
    min_events = number(
        alerting.get("min_events", 100), f"{where}.alerting.min_events", minimum=1, example="100"
    )
    if min_events != int(min_events):
        raise fail(f"{where}.alerting.min_events", f"expected a whole number, got {min_events!r}")
    alert_name = string(
        alerting.get("name", _camel(service) + _camel(name)),
        f"{where}.alerting.name",
        ALERT_NAME_RE,
    )
    return SLO(
        service=service,
        name=name,
        objective=_parse_objective(data["objective"], f"{where}.objective"),
        window_days=_parse_window(data["window"], f"{where}.window"),
        description=string(data.get("description", name), f"{where}.description"),
        sli=_parse_sli(data["sli"], f"{where}.sli"),
        alert_name=alert_name,
        labels=_plain_labels(data.get("labels"), f"{where}.labels"),
        alert_labels=_plain_labels(alerting.get("labels"), f"{where}.alerting.labels"),
        absent_for=string(
            alerting.get("absent_for", "15m"), f"{where}.alerting.absent_for", DURATION_RE
        ),
        page_for=string(alerting.get("page_for", "2m"), f"{where}.alerting.page_for", DURATION_RE),
        ticket_for=string(
            alerting.get("ticket_for", "15m"), f"{where}.alerting.ticket_for", DURATION_RE
        ),
        min_events=int(min_events),
    )


def _plain_labels(value: object, where: str) -> dict[str, str]:
    data = mapping({} if value is None else value, where)
    labels: dict[str, str] = {}
    for key, raw in data.items():
        if not isinstance(key, str) or not _LABEL_NAME_RE.match(key) or key.startswith("__"):
            raise fail(where, f"{key!r} is not a valid label name")
        if key.startswith("sloth_") or key in ("severity", "alertname"):
            raise fail(where, f"label {key!r} is set by the generator; remove it from the spec")
        labels[key] = string(str(raw), f"{where}.{key}")
    domain = labels.get("fault_domain")
    if domain is not None and domain not in n.FAULTS:
        raise fail(f"{where}.fault_domain", f"{domain!r} is not a fault domain; use {n.FAULTS}")
    return labels


def parse_spec(data: object, *, source: str = "<spec>") -> SLOSpec:
    """Validate a loaded spec document; raise :class:`ConfigurationError` naming the bad field."""
    root = mapping(data, source)
    check_keys(root, source, required={"service"}, optional={"version", "slos", "releases"})
    if root.get("version", 1) != 1:
        raise fail(f"{source}.version", f"only version 1 is known, got {root['version']!r}")
    service = string(root["service"], f"{source}.service", _SERVICE_RE)
    releases = None
    if "releases" in root:
        releases = parse_releases(root["releases"], service, f"{source}.releases")
    elif "slos" not in root:
        raise fail(source, "missing key(s) ['slos']; add them (see docs/slo.md)")
    raw_slos = root.get("slos", [])
    if releases is not None and raw_slos == []:
        return SLOSpec(service=service, slos=(), releases=releases)
    if not isinstance(raw_slos, list) or not raw_slos:
        raise fail(f"{source}.slos", f"expected a non-empty list of SLOs, got {raw_slos!r}")
    slos = tuple(
        _parse_slo(mapping(item, f"{source}.slos[{i}]"), service, f"{source}.slos[{i}]")
        for i, item in enumerate(raw_slos)
    )
    seen: set[str] = set()
    for slo in slos:
        for key in (slo.name, slo.alert_name):
            if key in seen:
                raise fail(source, f"{key!r} is used by two SLOs; names must be unique")
            seen.add(key)
    return SLOSpec(service=service, slos=slos, releases=releases)
