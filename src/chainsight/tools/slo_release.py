"""Rollback triggers as code: a candidate release against the previous one, over the same window.

The ``releases:`` section of an SLO spec (``slos/release-regression.yaml``) becomes recording
rules per ``(job, release)`` and four alerts, one per trigger: validation failures (quality),
errors by fault domain (dependencies), p95 request latency and cost per request. Each compares
the *candidate* release of a job with its *previous* release over the same window, so a canary
is judged against the traffic it runs next to, not against yesterday.

Which release is which comes from ``chainsight_release_info``: the candidate is a release that
Prometheus first saw later than the job's oldest release (within ``new_within``); the previous
one is the busiest other release. Both must have served ``min_requests`` in the window, so a
canary that has seen ten requests cannot trigger a rollback, and neither can a release that is
better than the one before it (the older release is never the candidate).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from chainsight import _names as n
from chainsight.tools.slo_fields import (
    ALERT_NAME_RE,
    DURATION_RE,
    check_keys,
    duration_seconds,
    fail,
    mapping,
    number,
    string,
)

__all__ = [
    "TRIGGERS",
    "ReleaseSpec",
    "Trigger",
    "describe_releases",
    "parse_releases",
    "release_alert_names",
    "release_groups",
]

# A release first seen within this many seconds of the job's oldest one started with it (two
# scrapes of a Prometheus that came up mid-canary): neither is a candidate.
_SAME_START_SECONDS: Final = 60

_REQUESTS: Final = f"{n.M_REQUESTS}_total"
_STAGE_COUNT: Final = f"{n.M_STAGE_DURATION}_count"
_REQUEST_BUCKET: Final = f"{n.M_REQUEST_DURATION}_bucket"
_COST_SUM: Final = f"{n.M_REQUEST_COST_USD}_sum"
_COST_COUNT: Final = f"{n.M_REQUEST_COST_USD}_count"
_RELEASE_INFO: Final = f"{n.M_RELEASE_INFO}_info"
_SERVED: Final = 'outcome=~"ok|error|degraded"'


@dataclass(frozen=True)
class Trigger:
    """Fire when candidate > ``factor`` × previous + ``margin`` (the margin keeps a near-zero
    previous value from turning noise into a rollback)."""

    factor: float
    margin: float


# trigger key: (alert suffix, recording rule, default factor, default margin, what it measures)
TRIGGERS: Final[Mapping[str, tuple[str, str, float, float, str]]] = {
    "validation_failure_ratio": (
        "ValidationRegression",
        "slo:release_validation_failure:ratio",
        2.0,
        0.02,
        "share of validation stages that failed",
    ),
    "error_ratio": (
        "ErrorRegression",
        "slo:release_error:ratio",
        2.0,
        0.01,
        "share of requests that failed, per fault domain",
    ),
    "p95_seconds": (
        "LatencyRegression",
        "slo:release_request_duration:p95",
        1.5,
        0.25,
        "p95 latency of served requests in seconds",
    ),
    "cost_per_request_usd": (
        "CostRegression",
        "slo:release_cost_per_request:usd",
        1.5,
        0.0,
        "mean cost of a priced request in USD",
    ),
}


@dataclass(frozen=True)
class ReleaseSpec:
    """The validated ``releases:`` section."""

    service: str
    alert_name: str
    window: str
    min_requests: int
    for_: str
    new_within: str
    triggers: Mapping[str, Trigger]


def parse_releases(value: object, service: str, where: str) -> ReleaseSpec:
    """Validate the ``releases:`` section of a spec."""
    data = mapping(value, where)
    check_keys(
        data,
        where,
        required=set(),
        optional={"window", "min_requests", "for", "new_within", "alerting", "triggers"},
    )
    alerting = mapping(data.get("alerting", {}), f"{where}.alerting")
    check_keys(alerting, f"{where}.alerting", required=set(), optional={"name"})
    default_name = "".join(p[:1].upper() + p[1:] for p in service.replace("_", "-").split("-"))
    min_requests = number(
        data.get("min_requests", 100), f"{where}.min_requests", minimum=1, example="100"
    )
    if min_requests != int(min_requests):
        raise fail(f"{where}.min_requests", f"expected a whole number, got {min_requests!r}")
    raw_triggers = mapping(data.get("triggers", {}), f"{where}.triggers")
    check_keys(raw_triggers, f"{where}.triggers", required=set(), optional=set(TRIGGERS))
    triggers = {}
    for key, (_, _, factor, margin, _) in TRIGGERS.items():
        raw = mapping(raw_triggers.get(key, {}), f"{where}.triggers.{key}")
        check_keys(raw, f"{where}.triggers.{key}", required=set(), optional={"factor", "margin"})
        triggers[key] = Trigger(
            factor=number(
                raw.get("factor", factor), f"{where}.triggers.{key}.factor", minimum=1, example="2"
            ),
            margin=number(
                raw.get("margin", margin), f"{where}.triggers.{key}.margin", minimum=0, example="0"
            ),
        )
    return ReleaseSpec(
        service=service,
        alert_name=string(
            alerting.get("name", default_name + "Release"), f"{where}.alerting.name", ALERT_NAME_RE
        ),
        window=string(data.get("window", "30m"), f"{where}.window", DURATION_RE),
        min_requests=int(min_requests),
        for_=string(data.get("for", "10m"), f"{where}.for", DURATION_RE),
        new_within=string(data.get("new_within", "1d"), f"{where}.new_within", DURATION_RE),
        triggers=triggers,
    )


def release_alert_names(spec: ReleaseSpec) -> tuple[str, ...]:
    """The alert names, one per trigger, in :data:`TRIGGERS` order."""
    return tuple(spec.alert_name + suffix for suffix, *_ in TRIGGERS.values())


def describe_releases(spec: ReleaseSpec) -> str:
    """One line for ``chainsight slo validate``: what the rollback triggers compare."""
    triggers = ", ".join(
        f"{spec.alert_name}{suffix} at {spec.triggers[key].factor:g}x+{spec.triggers[key].margin:g}"
        for key, (suffix, *_) in TRIGGERS.items()
    )
    return (
        f"{spec.service} releases: candidate vs previous over {spec.window}, at least "
        f"{spec.min_requests} requests each, for {spec.for_}; {triggers}"
    )


def _role_recordings(spec: ReleaseSpec) -> list[dict[str, Any]]:
    """Requests per (job, release), and which release is the candidate and the previous one."""
    w = spec.window
    seconds = duration_seconds(w)
    return [
        {
            # Sample timestamps of the release gauge: the earliest is when the release started
            # serving (or when this Prometheus started, for a release older than that).
            "record": "slo:release_first_seen:timestamp",
            "expr": (
                f"min by (job, release) (min_over_time(timestamp({_RELEASE_INFO})"
                f"[{spec.new_within}:1m]))"
            ),
        },
        {
            "record": "slo:release_requests:rate",
            "expr": f"sum by (job, release) (rate({_REQUESTS}{{{_SERVED}}}[{w}]))",
        },
        {
            "record": "slo:release_candidate:info",
            "expr": (
                "(\n  (\n    slo:release_first_seen:timestamp\n    > on (job) group_left ()\n"
                "    (min by (job) (slo:release_first_seen:timestamp) + "
                f"{_SAME_START_SECONDS})\n  )\n"
                f"  and on (job, release) (slo:release_requests:rate * {seconds} >= "
                f"{spec.min_requests})\n) * 0 + 1"
            ),
        },
        {
            # The busiest release that is not a candidate, named in ``previous_release``.
            "record": "slo:release_previous:info",
            "expr": (
                "label_replace(\n  topk by (job) (1,\n    (slo:release_requests:rate * "
                f"{seconds} >= {spec.min_requests})\n"
                "    unless on (job, release) slo:release_candidate:info\n  ) * 0 + 1,\n"
                '  "previous_release", "$1", "release", "(.*)"\n)'
            ),
        },
    ]


def _value_recordings(spec: ReleaseSpec) -> list[dict[str, Any]]:
    """The four values the triggers compare, per (job, release) over the window."""
    w = spec.window
    by = "sum by (job, release)"
    # Families with no ``release`` label take the release of the process through its release
    # gauge (one release per process at a time). topk: one gauge per target even while a
    # replaced one is still fresh, so the join never fails with "many-to-many matching".
    per_release = (
        f"* on (job, instance) group_left (release) topk by (job, instance) (1, {_RELEASE_INFO})"
    )
    return [
        {
            "record": "slo:release_error:ratio",
            "expr": (
                f'sum by (job, release, fault) (rate({_REQUESTS}{{outcome="error"}}[{w}]))\n'
                "/ on (job, release) group_left ()\nslo:release_requests:rate"
            ),
        },
        {
            # A validation stage that failed ends as an error (or degraded when it fell back).
            "record": "slo:release_validation_failure:ratio",
            "expr": (
                f'(\n  {by} (rate({_STAGE_COUNT}{{kind="validation",outcome=~"error|degraded"}}'
                f"[{w}]))\n  or\n"
                f'  0 * {by} (rate({_STAGE_COUNT}{{kind="validation"}}[{w}]))\n)\n'
                f'/\n{by} (rate({_STAGE_COUNT}{{kind="validation"}}[{w}]))'
            ),
        },
        {
            "record": "slo:release_request_duration:p95",
            "expr": (
                "histogram_quantile(0.95, sum by (job, release, le) "
                f'(rate({_REQUEST_BUCKET}{{outcome=~"ok|degraded"}}[{w}])))'
            ),
        },
        {
            "record": "slo:release_cost_per_request:usd",
            "expr": (
                f"{by} (rate({_COST_SUM}[{w}]) {per_release})\n/\n"
                f"{by} (rate({_COST_COUNT}[{w}]) {per_release})"
            ),
        },
    ]


def _recordings(spec: ReleaseSpec) -> list[dict[str, Any]]:
    """Every recording, labelled with the window it covers."""
    rules = [*_role_recordings(spec), *_value_recordings(spec)]
    for rule in rules:
        rule["labels"] = {"release_window": spec.window}
    return rules


def _previous(record: str, by: str) -> str:
    """The previous release's value of ``record``, without its ``release`` label."""
    return f"max by ({by}) ({record} and on (job, release) slo:release_previous:info)"


