"""The Grafana dashboards: up to date with their generator, well formed, and valid PromQL.

No Grafana server can run here, so the dashboards are checked offline: the JSON is what
``grafana/generate.py`` builds, every panel follows the house rules (datasource variable,
description, unit, ``$__rate_interval``, exemplars on latency), every expression parses in
``promtool`` once Grafana's variables are expanded, and every metric and label it names is one
chainsight exports. That queries return data from a real Prometheus is tested where the metrics
are produced (``all_queries()`` is the hook).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from chainsight import _names as n
from chainsight.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DOCS = ROOT / "docs" / "dashboards.md"
DS_REF = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "chainsight_grafana_generate", GRAFANA / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
DASHBOARDS: dict[str, dict[str, Any]] = {
    path.name: json.loads(path.read_text(encoding="utf-8"))
    for path in sorted((GRAFANA / "dashboards").glob("*.json"))
}


def _data_panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, dashboard in DASHBOARDS.items():
        for panel in gen.data_panels(dashboard):
            yield name, panel


def _all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def _expressions() -> Iterator[tuple[str, str, str]]:
    """(file, panel title, raw expression) for every target and annotation, as all_queries()."""
    for name, dashboard in DASHBOARDS.items():
        for panel in gen.data_panels(dashboard):
            for target in panel["targets"]:
                yield name, panel["title"], target["expr"]
        for annotation in dashboard["annotations"]["list"]:
            if "expr" in annotation:
                yield name, f"annotation: {annotation['name']}", annotation["expr"]


# --- The metric contract (naming.md) ---------------------------------------------------------

_COUNTER, _HISTOGRAM, _GAUGE, _INFO = "counter", "histogram", "gauge", "info"
_SUFFIXES = {
    _COUNTER: ("_total", "_created"),
    _HISTOGRAM: ("_bucket", "_sum", "_count", "_created"),
    _GAUGE: ("",),
    _INFO: ("_info",),
}
_GEN_AI = {n.L_GEN_AI_OPERATION_NAME, n.L_GEN_AI_PROVIDER_NAME, n.L_GEN_AI_REQUEST_MODEL}
# Metric family -> (type, labels). chainsight_release_info's labels are open: one per release key.
CONTRACT: dict[str, tuple[str, set[str] | None]] = {
    n.M_GEN_AI_OPERATION_DURATION: (_HISTOGRAM, {*_GEN_AI, n.L_GEN_AI_ERROR_TYPE}),
    n.M_GEN_AI_TOKEN_USAGE: (_HISTOGRAM, {*_GEN_AI, n.L_GEN_AI_TOKEN_TYPE}),
    n.M_GEN_AI_TTFC: (_HISTOGRAM, set(_GEN_AI)),
    n.M_REQUESTS: (_COUNTER, {n.L_REQUEST, n.L_FEATURE, n.L_OUTCOME, n.L_FAULT, n.L_RELEASE}),
    n.M_REQUEST_DURATION: (_HISTOGRAM, {n.L_REQUEST, n.L_OUTCOME, n.L_RELEASE}),
    n.M_STAGE_DURATION: (
        _HISTOGRAM,
        {n.L_STAGE, n.L_KIND, n.L_SYSTEM, n.L_OUTCOME, n.L_RELEASE},
    ),
    n.M_STAGE_ERRORS: (_COUNTER, {n.L_STAGE, n.L_KIND, n.L_SYSTEM, n.L_FAULT, n.L_ERROR_TYPE}),
    n.M_FALLBACKS: (_COUNTER, {n.L_STAGE, n.L_KIND, n.L_TO, n.L_REASON}),
    n.M_TOKENS: (
        _COUNTER,
        {n.L_PROVIDER, n.L_MODEL, n.L_TOKEN_TYPE, n.L_FEATURE, n.L_TENANT},
    ),
    n.M_COST_USD: (_COUNTER, {n.L_PROVIDER, n.L_MODEL, n.L_FEATURE, n.L_TENANT, n.L_TEAM}),
    n.M_REQUEST_COST_USD: (_HISTOGRAM, {n.L_REQUEST, n.L_FEATURE}),
    n.M_UNPRICED_CALLS: (_COUNTER, {n.L_PROVIDER, n.L_MODEL}),
    n.M_RETRIEVAL_DOCUMENTS: (_HISTOGRAM, {n.L_STAGE, n.L_SYSTEM}),
    n.M_RETRIEVAL_EMPTY: (_COUNTER, {n.L_STAGE, n.L_SYSTEM}),
    n.M_VALIDATIONS: (_COUNTER, {n.L_STAGE, n.L_VALIDATOR, n.L_RESULT}),
    n.M_BUDGET_SPENT: (_GAUGE, {n.L_BUDGET}),
    n.M_BUDGET_LIMIT: (_GAUGE, {n.L_BUDGET}),
    n.M_BUDGET_REJECTIONS: (_COUNTER, {n.L_BUDGET}),
    n.M_RELEASE_INFO: (_INFO, None),
    n.M_IN_FLIGHT: (_GAUGE, {n.L_REQUEST}),
    n.M_INTERNAL_ERRORS: (_COUNTER, {n.L_WHERE}),
    n.M_EXPORT_FAILURES: (_COUNTER, {n.L_SIGNAL}),
    n.M_LABEL_OVERFLOW: (_COUNTER, {n.L_LABEL}),
}
# Labels every scraped series has; `le` only on buckets.
_TARGET_LABELS = {"job", "instance"}
# Sloth's recording rules as `chainsight slo` writes them, and Prometheus' own ALERTS series.
_SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
_SLO_SERIES = {
    # The burn-rate and budget recordings are per job (the SLI ratios are `sum by (job)`).
    "slo:current_burn_rate:ratio": {"sloth_service", "sloth_slo", "sloth_id", "job"},
    "slo:period_burn_rate:ratio": {"sloth_service", "sloth_slo", "sloth_id", "job"},
    "slo:period_error_budget_remaining:ratio": {"sloth_service", "sloth_slo", "sloth_id", "job"},
    "slo:objective:ratio": {"sloth_service", "sloth_slo", "sloth_id"},
    "slo:error_budget:ratio": {"sloth_service", "sloth_slo", "sloth_id"},
    "slo:time_period:days": {"sloth_service", "sloth_slo", "sloth_id"},
    **{
        f"slo:sli_error:ratio_rate{w}": {
            "sloth_service",
            "sloth_slo",
            "sloth_id",
            "sloth_window",
            "job",
        }
        for w in _SLO_WINDOWS
    },
    # The rollback-trigger recordings (slos/release-regression.yaml), per job and release.
    **{
        name: {"job", "release", "release_window"}
        for name in (
            "slo:release_candidate:info",
            "slo:release_validation_failure:ratio",
            "slo:release_request_duration:p95",
            "slo:release_cost_per_request:usd",
        )
    },
    "slo:release_previous:info": {"job", "release", "release_window", "previous_release"},
    "slo:release_error:ratio": {"job", "release", "release_window", "fault"},
}


def _exported_series() -> dict[str, set[str] | None]:
    """Every series name chainsight (or its SLO rules) exports -> labels a matcher may use."""
    series: dict[str, set[str] | None] = {}
    for family, (kind, labels) in CONTRACT.items():
        for suffix in _SUFFIXES[kind]:
            allowed = None if labels is None else labels | _TARGET_LABELS
            if allowed is not None and suffix == "_bucket":
                allowed = allowed | {"le"}
            series[family + suffix] = allowed
    series.update(_SLO_SERIES)
    series["ALERTS"] = None
    return series


EXPORTED = _exported_series()
# The release info gauge's fixed labels; the rest are the user's release keys.
_RELEASE_INFO_LABELS = {n.L_RELEASE, "service", "environment", *_TARGET_LABELS}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*")
_NOT_METRICS = {"and", "or", "unless", "offset", "bool", "group_left", "group_right", "inf", "nan"}
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions and keywords left out)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        token = match.group(0)
        if text[match.end() :].lstrip().startswith("(") or token in _NOT_METRICS:
            continue
        names.add(token)
    return names


def selector_labels(expr: str) -> list[tuple[str, str]]:
    """(metric, label) for every label matcher in every ``metric{...}`` selector."""
    pairs: list[tuple[str, str]] = []
    for match in _SELECTOR.finditer(expr):
        body = match.group(2)
        matchers = _MATCHER.findall(body)
        rebuilt = ",".join(f'{k}{op}"{v}"' for k, op, v in matchers)
        assert rebuilt.replace(" ", "") == body.replace(" ", "").rstrip(","), (
            f"could not read the matchers of {match.group(0)!r}"
        )
        pairs.extend((match.group(1), label) for label, _, _ in matchers)
    return pairs


# --- Files ----------------------------------------------------------------------------------


def test_checked_in_dashboards_match_the_generator() -> None:
    stale = gen.stale_files()
    assert stale == [], (
        f"grafana/dashboards/ is out of date for {stale}: run "
        "`.venv/bin/python grafana/generate.py` and commit the JSON"
    )


def test_the_three_dashboards_are_there() -> None:
    assert {d["uid"]: d["title"] for d in DASHBOARDS.values()} == {
        "chainsight-oncall": "AI chain — on-call",
        "chainsight-cost": "AI chain — cost and usage",
        "chainsight-releases": "AI chain — releases",
    }
    for name, dashboard in DASHBOARDS.items():
        assert name == f"{dashboard['uid']}.json"
        # Importable by file provisioning and by UI upload: no instance-specific id.
        assert dashboard["id"] is None
        assert isinstance(dashboard["schemaVersion"], int)
        assert dashboard["description"]


def test_check_mode_detects_a_changed_a_missing_and_a_foreign_file(tmp_path: Path) -> None:
    assert gen.main(["--out", str(tmp_path)]) == 0
    assert gen.main(["--check", "--out", str(tmp_path)]) == 0

    edited = tmp_path / "chainsight-cost.json"
    edited.write_text(edited.read_text(encoding="utf-8").replace("Spend", "Spent", 1))
    assert gen.stale_files(tmp_path) == ["chainsight-cost.json"]
    assert gen.main(["--check", "--out", str(tmp_path)]) == 1

    gen.main(["--out", str(tmp_path)])
    (tmp_path / "chainsight-releases.json").unlink()
    (tmp_path / "hand-made.json").write_text("{}")
    assert gen.stale_files(tmp_path) == ["chainsight-releases.json", "hand-made.json"]


# --- Structure ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panel_ids_are_unique_and_panels_do_not_overlap(name: str) -> None:
    panels = _all_panels(DASHBOARDS[name])
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids {sorted(ids)}"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, f"{panel['title']}: {pos}"
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']}: {pos}"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_first_row_is_errors_by_fault_domain() -> None:
    panels = DASHBOARDS["chainsight-oncall.json"]["panels"]
    assert panels[0]["type"] == "row"
    first_row = []
    for panel in panels[1:]:
        if panel["type"] == "row":
            break
        first_row.append(panel)
    faults_shown = {
        fault
        for panel in first_row
        for target in panel["targets"]
        for fault in re.findall(rf'{n.L_FAULT}="(\w+)"', target["expr"])
    }
    assert faults_shown == set(n.FAULTS)
    assert all(panel["gridPos"]["y"] <= 5 for panel in first_row[:4])


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_variables(name: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    assert {"DS_PROMETHEUS", "job", "environment", "release", "feature"} <= variables.keys()
    ds = variables["DS_PROMETHEUS"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DS_REF, variable["name"]
            assert variable["description"], variable["name"]


def test_every_panel_uses_the_datasource_variable() -> None:
    for name, panel in _data_panels():
        assert panel["datasource"] == DS_REF, f"{name}: {panel['title']}"
        assert panel["targets"], f"{name}: {panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DS_REF, f"{name}: {panel['title']}"
    for dashboard in DASHBOARDS.values():
        for annotation in dashboard["annotations"]["list"]:
            if "expr" in annotation:
                assert annotation["datasource"] == DS_REF
                assert annotation["target"]["expr"] == annotation["expr"]


def test_every_panel_has_a_title_a_description_and_a_unit() -> None:
    titles = set()
    for name, panel in _data_panels():
        assert panel["title"].strip(), f"{name}: panel {panel['id']} has no title"
        assert len(panel["description"]) > 20, f"{name}: {panel['title']} has no description"
        assert panel["fieldConfig"]["defaults"]["unit"], f"{name}: {panel['title']} has no unit"
        assert (name, panel["title"]) not in titles, f"{name}: two panels {panel['title']!r}"
        titles.add((name, panel["title"]))


_FIXED_WINDOWS = {"$__range"}


def test_rates_use_rate_interval() -> None:
    for name, panel in _data_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            windows = re.findall(r"\[([^\]]+)\]", expr)
            assert windows or not re.search(r"\b(rate|increase|irate)\(", expr)
            for window in windows:
                if window == "$__rate_interval" or window in _FIXED_WINDOWS:
                    continue
                # A fixed calendar window is only right when each point is one such window.
                assert target.get("interval") == window, (
                    f"{name}: {panel['title']!r} uses [{window}] instead of [$__rate_interval]"
                    f" without interval={window!r} on the query: {expr}"
                )


def test_latency_panels_show_exemplars() -> None:
    latency_panels = 0
    for name, panel in _data_panels():
        exprs = " ".join(t["expr"] for t in panel["targets"])
        if panel["fieldConfig"]["defaults"]["unit"] == "s" and "histogram_quantile" in exprs:
            latency_panels += 1
            assert any(t["exemplar"] for t in panel["targets"]), f"{name}: {panel['title']}"
    assert latency_panels >= 6


# --- Names ----------------------------------------------------------------------------------


def test_every_metric_used_is_one_chainsight_exports() -> None:
    used: set[str] = set()
    for name, where, expr in _expressions():
        names = metric_names(expr)
        assert names, f"{name}: {where} selects no metric: {expr}"
        unknown = names - EXPORTED.keys()
        assert not unknown, (
            f"{name}: {where} uses {sorted(unknown)}, which chainsight never exports"
        )
        used |= names
    for dashboard in DASHBOARDS.values():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                match = re.fullmatch(r"label_values\((.+), *(\w+)\)", variable["definition"])
                assert match, variable["definition"]
                (metric,) = metric_names(match.group(1))
                assert metric in EXPORTED, variable["definition"]
                assert match.group(2) in _labels_of(metric), variable["definition"]
                used.add(metric)
    # The dashboards cover the metrics the issue lists, not just a few.
    families = {name.removesuffix(s) for name in used for s in ("_total", "_bucket", "_sum")}
    assert {
        n.M_REQUESTS,
        n.M_REQUEST_DURATION,
        n.M_STAGE_DURATION,
        n.M_STAGE_ERRORS,
        n.M_FALLBACKS,
        n.M_TOKENS,
        n.M_COST_USD,
        n.M_REQUEST_COST_USD,
        n.M_UNPRICED_CALLS,
        n.M_RETRIEVAL_EMPTY,
        n.M_VALIDATIONS,
        n.M_BUDGET_SPENT,
        n.M_BUDGET_LIMIT,
        n.M_GEN_AI_TTFC,
        n.M_EXPORT_FAILURES,
        n.M_LABEL_OVERFLOW,
        "slo:current_burn_rate:ratio",
        "slo:period_error_budget_remaining:ratio",
    } <= families | used


def _labels_of(metric: str) -> set[str]:
    if metric == n.M_RELEASE_INFO + "_info":
        return _RELEASE_INFO_LABELS
    labels = EXPORTED[metric]
    assert labels is not None, f"the labels of {metric} are not in the contract"
    return labels


def test_every_label_matcher_names_a_label_the_series_has() -> None:
    checked = 0
    for name, where, expr in _expressions():
        for metric, label in selector_labels(expr):
            assert label in _labels_of(metric), f"{name}: {where}: {metric} has no label {label!r}"
            checked += 1
    assert checked > 100


def test_the_metric_name_reader_is_not_fooled_by_functions_and_keywords() -> None:
    expr = (
        'sum by (le, request) (rate(a_bucket{job=~"x"}[1m])) / ignoring (fault) group_left '
        'topk by (job) (1, b_info{release="r"} offset 1m) or on() vector(0) * slo:x:ratio'
    )
    assert metric_names(expr) == {"a_bucket", "b_info", "slo:x:ratio"}
    assert selector_labels(expr) == [("a_bucket", "job"), ("b_info", "release")]


# --- Variable expansion ---------------------------------------------------------------------

_VARIABLE_TOKENS = [
    *(f"${v}" for v in gen.TEMPLATE_VARIABLES),
    *(f"${{{v}}}" for v in gen.TEMPLATE_VARIABLES),
    *(f"${b}" for b in gen.GRAFANA_BUILTINS),
]
_PLAIN_TEXT = st.text(st.characters(exclude_characters="$"), max_size=20)


@given(_PLAIN_TEXT)
def test_expansion_leaves_text_without_variables_alone(text: str) -> None:
    assert gen.expand_variables(text) == text


@given(st.lists(st.tuples(_PLAIN_TEXT, st.sampled_from(_VARIABLE_TOKENS)), max_size=6))
def test_expansion_replaces_every_known_variable(parts: list[tuple[str, str]]) -> None:
    # A word character right after a variable would extend its name, as in Grafana.
    text = "".join(f"{plain}{token} " for plain, token in parts)
    expanded = gen.expand_variables(text)
    assert "$" not in expanded
    assert expanded.count(".*") >= sum(
        token.lstrip("${").rstrip("}") in gen.TEMPLATE_VARIABLES for _, token in parts
    )


def test_expansion_values() -> None:
    assert gen.expand_variables('rate(x{job=~"$job"}[$__rate_interval])') == (
        'rate(x{job=~".*"}[1m])'
    )
    assert gen.expand_variables("${release} $__range $__interval") == ".* 1h 1m"


@pytest.mark.parametrize("expr", ['x{job=~"$jbo"}', "rate(x[${__rate_intervl}])"])
def test_expansion_refuses_an_unknown_variable(expr: str) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown Grafana variable '\$\{?_*\w+\}?'"):
        gen.expand_variables(expr)


def test_all_queries_covers_every_expression_expanded() -> None:
    queries = gen.all_queries()
    expected = [
        (name.removesuffix(".json"), title, gen.expand_variables(expr))
        for name, title, expr in _expressions()
    ]
    assert sorted(queries) == sorted(expected)
    assert all("$" not in expr for _, _, expr in queries)


# --- promtool -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = (
            "promtool not found on PATH: the PromQL of the dashboards was NOT checked. "
            "Install it with `make servers` (Debian package prometheus)."
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _check_rules(
    promtool: str, directory: Path, exprs: list[str]
) -> subprocess.CompletedProcess[str]:
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard_query_{i}", "expr": expr} for i, expr in enumerate(exprs)
                ],
            }
        ]
    }
    path = directory / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.integration
def test_every_expression_parses_in_promtool(promtool: str, tmp_path: Path) -> None:
    queries = gen.all_queries()
    result = _check_rules(promtool, tmp_path, [expr for _, _, expr in queries])
    index = "\n".join(
        f"dashboard_query_{i}: {uid} / {title}" for i, (uid, title, _) in enumerate(queries)
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{index}"
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


@pytest.mark.integration
def test_promtool_check_rejects_what_grafana_alone_would_accept(
    promtool: str, tmp_path: Path
) -> None:
    # The parse check above can fail: unexpanded variables and broken PromQL are refused.
    raw = 'sum(rate(chainsight_requests_total{job=~"$job"}[$__rate_interval]))'
    assert _check_rules(promtool, tmp_path, [raw]).returncode != 0
    assert _check_rules(promtool, tmp_path, ["sum(rate(x[1m])"]).returncode != 0
    assert _check_rules(promtool, tmp_path, [gen.expand_variables(raw)]).returncode == 0


# --- Provisioning and docs ------------------------------------------------------------------


def test_dashboard_provisioning_example() -> None:
    config = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "chainsight.yaml").read_text(encoding="utf-8")
    )
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert provider["folder"] == "chainsight"


def test_datasource_provisioning_example() -> None:
    config = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text(encoding="utf-8")
    )
    assert config["apiVersion"] == 1
    by_uid = {ds["uid"]: ds for ds in config["datasources"]}
    prometheus = by_uid["prometheus"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["isDefault"] is True
    assert re.fullmatch(r"\d+s", prometheus["jsonData"]["timeInterval"])
    # Exemplars carry the trace id under this label (naming.md); the link must point at a
    # datasource that is provisioned too.
    (link,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert link["name"] == "trace_id"
    assert link["datasourceUid"] in by_uid


def test_docs_explain_every_panel_and_variable() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    missing = [panel["title"] for _, panel in _data_panels() if panel["title"] not in docs]
    assert not missing, f"docs/dashboards.md does not explain the panels {missing}"
    for dashboard in DASHBOARDS.values():
        assert dashboard["title"] in docs
        for variable in dashboard["templating"]["list"]:
            assert f"`{variable['name']}`" in docs, variable["name"]
    assert "grafana/provisioning" in docs
