"""Tests for the shipped Prometheus rule files in ``grafana/alerts/`` and their runbooks.

promtool lints every rule file and runs the unit tests in ``grafana/alerts/tests/`` (every alert
fires on bad series with its labels and annotations and stays silent on healthy and on zero
traffic). The structural checks here make sure no alert goes without a test, a runbook, known
metric names and the labels and annotations the on-call relies on.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chainsight import _names as n
from chainsight.tools import slo
from tests.integration._servers import promtool, require_binary

ROOT = Path(__file__).resolve().parents[2]
ALERTS_DIR = ROOT / "grafana" / "alerts"
RULE_FILES = sorted(ALERTS_DIR.glob("*.yaml"))
TEST_FILES = sorted((ALERTS_DIR / "tests").glob("*_test.yaml"))
RUNBOOKS_DIR = ROOT / "docs" / "runbooks"

# How prometheus-client exposes a family: counters get _total, histograms the three series,
# Info (and our release gauge, named chainsight_release) _info.
_SUFFIXES = ("", "_total", "_bucket", "_count", "_sum", "_info")
_METRIC_RE = re.compile(r"\b((?:chainsight|gen_ai)_[a-zA-Z0-9_]*)\s*[{\[)\s]")


def _exported_metric_names() -> set[str]:
    families = {
        value for name, value in vars(n).items() if name.startswith("M_") and isinstance(value, str)
    }
    return {family + suffix for family in families for suffix in _SUFFIXES}


def _rules() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            found.extend((path, rule) for rule in group["rules"])
    return found


ALERTS = {rule["alert"]: rule for _, rule in _rules() if "alert" in rule}


def _alert_tests() -> list[dict[str, Any]]:
    cases = []
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            cases.extend(test.get("alert_rule_test", []))
    return cases


def test_the_shipped_alerts_are_all_there() -> None:
    targeted = {
        "ChainsightProviderErrorSpike",
        "ChainsightProviderLatencySpike",
        "ChainsightVectorStoreErrors",
        "ChainsightValidationFailureSpike",
        "ChainsightFallbackRateHigh",
        "ChainsightCostSpendAnomaly",
        "ChainsightCostPerRequestSpike",
        "ChainsightBudgetSoftThreshold",
        "ChainsightSpanExportFailing",
        "ChainsightLabelOverflow",
    }
    generated = {
        name
        for spec in sorted((ROOT / "slos").glob("*.yaml"))
        for s in slo.load_spec(spec).slos
        for name in slo.alert_names(s)
    }
    assert len(generated) == 6
    rollback = {
        name
        for spec in sorted((ROOT / "slos").glob("*.yaml"))
        for releases in [slo.load_spec(spec).releases]
        if releases is not None
        for name in slo.release_alert_names(releases)
    }
    assert rollback == {
        "ChainsightReleaseValidationRegression",
        "ChainsightReleaseErrorRegression",
        "ChainsightReleaseLatencyRegression",
        "ChainsightReleaseCostRegression",
    }
    assert set(ALERTS) == targeted | generated | rollback


@pytest.mark.integration
@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules_lint_all(path: Path) -> None:
    result = promtool("check", "rules", "--lint=all", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.fixture(scope="module")
def promtool_unit_runs() -> Iterator[dict[Path, subprocess.Popen[str]]]:
    """Start ``promtool test rules`` on every test file at once: they take seconds each."""
    binary = require_binary("promtool")
    runs = {
        path: subprocess.Popen(
            [binary, "test", "rules", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for path in TEST_FILES
    }
    yield runs
    for run in runs.values():
        if run.poll() is None:
            run.kill()
        run.communicate()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(
    path: Path, promtool_unit_runs: dict[Path, subprocess.Popen[str]]
) -> None:
    run = promtool_unit_runs[path]
    output, _ = run.communicate(timeout=240)
    assert run.returncode == 0, output
    assert "SUCCESS" in output


def test_every_rule_file_has_a_unit_test_file() -> None:
    tested = set()
    for path in TEST_FILES:
        for rule_file in yaml.safe_load(path.read_text(encoding="utf-8"))["rule_files"]:
            tested.add((path.parent / rule_file).resolve())
    assert {p.resolve() for p in RULE_FILES} <= tested


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_every_alert_is_tested_firing_and_silent(alert: str) -> None:
    cases = [c for c in _alert_tests() if c["alertname"] == alert]
    firing = [c for c in cases if c.get("exp_alerts")]
    silent = [c for c in cases if not c.get("exp_alerts")]
    assert firing, f"no promtool test expects {alert} to fire"
    assert silent, f"no promtool test expects {alert} to stay silent"
    for case in firing:
        for expected in case["exp_alerts"]:
            # promtool compares annotations in full, so listing all three pins their text.
            assert set(expected["exp_annotations"]) == {"summary", "description", "runbook_url"}
            assert expected["exp_labels"]["severity"] == ALERTS[alert]["labels"]["severity"]


@pytest.mark.parametrize(
    "alert", sorted(a for a in ALERTS if not ALERTS[a]["expr"].startswith("absent("))
)
def test_every_alert_says_where_it_fired(alert: str) -> None:
    # `job` is what every runbook's `chainsight triage --selector 'job="<job>"'` needs; an
    # absent() alert has no series to take it from.
    for case in _alert_tests():
        if case["alertname"] != alert:
            continue
        for expected in case.get("exp_alerts") or []:
            assert "job" in expected["exp_labels"], f"{alert} fires without a job label"
            if ALERTS[alert]["labels"].get("severity") == "page":
                assert (
                    "fault_domain" in expected["exp_labels"]
                    or "fault_domain" in (ALERTS[alert]["labels"])
                ), f"{alert} pages without naming a fault domain"


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_every_alert_has_the_labels_and_annotations_on_call_needs(alert: str) -> None:
    rule = ALERTS[alert]
    assert rule["labels"]["severity"] in {"page", "ticket"}
    if "fault_domain" in rule["labels"]:
        assert rule["labels"]["fault_domain"] in n.FAULTS
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    if not rule["expr"].startswith("absent("):
        # An absent() alert has no value worth showing (it is always 1).
        assert "$value" in annotations["description"], "the description must show the value"


def test_burn_rate_alerts_page_and_ticket() -> None:
    for spec in sorted((ROOT / "slos").glob("*.yaml")):
        for s in slo.load_spec(spec).slos:
            page, ticket, absent = slo.alert_names(s)
            assert ALERTS[page]["labels"]["severity"] == "page"
            assert ALERTS[ticket]["labels"]["severity"] == "ticket"
            assert ALERTS[absent]["labels"]["severity"] == "ticket"


def test_every_metric_name_in_the_rules_is_one_chainsight_exports() -> None:
    exported = _exported_metric_names()
    used: dict[str, set[str]] = {}
    for path, rule in _rules():
        for name in _METRIC_RE.findall(rule["expr"] + " "):
            used.setdefault(name, set()).add(f"{path.name}:{rule.get('alert', rule.get('record'))}")
    assert used, "the regex found no metric names at all"
    unknown = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert not unknown, f"metric names chainsight does not export: {unknown}"
    # Recording rules may only read raw chainsight metrics or other slo: recordings.
    recorded = {rule["record"] for _, rule in _rules() if "record" in rule}
    for _, rule in _rules():
        for name in re.findall(r"\b(slo:[a-z_:0-9]+)", rule["expr"]):
            assert name in recorded, f"{name} is read but never recorded"


def test_the_metric_regex_finds_names_in_every_position() -> None:
    expr = (
        'sum(rate(chainsight_a_total{x="y"}[5m])) / chainsight_b[1m] + '
        "absent(gen_ai_c) * chainsight_d and on() slo:x"
    )
    assert _METRIC_RE.findall(expr + " ") == [
        "chainsight_a_total",
        "chainsight_b",
        "gen_ai_c",
        "chainsight_d",
    ]


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_runbook_url_points_to_an_existing_runbook(alert: str) -> None:
    url = ALERTS[alert]["annotations"]["runbook_url"]
    assert url == f"{slo.DEFAULT_RUNBOOK_BASE}/{alert}.md"
    relative = url.removeprefix(slo.DEFAULT_RUNBOOK_BASE.rsplit("/docs/", 1)[0] + "/")
    assert (ROOT / relative).is_file(), f"{alert}: {relative} does not exist"


def test_no_runbook_without_an_alert() -> None:
    orphans = {p.stem for p in RUNBOOKS_DIR.glob("*.md")} - set(ALERTS)
    assert not orphans, f"runbooks for alerts that do not exist: {sorted(orphans)}"


# The first screen (about 40 lines) answers what broke, who is affected, where to look and what
# is safe to do now; recovery comes after.
_FIRST_SCREEN_LINES = 45
_FIRST_SCREEN = ("## What broke", "## Who is affected", "## Look first", "## Safe actions now")


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_runbook_first_screen_answers_the_on_call_questions(alert: str) -> None:
    text = (RUNBOOKS_DIR / f"{alert}.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == f"# {alert}"
    first = "\n".join(lines[:_FIRST_SCREEN_LINES])
    for heading in _FIRST_SCREEN:
        assert heading in first, f"{alert}: {heading!r} is not on the first screen"
    assert "chainsight triage --prometheus" in first
    assert "AI chain — " in first, "name the dashboard and panel to open"
    assert "## Confirm recovery" in text
    assert text.index("## Confirm recovery") > text.index("## Safe actions now")


def test_runbooks_name_real_dashboard_panels() -> None:
    panels = {
        (dashboard["title"], panel["title"])
        for path in (ROOT / "grafana" / "dashboards").glob("*.json")
        for dashboard in [json.loads(path.read_text(encoding="utf-8"))]
        for panel in dashboard["panels"]
    }
    for path in sorted(RUNBOOKS_DIR.glob("*.md")):
        # References are written as: *AI chain — on-call* → **Panel title**
        refs = re.findall(r"\*(AI chain — [^*]+)\* → \*\*([^*]+)\*\*", path.read_text())
        assert refs, f"{path.name} names no dashboard panel"
        for dash, panel in refs:
            assert (dash, panel) in panels, f"{path.name}: no panel {panel!r} in {dash!r}"


def test_alerts_doc_explains_every_alert() -> None:
    text = (ROOT / "docs" / "alerts.md").read_text(encoding="utf-8")
    for alert in ALERTS:
        assert f"`{alert}`" in text, f"docs/alerts.md does not describe {alert}"
    for topic in ("promtool", "slo generate", "Mimir", "Grafana"):
        assert topic in text