def _trigger_expr(key: str, record: str, trigger: Trigger) -> str:
    if key == "error_ratio":
        candidate = f'({record}{{fault!="none"}} and on (job, release) slo:release_candidate:info)'
        # A domain without errors in the previous release compares with zero, not with nothing.
        previous = (
            f"(\n    {_previous(record, 'job, fault')}\n    or\n"
            f"    0 * max by (job, fault) {candidate}\n  )"
        )
        on = "job, fault"
    else:
        candidate = f"({record} and on (job, release) slo:release_candidate:info)"
        previous = _previous(record, "job")
        on = "job"
    expr = (
        f"(\n  {candidate}\n  > on ({on}) group_left ()\n"
        f"  ({trigger.factor!r} * {previous} + {trigger.margin!r})\n)\n"
        "* on (job) group_left (previous_release)\n"
        "max by (job, previous_release) (slo:release_previous:info)"
    )
    if key == "error_ratio":
        relabel = '"fault_domain", "$1", "fault", "(.*)"'
        expr = f"max without (fault) (label_replace(\n{expr},\n{relabel}\n))"
    return expr


_SUMMARIES: Final = {
    "validation_failure_ratio": (
        "Release {{ $labels.release }} fails validation more than {{ $labels.previous_release }}",
        "{{ $value | humanizePercentage }} of validation stages failed",
    ),
    "error_ratio": (
        "Release {{ $labels.release }} has more {{ $labels.fault_domain }} errors than "
        "{{ $labels.previous_release }}",
        "{{ $value | humanizePercentage }} of requests failed in fault domain "
        "{{ $labels.fault_domain }}",
    ),
    "p95_seconds": (
        "Release {{ $labels.release }} is slower than {{ $labels.previous_release }}",
        "p95 request latency is {{ $value | humanizeDuration }}",
    ),
    "cost_per_request_usd": (
        "Release {{ $labels.release }} costs more per request than {{ $labels.previous_release }}",
        'a priced request costs {{ printf "%.4f" $value }} USD on average',
    ),
}


