"""Build chainsight's three Grafana dashboards from code and write them as JSON files.

The dashboards are plain Grafana dashboard JSON (schemaVersion 39, Grafana 10.4 and later), built
from Python data so that every panel follows the same rules: the ``DS_PROMETHEUS`` datasource
variable, a description, a unit, ``$__rate_interval`` in rates, exemplars on latency panels. The
generated files in ``grafana/dashboards/`` are checked in; ``tests/test_dashboards.py`` fails when
they differ from what this module builds.

Usage::

    python grafana/generate.py            # rewrite grafana/dashboards/*.json
    python grafana/generate.py --check    # exit 1 if a checked-in file is out of date

Metric and label names come from ``chainsight._names``: the dashboards are written against the
same contract as the metrics module.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from chainsight import _names as n
from chainsight.errors import ConfigurationError

JSON = dict[str, Any]

DASHBOARDS_DIR: Final = Path(__file__).resolve().parent / "dashboards"

# schemaVersion 39 is Grafana 10.4/11.0; newer Grafana migrates it on load, older cannot read 41.
SCHEMA_VERSION: Final = 39
GRID_WIDTH: Final = 24

DS_VAR: Final = "DS_PROMETHEUS"
DATASOURCE: Final[JSON] = {"type": "prometheus", "uid": "${" + DS_VAR + "}"}

# Grafana's built-in interval variables, and what they stand for when an expression is checked
# outside Grafana. 1m is four scrapes at the common 15 s interval, what $__rate_interval gives.
RATE: Final = "$__rate_interval"
RANGE: Final = "$__range"
GRAFANA_BUILTINS: Final[dict[str, str]] = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
}
# The dashboards' own template variables; all are regex-matched (=~), so ".*" stands for "All".
TEMPLATE_VARIABLES: Final = ("job", "environment", "release", "instance", "feature")

# Prometheus target labels (not chainsight names, so not in _names).
JOB: Final = "job"
INSTANCE: Final = "instance"
# Labels of chainsight_release_info that come from the resource, not from a release key.
# _names has no constant for them yet (see the report to the lead).
ENVIRONMENT: Final = "environment"

# Exposition names (prometheus-client appends these suffixes to the family names in _names).
REQUESTS: Final = n.M_REQUESTS + "_total"
REQUEST_DURATION_BUCKET: Final = n.M_REQUEST_DURATION + "_bucket"
STAGE_DURATION_BUCKET: Final = n.M_STAGE_DURATION + "_bucket"
STAGE_ERRORS: Final = n.M_STAGE_ERRORS + "_total"
FALLBACKS: Final = n.M_FALLBACKS + "_total"
TOKENS: Final = n.M_TOKENS + "_total"
COST: Final = n.M_COST_USD + "_total"
REQUEST_COST_SUM: Final = n.M_REQUEST_COST_USD + "_sum"
REQUEST_COST_COUNT: Final = n.M_REQUEST_COST_USD + "_count"
REQUEST_COST_BUCKET: Final = n.M_REQUEST_COST_USD + "_bucket"
UNPRICED: Final = n.M_UNPRICED_CALLS + "_total"
RETRIEVAL_DOCUMENTS_COUNT: Final = n.M_RETRIEVAL_DOCUMENTS + "_count"
RETRIEVAL_EMPTY: Final = n.M_RETRIEVAL_EMPTY + "_total"
VALIDATIONS: Final = n.M_VALIDATIONS + "_total"
BUDGET_SPENT: Final = n.M_BUDGET_SPENT
BUDGET_LIMIT: Final = n.M_BUDGET_LIMIT
BUDGET_REJECTIONS: Final = n.M_BUDGET_REJECTIONS + "_total"
RELEASE_INFO: Final = n.M_RELEASE_INFO + "_info"
IN_FLIGHT: Final = n.M_IN_FLIGHT
INTERNAL_ERRORS: Final = n.M_INTERNAL_ERRORS + "_total"
EXPORT_FAILURES: Final = n.M_EXPORT_FAILURES + "_total"
LABEL_OVERFLOW: Final = n.M_LABEL_OVERFLOW + "_total"
GEN_AI_DURATION_BUCKET: Final = n.M_GEN_AI_OPERATION_DURATION + "_bucket"
GEN_AI_TTFC_BUCKET: Final = n.M_GEN_AI_TTFC + "_bucket"

# Sloth's recording rules, written by `chainsight slo`.
SLO_BURN_RATE: Final = "slo:current_burn_rate:ratio"
SLO_BUDGET_REMAINING: Final = "slo:period_error_budget_remaining:ratio"
SLO_SERVICE: Final = "sloth_service"
SLO_NAME: Final = "sloth_slo"

# Series that carry these labels get the matching filter; the others are narrowed by instance.
_FEATURE_LABELLED: Final = frozenset(
    {REQUESTS, TOKENS, COST, REQUEST_COST_SUM, REQUEST_COST_COUNT, REQUEST_COST_BUCKET}
)
_RELEASE_LABELLED: Final = frozenset({REQUESTS, REQUEST_DURATION_BUCKET, STAGE_DURATION_BUCKET})

_FAULT_TITLES: Final = {
    n.FAULT_APP: "App",
    n.FAULT_MODEL: "Model",
    n.FAULT_VECTOR_STORE: "Vector store",
    n.FAULT_PROVIDER: "Provider",
}
_FAULT_MEANING: Final = {
    n.FAULT_APP: "our own code or a request the provider rejected as bad (HTTP 400/404/422, "
    "context length, auth): fix and redeploy, or roll back",
    n.FAULT_MODEL: "the model answered but the answer was unusable (validation failed, "
    "malformed or empty output, content filter): check prompt and model releases",
    n.FAULT_VECTOR_STORE: "the vector store or search index failed or timed out: check its "
    "health and latency",
    n.FAULT_PROVIDER: "the model provider failed (timeouts, HTTP 429, 5xx, connection "
    "errors): check the provider's status page, fall back or shed load",
}


# --- PromQL building ------------------------------------------------------------------------


def _eq(label: str, value: str) -> str:
    return f'{label}="{value}"'


def _re(label: str, value: str) -> str:
    return f'{label}=~"{value}"'


def _sel(metric: str, *matchers: str) -> str:
    """A selector for a chainsight series, with the dashboard's filters applied."""
    filters = [_re(JOB, "$job"), _re(INSTANCE, "$instance")]
    if metric in _FEATURE_LABELLED:
        filters.append(_re(n.L_FEATURE, "$feature"))
    if metric in _RELEASE_LABELLED:
        filters.append(_re(n.L_RELEASE, "$release"))
    return metric + "{" + ", ".join([*filters, *matchers]) + "}"


