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
from chainsight.errors import ConfigurationError

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


# --- validation ----------------------------------------------------------------------------------


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