def _points(margin: float) -> str:
    points = margin * 100
    return f"{points:g} percentage point{'' if points == 1 else 's'}"


def release_groups(spec: ReleaseSpec, runbook_base: str) -> list[dict[str, Any]]:
    """The rule group of the release-regression triggers: recordings, then alerts."""
    alerts = []
    for key, (suffix, record, _, _, measures) in TRIGGERS.items():
        trigger = spec.triggers[key]
        summary, value = _SUMMARIES[key]
        margin = {
            "p95_seconds": f"{trigger.margin:g}s",
            "cost_per_request_usd": f"{trigger.margin:g} USD",
        }.get(key, _points(trigger.margin))
        alertname = spec.alert_name + suffix
        alerts.append(
            {
                "alert": alertname,
                "expr": _trigger_expr(key, record, trigger),
                "for": spec.for_,
                "labels": {"severity": "ticket", "trigger": "rollback"},
                "annotations": {
                    "summary": summary,
                    "description": (
                        f"In {{{{ $labels.job }}}}, candidate release {{{{ $labels.release }}}}: "
                        f"{value} over the last {spec.window}, more than {trigger.factor:g} "
                        f"times release {{{{ $labels.previous_release }}}} plus {margin} "
                        f"({measures}; both releases served at least {spec.min_requests} "
                        "requests in the window). A rollback trigger: consider rolling back."
                    ),
                    "runbook_url": f"{runbook_base.rstrip('/')}/{alertname}.md",
                },
            }
        )
    # One group: its rules run in order, so each alert reads this evaluation's recordings
    # (separate groups run concurrently and could read the previous ones, or none).
    return [{"name": f"chainsight-release-{spec.service}", "rules": [*_recordings(spec), *alerts]}]