def _release_info() -> str:
    return (
        RELEASE_INFO
        + "{"
        + ", ".join(
            [_re(JOB, "$job"), _re(ENVIRONMENT, "$environment"), _re(n.L_RELEASE, "$release")]
        )
        + "}"
    )


def _rate(selector: str, window: str = RATE) -> str:
    return f"rate({selector}[{window}])"


def _increase(selector: str, window: str = RATE) -> str:
    return f"increase({selector}[{window}])"


def _sum(inner: str, *by: str) -> str:
    return f"sum by ({', '.join(by)}) ({inner})" if by else f"sum({inner})"


def _ratio(numerator: str, denominator: str) -> str:
    # Without the `or`, a group with traffic but no failures would vanish instead of showing 0.
    return f"({numerator} or {denominator} * 0) / {denominator}"


def _quantile(q: float, bucket_selector: str, *by: str) -> str:
    return f"histogram_quantile({q}, {_sum(_rate(bucket_selector), 'le', *by)})"


def _or_zero(expr: str) -> str:
    # `on()` makes the zero appear only when the left side is empty, not beside its series.
    return f"{expr} or on() vector(0)"


def _with_release(inner: str) -> str:
    """Give series without a ``release`` label the release of the process that exported them."""
    # topk keeps one release_info series per target even while an old one is still fresh, so the
    # join never fails with "many-to-many matching".
    return (
        f"{inner} * on ({JOB}, {INSTANCE}) group_left ({n.L_RELEASE}) "
        f"topk by ({JOB}, {INSTANCE}) (1, {_release_info()})"
    )


_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def expand_variables(expr: str) -> str:
    """Replace Grafana variables in a PromQL expression with values Prometheus accepts.

    ``$__rate_interval`` and ``$__interval`` become ``1m``, ``$__range`` becomes ``1h``, and the
    dashboards' template variables (``$job``, ``$environment``, ``$release``, ``$instance``,
    ``$feature``, in ``$x`` or ``${x}`` form) become ``.*``, which is what "All" means since
    every one of them is matched with ``=~``. Raises ``ConfigurationError`` for any other
    variable, so a typo in a dashboard cannot hide behind the expansion.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name in TEMPLATE_VARIABLES:
            return ".*"
        known = sorted([*GRAFANA_BUILTINS, *TEMPLATE_VARIABLES])
        raise ConfigurationError(
            f"unknown Grafana variable {match.group(0)!r} in expression {expr!r}; "
            f"known variables are {known}: add it to TEMPLATE_VARIABLES in grafana/generate.py "
            "or fix the expression"
        )

    return _VARIABLE.sub(replace, expr)


# --- Panels and layout ----------------------------------------------------------------------


def _target(
    expr: str,
    legend: str = "__auto",
    *,
    exemplar: bool = False,
    instant: bool = False,
    interval: str | None = None,
    table: bool = False,
) -> JSON:
    target: JSON = {
        "datasource": dict(DATASOURCE),
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "exemplar": exemplar,
        "format": "table" if table else "time_series",
    }
    if interval is not None:
        target["interval"] = interval
    return target


def _thresholds(*steps: tuple[str, float | None]) -> JSON:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


_GREEN_ONLY: Final = (("green", None),)


def _panel(
    kind: str,
    title: str,
    description: str,
    unit: str,
    targets: Sequence[JSON],
    *,
    thresholds: Sequence[tuple[str, float | None]] = _GREEN_ONLY,
    custom: JSON | None = None,
    options: JSON | None = None,
    extra: JSON | None = None,
    decimals: int | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> JSON:
    defaults: JSON = {"unit": unit, "thresholds": _thresholds(*thresholds)}
    if decimals is not None:
        defaults["decimals"] = decimals
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if custom is not None:
        defaults["custom"] = custom
    panel: JSON = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": dict(DATASOURCE),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options or {},
        "targets": [
            {"refId": chr(ord("A") + index), **target} for index, target in enumerate(targets)
        ],
    }
    if extra:
        panel.update(extra)
    return panel


def _timeseries(
    title: str,
    description: str,
    unit: str,
    *targets: JSON,
    stacked: bool = False,
    bars: bool = False,
    thresholds: Sequence[tuple[str, float | None]] = _GREEN_ONLY,
    threshold_lines: bool = False,
    extra: JSON | None = None,
) -> JSON:
    custom: JSON = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 80 if bars else (25 if stacked else 10),
        "showPoints": "never",
        "spanNulls": False,
        "axisSoftMin": 0,
        "stacking": {"mode": "normal" if stacked or bars else "none", "group": "A"},
        "thresholdsStyle": {"mode": "line" if threshold_lines else "off"},
    }
    options: JSON = {
        "legend": {
            "displayMode": "table",
            "placement": "bottom",
            "showLegend": True,
            "calcs": ["mean", "max", "lastNotNull"],
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel(
        "timeseries",
        title,
        description,
        unit,
        targets,
        custom=custom,
        options=options,
        thresholds=thresholds,
        extra=extra,
    )


def _stat(
    title: str,
    description: str,
    unit: str,
    *targets: JSON,
    thresholds: Sequence[tuple[str, float | None]],
    sparkline: bool = True,
    decimals: int | None = None,
) -> JSON:
    options: JSON = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "area" if sparkline else "none",
        "justifyMode": "auto",
        "textMode": "auto",
        "orientation": "auto",
    }
    return _panel(
        "stat",
        title,
        description,
        unit,
        targets,
        thresholds=thresholds,
        options=options,
        decimals=decimals,
    )


class _Grid:
    """Places panels left to right in a 24-column grid, rows of panels under row headers."""

    def __init__(self) -> None:
        self.panels: list[JSON] = []
        self._x = 0
        self._y = 0
        self._line_height = 0

    def _newline(self) -> None:
        self._y += self._line_height
        self._x = 0
        self._line_height = 0

    def row(self, title: str) -> None:
        if self._x:
            self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": self._y},
                "panels": [],
            }
        )
        self._y += 1

    def add(self, panel: JSON, width: int, height: int = 8) -> None:
        if self._x + width > GRID_WIDTH:
            self._newline()
        panel["gridPos"] = {"h": height, "w": width, "x": self._x, "y": self._y}
        self.panels.append(panel)
        self._x += width
        self._line_height = max(self._line_height, height)


# --- Variables, annotations, dashboard shell ------------------------------------------------


def _query_variable(
    name: str, label: str, query: str, description: str, *, all_value: str | None = ".*"
) -> JSON:
    variable: JSON = {
        "type": "query",
        "name": name,
        "label": label,
        "description": description,
        "datasource": dict(DATASOURCE),
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,  # on time range change: instances and releases come and go
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "regex": "",
        "hide": 0,
        "options": [],
    }
    if all_value is not None:
        variable["allValue"] = all_value
    return variable


def _variables() -> list[JSON]:
    info = RELEASE_INFO
    variables: list[JSON] = [
        {
            "type": "datasource",
            "name": DS_VAR,
            "label": "Data source",
            "description": "The Prometheus (or Mimir, Thanos) that scrapes chainsight.",
            "query": "prometheus",
            "regex": "",
            "refresh": 1,
            "hide": 0,
            "current": {},
            "options": [],
        },
        _query_variable(
            "job",
            "Service (job)",
            f"label_values({info}, {JOB})",
            "The Prometheus job that scrapes the service; chainsight's service name is a "
            "resource attribute, not a metric label.",
        ),
        _query_variable(
            "environment",
            "Environment",
            f"label_values({info}{{{_re(JOB, '$job')}}}, {ENVIRONMENT})",
            "The deployment environment, read from chainsight_release_info.",
        ),
        _query_variable(
            "release",
            "Release",
            f"label_values({info}{{{_re(JOB, '$job')}, {_re(ENVIRONMENT, '$environment')}}}, "
            f"{n.L_RELEASE})",
            "The release id set in chainsight.configure(release=...).",
        ),
        # No allValue: "All" expands to the instances found for the chosen environment and
        # release, which is how series without those labels are narrowed to them.
        _query_variable(
            "instance",
            "Instance",
            f"label_values({_release_info()}, {INSTANCE})",
            "The scrape targets of the chosen service, environment and release.",
            all_value=None,
        ),
        _query_variable(
            "feature",
            "Feature",
            f"label_values({REQUESTS}{{{_re(JOB, '$job')}, {_re(INSTANCE, '$instance')}}}, "
            f"{n.L_FEATURE})",
            "The product feature passed to chainsight.request(feature=...). Filters the series "
            "that carry a feature label (requests, tokens, cost).",
        ),
    ]
    return variables


def release_annotation_expr() -> str:
    """The PromQL of the "Release changes" annotation: 1 in the minute a release appears."""
    by = f"{JOB}, {ENVIRONMENT}, {n.L_RELEASE}"
    return f"max by ({by}) ({_release_info()}) unless max by ({by}) ({_release_info()} offset 1m)"


def _annotations() -> JSON:
    return {
        "list": [
            {
                "builtIn": 1,
                "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True,
                "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts",
                "type": "dashboard",
            },
            {
                "name": "Release changes",
                "datasource": dict(DATASOURCE),
                "enable": True,
                "hide": False,
                "iconColor": "purple",
                # Grafana 10+ reads `target`; the top-level fields are what the Prometheus
                # annotation editor still shows and older versions read.
                "target": {"expr": release_annotation_expr(), "refId": "Anno", "interval": "1m"},
                "expr": release_annotation_expr(),
                "step": "1m",
                "titleFormat": "Release {{release}}",
                "textFormat": "{{job}} {{environment}}",
                "tagKeys": "job,environment,release",
                "useValueForTime": False,
            },
        ]
    }


def _dashboard(
    uid: str, title: str, description: str, grid: _Grid, *, time_from: str = "now-6h"
) -> JSON:
    panels = grid.panels
    for panel_id, panel in enumerate(panels, start=1):
        panel["id"] = panel_id
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["chainsight", "ai"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "links": [
            {
                "type": "dashboards",
                "title": "chainsight",
                "tags": ["chainsight"],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": _annotations(),
        "templating": {"list": _variables()},
        "panels": panels,
    }


# --- The on-call dashboard ------------------------------------------------------------------


def oncall_dashboard() -> JSON:
    """*AI chain — on-call*: which fault domain is failing, then requests, stages, SLOs."""
    g = _Grid()
    all_requests = _sum(_rate(_sel(REQUESTS)))
    g.row("Fault domains: which one is failing?")
    for fault, name in _FAULT_TITLES.items():
        failing = _sum(
            _rate(_sel(REQUESTS, _eq(n.L_OUTCOME, n.OUTCOME_ERROR), _eq(n.L_FAULT, fault)))
        )
        g.add(
            _stat(
                f"{name} errors",
                f"Share of requests that failed with the error starting in the {name.lower()} "
                f"fault domain: {_FAULT_MEANING[fault]}. Green is 0.",
                "percentunit",
                _target(f"({_or_zero(failing)}) / {all_requests}", name),
                thresholds=(("green", None), ("orange", 0.0001), ("red", 0.01)),
                decimals=2,
            ),
            6,
            4,
        )
    g.add(
        _timeseries(
            "Failed requests by fault domain",
            "Requests per second that failed (solid) or were served by a fallback (degraded), by "
            "the fault domain where the error started. Each request counts once.",
            "reqps",
            _target(
                _sum(_rate(_sel(REQUESTS, _eq(n.L_OUTCOME, n.OUTCOME_ERROR))), n.L_FAULT),
                "{{fault}}",
            ),
            _target(
                _sum(_rate(_sel(REQUESTS, _eq(n.L_OUTCOME, n.OUTCOME_DEGRADED))), n.L_FAULT),
                "{{fault}} (degraded)",
            ),
        ),
        12,
    )
    g.add(
        _timeseries(
            "Provider errors by error type",
            "Stage errors in the provider fault domain by stage and error type: timeout, "
            "rate_limited (HTTP 429), server_error (HTTP 5xx), connection. Read per stage: an "
            "error that passes through nested stages is counted by each of them.",
            "ops",
            _target(
                _sum(
                    _rate(_sel(STAGE_ERRORS, _eq(n.L_FAULT, n.FAULT_PROVIDER))),
                    n.L_STAGE,
                    n.L_ERROR_TYPE,
                ),
                "{{stage}}: {{error_type}}",
            ),
            stacked=True,
        ),
        12,
    )

    g.row("Requests")
    g.add(
        _timeseries(
            "Request rate by request",
            "Requests per second that finished, by request name, whatever their outcome.",
            "reqps",
            _target(_sum(_rate(_sel(REQUESTS)), n.L_REQUEST), "{{request}}"),
        ),
        8,
    )
    g.add(
        _timeseries(
            "Requests by outcome",
            "Requests per second by outcome: ok, error, degraded (a fallback served the user), "
            "cancelled (client went away), rejected (a budget cap refused it).",
            "reqps",
            _target(_sum(_rate(_sel(REQUESTS)), n.L_OUTCOME), "{{outcome}}"),
            stacked=True,
        ),
        8,
    )
    g.add(
        _timeseries(
            "Error ratio by request",
            "Share of requests that ended with outcome error, by request name. Degraded, "
            "cancelled and rejected requests are not errors here.",
            "percentunit",
            _target(
                _ratio(
                    _sum(_rate(_sel(REQUESTS, _eq(n.L_OUTCOME, n.OUTCOME_ERROR))), n.L_REQUEST),
                    _sum(_rate(_sel(REQUESTS)), n.L_REQUEST),
                ),
                "{{request}}",
            ),
        ),
        8,
    )
    g.add(
        _timeseries(
            "Request latency p50 / p95 / p99 by request",
            "End-to-end request latency quantiles from chainsight_request_duration_seconds, by "
            "request name. Exemplar dots link to the trace of a slow request.",
            "s",
            _target(_quantile(0.5, _sel(REQUEST_DURATION_BUCKET), n.L_REQUEST), "{{request}} p50"),
            _target(
                _quantile(0.95, _sel(REQUEST_DURATION_BUCKET), n.L_REQUEST),
                "{{request}} p95",
                exemplar=True,
            ),
            _target(_quantile(0.99, _sel(REQUEST_DURATION_BUCKET), n.L_REQUEST), "{{request}} p99"),
        ),
        16,
    )
    g.add(
        _timeseries(
            "Requests in flight",
            "Requests started and not yet finished, by request name. A rising line with a flat "
            "request rate means something is hanging.",
            "short",
            _target(_sum(_sel(IN_FLIGHT), n.L_REQUEST), "{{request}}"),
        ),
        8,
    )

    g.row("Stages")
    g.add(
        _timeseries(
            "Stage latency p95 by stage",
            "95th percentile duration of each stage (retrieval, rerank, prompt, model, validation, "
            "...). Exemplar dots link to traces.",
            "s",
            _target(
                _quantile(0.95, _sel(STAGE_DURATION_BUCKET), n.L_STAGE, n.L_KIND),
                "{{stage}} ({{kind}})",
                exemplar=True,
            ),
        ),
        12,
    )
    g.add(
        _timeseries(
            "Stage errors by stage and fault domain",
            "Stages per second that ended in error, by stage and the fault domain where the error "
            "started. Read per stage, never summed: nested stages each count the same error.",
            "ops",
            _target(_sum(_rate(_sel(STAGE_ERRORS)), n.L_STAGE, n.L_FAULT), "{{stage}}: {{fault}}"),
        ),
        12,
    )
    g.add(
        _timeseries(
            "Model call latency p95 by model",
            "95th percentile of gen_ai.client.operation.duration (GenAI semantic conventions), by "
            "provider and requested model. Exemplar dots link to traces.",
            "s",
            _target(
                _quantile(
                    0.95,
                    _sel(GEN_AI_DURATION_BUCKET),
                    n.L_GEN_AI_PROVIDER_NAME,
                    n.L_GEN_AI_REQUEST_MODEL,
                ),
                "{{gen_ai_provider_name}} {{gen_ai_request_model}}",
                exemplar=True,
            ),
        ),
        12,
    )
    g.add(
        _timeseries(
            "Time to first chunk by model",
            "Streaming calls: time from the request to the first chunk, p50 and p95 by model. This "
            "is the latency a user of a streamed answer feels.",
            "s",
            _target(
                _quantile(0.5, _sel(GEN_AI_TTFC_BUCKET), n.L_GEN_AI_REQUEST_MODEL),
                "{{gen_ai_request_model}} p50",
            ),
            _target(
                _quantile(0.95, _sel(GEN_AI_TTFC_BUCKET), n.L_GEN_AI_REQUEST_MODEL),
                "{{gen_ai_request_model}} p95",
                exemplar=True,
            ),
        ),
        12,
    )
    g.add(
        _timeseries(
            "Fallback activations",
            "Fallbacks per second by stage, fallback target and reason. Each one turned a failure "
            "into a degraded answer.",
            "ops",
            _target(
                _sum(_rate(_sel(FALLBACKS)), n.L_STAGE, n.L_TO, n.L_REASON),
                "{{stage}} → {{to}} ({{reason}})",
            ),
            stacked=True,
        ),
        8,
    )
    g.add(
        _timeseries(
            "Validation failure rate by validator",
            "Share of output validations that failed, by validator. A rise points at the model or "
            "prompt release.",
            "percentunit",
            _target(
                _ratio(
                    _sum(_rate(_sel(VALIDATIONS, _eq(n.L_RESULT, "failed"))), n.L_VALIDATOR),
                    _sum(_rate(_sel(VALIDATIONS)), n.L_VALIDATOR),
                ),
                "{{validator}}",
            ),
        ),
        8,
    )
    g.add(
        _timeseries(
            "Empty retrievals",
            "Share of retrievals that returned no documents, by stage and vector store. An empty "
            "context makes the model guess.",
            "percentunit",
            _target(
                _ratio(
                    _sum(_rate(_sel(RETRIEVAL_EMPTY)), n.L_STAGE, n.L_SYSTEM),
                    _sum(_rate(_sel(RETRIEVAL_DOCUMENTS_COUNT)), n.L_STAGE, n.L_SYSTEM),
                ),
                "{{stage}} ({{system}})",
            ),
        ),
        8,
    )

    g.row("SLOs")
    slo_legend = "{{sloth_service}} / {{sloth_slo}}"
    g.add(
        _timeseries(
            "SLO burn rate",
            "How fast each SLO spends its error budget: 1 spends it exactly over the SLO period, "
            "14.4 spends a 30-day budget in about two days (the page threshold). From the rules "
            "`chainsight slo` generates; they are per job, and the panel shows the fastest of "
            "the selected jobs.",
            "short",
            _target(
                f"max by ({SLO_SERVICE}, {SLO_NAME}) ({SLO_BURN_RATE}{{{_re(JOB, '$job')}}})",
                slo_legend,
            ),
            thresholds=(("green", None), ("orange", 1), ("red", 14.4)),
            threshold_lines=True,
        ),
        16,
    )
    g.add(
        _stat(
            "Error budget left",
            "Share of each SLO's error budget left in the current period, for the selected job "
            "with the least left. Below zero the SLO is already missed.",
            "percentunit",
            _target(
                f"min by ({SLO_SERVICE}, {SLO_NAME}) "
                f"({SLO_BUDGET_REMAINING}{{{_re(JOB, '$job')}}})",
                slo_legend,
            ),
            thresholds=(("red", None), ("orange", 0.25), ("green", 0.5)),
            decimals=1,
        ),
        8,
    )

    g.row("Telemetry health: can these numbers be trusted?")
    g.add(
        _stat(
            "Export failures",
            "Spans or metrics chainsight failed to export in the dashboard's time range, by "
            "signal. Above zero, traces and pushed metrics have gaps.",
            "short",
            _target(
                _or_zero(_sum(_increase(_sel(EXPORT_FAILURES), RANGE), n.L_SIGNAL)),
                "{{signal}}",
                instant=True,
            ),
            thresholds=(("green", None), ("red", 1)),
            sparkline=False,
            decimals=0,
        ),
        8,
        4,
    )
    g.add(
        _stat(
            "Label overflow",
            "Label values replaced by __other__ by the cardinality guard in the time range, by "
            "label. Above zero, some tenants, features or models are lumped together.",
            "short",
            _target(
                _or_zero(_sum(_increase(_sel(LABEL_OVERFLOW), RANGE), n.L_LABEL)),
                "{{label}}",
                instant=True,
            ),
            thresholds=(("green", None), ("orange", 1)),
            sparkline=False,
            decimals=0,
        ),
        8,
        4,
    )
    g.add(
        _stat(
            "chainsight internal errors",
            "Errors inside chainsight itself (caught, never raised into the app) in the time "
            "range, by place. Above zero, some telemetry was lost: see the chainsight log.",
            "short",
            _target(
                _or_zero(_sum(_increase(_sel(INTERNAL_ERRORS), RANGE), n.L_WHERE)),
                "{{where}}",
                instant=True,
            ),
            thresholds=(("green", None), ("red", 1)),
            sparkline=False,
            decimals=0,
        ),
        8,
        4,
    )
    return _dashboard(
        "chainsight-oncall",
        "AI chain — on-call",
        "Reliability of AI request chains: which fault domain (app, model, vector store, "
        "provider) is failing, request and stage latency and errors, fallbacks, validation, "
        "SLO burn. Built by grafana/generate.py; do not edit by hand.",
        g,
        time_from="now-3h",
    )


# --- The cost and usage dashboard -----------------------------------------------------------


def cost_dashboard() -> JSON:
    """*AI chain — cost and usage*: spend by model, feature, tenant; tokens; budgets."""
    g = _Grid()
    spend_total = _sum(_increase(_sel(COST), RANGE))
    served = _sel(REQUESTS, _re(n.L_OUTCOME, f"{n.OUTCOME_OK}|{n.OUTCOME_DEGRADED}"))
    g.row("Spend in the time range")
    g.add(
        _stat(
            "Spend",
            "Estimated model spend in the dashboard's time range, from the bundled or your price "
            "table. Calls to unpriced models are not in it (see Unpriced calls).",
            "currencyUSD",
            _target(spend_total, "spend", instant=True),
            thresholds=_GREEN_ONLY,
            sparkline=False,
            decimals=2,
        ),
        6,
        4,
    )
    g.add(
        _stat(
            "Cost per request",
            "Average cost of one request in the time range, whatever its outcome.",
            "currencyUSD",
            _target(
                f"{_sum(_increase(_sel(REQUEST_COST_SUM), RANGE))} / "
                f"{_sum(_increase(_sel(REQUEST_COST_COUNT), RANGE))}",
                "per request",
                instant=True,
            ),
            thresholds=_GREEN_ONLY,
            sparkline=False,
            decimals=4,
        ),
        6,
        4,
    )
    g.add(
        _stat(
            "Cost per successful request",
            "All spend, failed requests included, divided by the requests that gave the user an "
            "answer (outcome ok or degraded): what one useful answer really costs.",
            "currencyUSD",
            _target(
                f"{spend_total} / {_sum(_increase(served, RANGE))}",
                "per successful request",
                instant=True,
            ),
            thresholds=_GREEN_ONLY,
            sparkline=False,
            decimals=4,
        ),
        6,
        4,
    )
    g.add(
        _stat(
            "Unpriced calls",
            "Model calls in the time range whose model has no price: their cost is unknown, not "
            "zero. Add the model to the price table.",
            "short",
            _target(_or_zero(_sum(_increase(_sel(UNPRICED), RANGE))), "unpriced", instant=True),
            thresholds=(("green", None), ("orange", 1)),
            sparkline=False,
            decimals=0,
        ),
        6,
        4,
    )

    g.row("Spend rate and spend per day")
    per_hour = "Estimated spend in USD per hour (rate per second × 3600)"
    for title, by, legend in (
        ("model", (n.L_PROVIDER, n.L_MODEL), "{{provider}} {{model}}"),
        ("feature", (n.L_FEATURE,), "{{feature}}"),
        ("tenant", (n.L_TENANT,), "{{tenant}}"),
    ):
        g.add(
            _timeseries(
                f"Spend rate by {title} (USD per hour)",
                f"{per_hour}, by {title}.",
                "currencyUSD",
                _target(f"{_sum(_rate(_sel(COST)), *by)} * 3600", legend),
                stacked=True,
            ),
            8,
        )
    for title, by, legend in (
        ("model", (n.L_PROVIDER, n.L_MODEL), "{{provider}} {{model}}"),
        ("feature", (n.L_FEATURE,), "{{feature}}"),
        ("tenant", (n.L_TENANT,), "{{tenant}}"),
    ):
        g.add(
            _timeseries(
                f"Spend per day by {title}",
                f"Estimated spend per day by {title}, over the last 14 days whatever the time "
                "picker says. Each bar is the 24 hours ending at its time (UTC midnight).",
                "currencyUSD",
                # A fixed [1d] window on purpose: one bar is one day.
                _target(_sum(_increase(_sel(COST), "1d"), *by), legend, interval="1d"),
                bars=True,
                extra={"timeFrom": "14d", "interval": "1d"},
            ),
            8,
        )

    g.row("Cost per request")
    g.add(
        _timeseries(
            "Cost per request by feature",
            "Average cost of one request by feature, whatever its outcome.",
            "currencyUSD",
            _target(
                f"{_sum(_rate(_sel(REQUEST_COST_SUM)), n.L_FEATURE)} / "
                f"{_sum(_rate(_sel(REQUEST_COST_COUNT)), n.L_FEATURE)}",
                "{{feature}}",
            ),
        ),
        8,
    )
    g.add(
        _timeseries(
            "Cost per request p95 by feature",
            "95th percentile of request cost by feature: the expensive tail (long contexts, "
            "retries, large outputs).",
            "currencyUSD",
            _target(_quantile(0.95, _sel(REQUEST_COST_BUCKET), n.L_FEATURE), "{{feature}}"),
        ),
        8,
    )
    g.add(
        _timeseries(
            "Cost per successful request by feature",
            "All spend by feature divided by that feature's requests that gave an answer (ok or "
            "degraded). Far above cost per request means failures are burning money.",
            "currencyUSD",
            _target(
                f"{_sum(_rate(_sel(COST)), n.L_FEATURE)} / {_sum(_rate(served), n.L_FEATURE)}",
                "{{feature}}",
            ),
        ),
        8,
    )

    g.row("Tokens")
    g.add(
        _timeseries(
            "Tokens by type",
            "Tokens per second by type: input (includes cached), output, cache_read, cache_write, "
            "reasoning.",
            "short",
            _target(_sum(_rate(_sel(TOKENS)), n.L_TOKEN_TYPE), "{{token_type}}"),
        ),
        12,
    )
    g.add(
        _timeseries(
            "Tokens by model and type",
            "Tokens per second by provider, model and token type.",
            "short",
            _target(
                _sum(_rate(_sel(TOKENS)), n.L_PROVIDER, n.L_MODEL, n.L_TOKEN_TYPE),
                "{{model}} {{token_type}}",
            ),
        ),
        12,
    )
    g.add(
        _timeseries(
            "Tokens by feature",
            "Tokens per second (all types) by feature.",
            "short",
            _target(_sum(_rate(_sel(TOKENS)), n.L_FEATURE), "{{feature}}"),
            stacked=True,
        ),
        12,
    )
    g.add(
        _timeseries(
            "Tokens by tenant",
            "Tokens per second (all types) by tenant.",
            "short",
            _target(_sum(_rate(_sel(TOKENS)), n.L_TENANT), "{{tenant}}"),
            stacked=True,
        ),
        12,
    )

    g.row("Budgets")
    # max, not sum: with a shared (Redis) budget every replica reports the same spent value.
    spent = f"max by ({n.L_BUDGET}) ({_sel(BUDGET_SPENT)})"
    limit = f"max by ({n.L_BUDGET}) ({_sel(BUDGET_LIMIT)})"
    g.add(
        _panel(
            "bargauge",
            "Budget use vs limit",
            "Spent share of each budget's limit in its current window. Orange from 80 %, red at "
            "100 % (a hard budget then refuses model calls).",
            "percentunit",
            [_target(f"{spent} / {limit}", "{{budget}}", instant=True)],
            thresholds=(("green", None), ("orange", 0.8), ("red", 1)),
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "orientation": "horizontal",
                "displayMode": "gradient",
                "showUnfilled": True,
            },
            minimum=0,
            maximum=1,
        ),
        8,
    )
    g.add(
        _timeseries(
            "Budget spent and limit",
            "Spent USD in each budget's current window, with its limit as a second line.",
            "currencyUSD",
            _target(spent, "{{budget}} spent"),
            _target(limit, "{{budget}} limit"),
        ),
        8,
    )
    g.add(
        _timeseries(
            "Budget rejections",
            "Model calls per second refused by a hard budget (outcome rejected), by budget.",
            "ops",
            _target(_sum(_rate(_sel(BUDGET_REJECTIONS)), n.L_BUDGET), "{{budget}}"),
        ),
        8,
    )
    g.add(
        _timeseries(
            "Unpriced calls by model",
            "Model calls per second whose model has no price in the table, by provider and model.",
            "ops",
            _target(_sum(_rate(_sel(UNPRICED)), n.L_PROVIDER, n.L_MODEL), "{{provider}} {{model}}"),
        ),
        24,
    )
    return _dashboard(
        "chainsight-cost",
        "AI chain — cost and usage",
        "Spend, cost per request, tokens and budgets of AI request chains by model, feature "
        "and tenant, for product and finance. Built by grafana/generate.py; do not edit by "
        "hand.",
        g,
        time_from="now-7d",
    )


# --- The releases dashboard -----------------------------------------------------------------

# The rollback-trigger recordings written by `chainsight slo generate slos/release-regression.yaml`
# (per job and release): the candidate, the previous release and the four compared values.
RELEASE_CANDIDATE: Final = "slo:release_candidate:info"
RELEASE_PREVIOUS: Final = "slo:release_previous:info"
RELEASE_TRIGGERS: Final = (
    ("slo:release_validation_failure:ratio", "validation failures"),
    ("slo:release_error:ratio", "error ratio"),
    ("slo:release_request_duration:p95", "p95 (s)"),
    ("slo:release_cost_per_request:usd", "USD per request"),
)


def _rollback_row(g: _Grid) -> None:
    """Candidate and previous release of each job, side by side on the rollback triggers."""
    job = _re(JOB, "$job")
    roles = (
        f'label_replace({RELEASE_CANDIDATE}{{{job}}}, "role", "candidate", "", "") or '
        f'label_replace(max without (previous_release) ({RELEASE_PREVIOUS}{{{job}}}), "role", '
        '"previous", "", "")'
    )
    targets = []
    for record, title in RELEASE_TRIGGERS:
        value = f"{record}{{{job}}}"
        if record == "slo:release_error:ratio":
            value = f"sum by ({JOB}, {n.L_RELEASE}) ({value})"
        else:
            value = f"max by ({JOB}, {n.L_RELEASE}) ({value})"
        targets.append(
            _target(
                f"{value} * on ({JOB}, {n.L_RELEASE}) group_left (role) ({roles})",
                title,
                instant=True,
                table=True,
            )
        )
    g.row("Candidate vs previous release (rollback triggers)")
    g.add(
        _panel(
            "table",
            "Candidate vs previous release",
            "For each job, the candidate release (first seen after the job's oldest one) and the "
            "previous release, on the values the rollback-trigger alerts compare over their "
            "window (30m by default): validation failure ratio, error ratio, p95 request latency "
            "and cost per request. Empty until both have served the minimum traffic; needs the "
            "rules from slos/release-regression.yaml.",
            "none",
            targets,
            options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
            extra={
                "transformations": [
                    {"id": "merge", "options": {}},
                    {
                        "id": "organize",
                        "options": {
                            "excludeByName": {"Time": True},
                            "renameByName": {
                                f"Value #{chr(ord('A') + i)}": title
                                for i, (_, title) in enumerate(RELEASE_TRIGGERS)
                            },
                        },
                    },
                ]
            },
        ),
        24,
        7,
    )


def releases_dashboard() -> JSON:
    """*AI chain — releases*: latency, errors, cost and validation side by side by release."""
    g = _Grid()
    g.row("What is running")
    g.add(
        _panel(
            "table",
            "Releases running",
            "Each release seen in the time range with its parts (model, prompt, retrieval, ...) "
            "and the number of instances running it now.",
            "none",
            [
                _target(
                    f"count without ({INSTANCE}) ({_release_info()})", "", instant=True, table=True
                )
            ],
            options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
            extra={
                "transformations": [
                    {
                        "id": "organize",
                        "options": {
                            "excludeByName": {"Time": True, "__name__": True},
                            "renameByName": {"Value": "instances"},
                        },
                    }
                ]
            },
        ),
        24,
        6,
    )

    g.row("Side by side by release")
    g.add(
        _timeseries(
            "Request rate by release",
            "Requests per second by release: how far a canary or rollout has got.",
            "reqps",
            _target(_sum(_rate(_sel(REQUESTS)), n.L_RELEASE), "{{release}}"),
        ),
        12,
    )
    g.add(
        _timeseries(
            "Request latency by release",
            "End-to-end request latency p50 and p95 by release. Exemplar dots link to traces.",
            "s",
            _target(_quantile(0.5, _sel(REQUEST_DURATION_BUCKET), n.L_RELEASE), "{{release}} p50"),
            _target(
                _quantile(0.95, _sel(REQUEST_DURATION_BUCKET), n.L_RELEASE),
                "{{release}} p95",
                exemplar=True,
            ),
        ),
        12,
    )
    g.add(
        _timeseries(
            "Error ratio by release",
            "Share of requests that ended with outcome error, by release.",
            "percentunit",
            _target(
                _ratio(
                    _sum(_rate(_sel(REQUESTS, _eq(n.L_OUTCOME, n.OUTCOME_ERROR))), n.L_RELEASE),
                    _sum(_rate(_sel(REQUESTS)), n.L_RELEASE),
                ),
                "{{release}}",
            ),
        ),
        12,
    )
    failed_by_fault = _sum(
        _rate(_sel(REQUESTS, _eq(n.L_OUTCOME, n.OUTCOME_ERROR))), n.L_RELEASE, n.L_FAULT
    )
    g.add(
        _timeseries(
            "Error ratio by release and fault domain",
            "Share of each release's requests that failed, split by the fault domain where the "
            "error started: shows which part a release broke.",
            "percentunit",
            _target(
                f"{failed_by_fault} / ignoring ({n.L_FAULT}) group_left "
                f"{_sum(_rate(_sel(REQUESTS)), n.L_RELEASE)}",
                "{{release}}: {{fault}}",
            ),
        ),
        12,
    )
    g.add(
        _timeseries(
            "Cost per request by release",
            "Average cost of one request by release. Request cost has no release label, so each "
            "series takes the release of the process that exported it (chainsight_release_info).",
            "currencyUSD",
            _target(
                f"{_sum(_with_release(_rate(_sel(REQUEST_COST_SUM))), n.L_RELEASE)} / "
                f"{_sum(_with_release(_rate(_sel(REQUEST_COST_COUNT))), n.L_RELEASE)}",
                "{{release}}",
            ),
        ),
        12,
    )
    g.add(
        _timeseries(
            "Validation pass rate by release",
            "Share of output validations that passed, by release and validator. Validations have "
            "no release label: the release comes from the exporting process.",
            "percentunit",
            _target(
                _ratio(
                    _sum(
                        _with_release(_rate(_sel(VALIDATIONS, _eq(n.L_RESULT, "passed")))),
                        n.L_RELEASE,
                        n.L_VALIDATOR,
                    ),
                    _sum(_with_release(_rate(_sel(VALIDATIONS))), n.L_RELEASE, n.L_VALIDATOR),
                ),
                "{{release}} {{validator}}",
            ),
        ),
        12,
    )
    g.add(
        _timeseries(
            "Stage latency p95 by release",
            "95th percentile stage duration by release and stage: which stage a release made "
            "slower. Exemplar dots link to traces.",
            "s",
            _target(
                _quantile(0.95, _sel(STAGE_DURATION_BUCKET), n.L_RELEASE, n.L_STAGE),
                "{{release}} {{stage}}",
                exemplar=True,
            ),
        ),
        24,
    )
    _rollback_row(g)
    return _dashboard(
        "chainsight-releases",
        "AI chain — releases",
        "Latency, error ratio, cost per request and validation pass rate side by side by "
        "release (model, prompt, retrieval versions), with release changes as annotations. "
        "Built by grafana/generate.py; do not edit by hand.",
        g,
        time_from="now-24h",
    )


# --- Files ----------------------------------------------------------------------------------


def build_dashboards() -> dict[str, JSON]:
    """All dashboards, keyed by file name (``<uid>.json``), in a stable order."""
    dashboards = [oncall_dashboard(), cost_dashboard(), releases_dashboard()]
    return {f"{d['uid']}.json": d for d in dashboards}


def render(dashboard: JSON) -> str:
    """The file content of one dashboard: stable, indented JSON ending with a newline."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def data_panels(dashboard: JSON) -> list[JSON]:
    """The panels of a dashboard that query data (rows excluded, collapsed rows opened)."""
    panels: list[JSON] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def all_queries() -> list[tuple[str, str, str]]:
    """Every PromQL expression of every dashboard, with Grafana variables expanded.

    Returns ``(dashboard uid, panel title, expression)`` triples, panel targets first, then the
    release annotation (titled ``annotation: <name>``). The expressions are ready for the
    Prometheus HTTP API or a rule file.
    """
    queries: list[tuple[str, str, str]] = []
    for dashboard in build_dashboards().values():
        uid = dashboard["uid"]
        for panel in data_panels(dashboard):
            for target in panel["targets"]:
                queries.append((uid, panel["title"], expand_variables(target["expr"])))
        for annotation in dashboard["annotations"]["list"]:
            if "expr" in annotation:
                queries.append(
                    (uid, f"annotation: {annotation['name']}", expand_variables(annotation["expr"]))
                )
    return queries


def stale_files(directory: Path = DASHBOARDS_DIR) -> list[str]:
    """Names of dashboard files in ``directory`` that are missing, differ, or are not built."""
    expected = {name: render(d) for name, d in build_dashboards().items()}
    present = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    stale = [
        name
        for name, text in expected.items()
        if name not in present or (directory / name).read_text(encoding="utf-8") != text
    ]
    stale.extend(sorted(present - expected.keys()))
    return stale


def write_all(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    """Write every dashboard into ``directory`` and return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dashboard in build_dashboards().items():
        path = directory / name
        path.write_text(render(dashboard), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the dashboards, or with ``--check`` report the stale ones."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a checked-in dashboard is out of date",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DASHBOARDS_DIR,
        help=f"directory of the dashboard files (default {DASHBOARDS_DIR})",
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(
                f"out of date: {args.out / name}; run `python grafana/generate.py`", file=sys.stderr
            )
        return 1 if stale else 0
    for path in write_all(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
