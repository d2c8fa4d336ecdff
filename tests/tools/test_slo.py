"""Tests for ``chainsight.tools.slo``: spec validation, rule generation and ``chainsight slo``.

The shipped rule files are checked against their specs here (regenerated in memory); what the
rules do on real series is tested by promtool in ``tests/test_alerts.py``.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.utils import floatToGoString

from chainsight import _names as n
from chainsight.errors import ConfigurationError
from chainsight.tools import slo
from tests.integration._servers import promtool

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "slos").glob("*.yaml"))

AVAILABILITY: dict[str, Any] = {
    "service": "support-bot",
    "slos": [
        {
            "name": "answers",
            "objective": 99.9,
            "window": "28d",
            "sli": {
                "events": {
                    "metric": "chainsight_requests_total",
                    "filter": {"request": "answer_ticket", "outcome": ["ok", "error", "degraded"]},
                    "bad": {"outcome": ["error"]},
                }
            },
        }
    ],
}

LATENCY: dict[str, Any] = {
    "service": "support-bot",
    "slos": [
        {
            "name": "fast-answers",
            "objective": 95,
            "window": "30d",
            "sli": {
                "latency": {
                    "metric": "chainsight_request_duration_seconds",
                    "filter": {"outcome": "ok"},
                    "threshold_seconds": 1,
                }
            },
            "alerting": {"name": "SupportBotSlowAnswers", "labels": {"team": "ai"}},
        }
    ],
}


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chainsight slo")
    slo.add_arguments(parser)
    return slo.run(parser.parse_args(argv))


def _rules(spec: dict[str, Any], **kwargs: Any) -> dict[str, dict[str, Any]]:
    """Rules of the generated file by record/alert name (the last one wins for recordings)."""
    generated = slo.generate_rules(slo.parse_spec(spec), **kwargs)
    return {
        rule.get("record", rule.get("alert")): rule
        for group in generated["groups"]
        for rule in group["rules"]
    }


def _with(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``spec`` with the field at ``a.b.0.c`` replaced, or removed for ``...``."""
    result = copy.deepcopy(spec)
    node: Any = result
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in keys[:-1]:
        node = node[key]
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return result


# --- the repository's specs and rule files ----------------------------------------------------


def test_repo_has_the_two_default_slos() -> None:
    names = {s.name for path in SPECS for s in slo.load_spec(path).slos}
    assert names == {"request-availability", "model-latency"}


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.stem)
def test_shipped_rule_files_are_generated_from_the_specs(spec_path: Path) -> None:
    relative = spec_path.relative_to(ROOT).as_posix()
    expected = slo.render_rules(slo.load_spec(spec_path), source=relative)
    target = ROOT / "grafana" / "alerts" / f"slo-{spec_path.stem}.yaml"
    assert target.exists(), (
        f"{target} is missing; run: chainsight slo generate {relative} -o {target}"
    )
    assert target.read_text(encoding="utf-8") == expected, (
        f"{target.relative_to(ROOT)} is out of date with {relative}; regenerate it with "
        f"`chainsight slo generate {relative} -o {target.relative_to(ROOT)}`"
    )


def test_latency_threshold_matches_the_le_string_prometheus_client_writes() -> None:
    registry = CollectorRegistry()
    histogram = Histogram(
        n.M_STAGE_DURATION,
        "stage latency",
        ["kind"],
        buckets=n.LATENCY_BUCKETS,
        registry=registry,
    )
    histogram.labels(kind="model").observe(0.3)
    exposed = set(re.findall(r'le="([^"]+)"', generate_latest(registry).decode()))
    rules = _rules(LATENCY)
    expr = rules["slo:sli_error:ratio_rate5m"]["expr"]
    used = re.findall(r'le="([^"]+)"', expr)
    assert used == ["1.0"]
    assert set(used) <= exposed


# --- generated rules ----------------------------------------------------------------------------


def test_events_sli_has_every_window_and_sloth_labels() -> None:
    generated = slo.generate_rules(slo.parse_spec(AVAILABILITY))
    recordings = [r for g in generated["groups"] for r in g["rules"] if "record" in r]
    windows = [
        r["labels"]["sloth_window"]
        for r in recordings
        if r["record"].startswith("slo:sli_error:ratio_rate")
    ]
    assert windows == [*slo.ALERT_WINDOWS, "28d"]
    for rule in recordings:
        assert rule["labels"]["sloth_id"] == "support-bot-answers"
        assert rule["labels"]["sloth_service"] == "support-bot"
        assert rule["labels"]["sloth_slo"] == "answers"
    five = next(r for r in recordings if r["record"] == "slo:sli_error:ratio_rate5m")["expr"]
    assert 'chainsight_requests_total{outcome="error",request="answer_ticket"}[5m]' in five
    assert (
        'chainsight_requests_total{outcome=~"ok|error|degraded",request="answer_ticket"}[5m]'
        in five
    )


def test_metadata_rules_carry_objective_budget_and_period() -> None:
    rules = _rules(AVAILABILITY)
    assert rules["slo:objective:ratio"]["expr"] == "vector(0.999)"
    # 99.9 kept exact: 1 - 0.999 in binary floats would print as 0.0010000000000000009.
    assert rules["slo:error_budget:ratio"]["expr"] == "vector(0.001)"
    assert rules["slo:time_period:days"]["expr"] == "vector(28)"
    assert "slo:sli_error:ratio_rate28d" in rules["slo:period_burn_rate:ratio"]["expr"]
    assert rules["sloth_slo_info"]["labels"]["sloth_objective"] == "99.9"
    for name in ("slo:current_burn_rate:ratio", "slo:period_error_budget_remaining:ratio"):
        assert 'sloth_id="support-bot-answers"' in rules[name]["expr"]


def test_burn_alerts_use_the_scaled_factors_and_runbook_base() -> None:
    rules = _rules(AVAILABILITY, runbook_base="https://runbooks.example.com/ai/")
    page = rules["SupportBotAnswersBudgetBurnPage"]
    ticket = rules["SupportBotAnswersBudgetBurnTicket"]
    absent = rules["SupportBotAnswersMetricAbsent"]
    # 28 days: 2% of the budget in 1h is a burn of 0.02 * 672 = 13.44.
    assert "(13.44 * 0.001)" in page["expr"]
    assert "(5.6 * 0.001)" in page["expr"]
    assert "(2.8 * 0.001)" in ticket["expr"]
    assert page["labels"]["severity"] == "page"
    assert ticket["labels"]["severity"] == "ticket"
    assert absent["expr"] == (
        'absent(chainsight_requests_total{outcome=~"ok|error|degraded",request="answer_ticket"})'
    )
    assert absent["for"] == "15m"
    for rule in (page, ticket, absent):
        assert rule["annotations"]["runbook_url"] == (
            f"https://runbooks.example.com/ai/{rule['alert']}.md"
        )
        assert rule["annotations"]["summary"]
    assert "$value" in page["annotations"]["description"]


def test_latency_sli_counts_events_above_the_bucket_as_bad() -> None:
    rules = _rules(LATENCY)
    expr = rules["slo:sli_error:ratio_rate1h"]["expr"]
    assert 'chainsight_request_duration_seconds_bucket{le="1.0",outcome="ok"}[1h]' in expr
    assert 'chainsight_request_duration_seconds_count{outcome="ok"}[1h]' in expr
    assert expr.lstrip("(\n ").startswith("1 - (")
    assert rules["SupportBotSlowAnswersMetricAbsent"]["expr"] == (
        'absent(chainsight_request_duration_seconds_bucket{le="1.0",outcome="ok"})'
    )
    for alert in ("SupportBotSlowAnswersBudgetBurnPage", "SupportBotSlowAnswersMetricAbsent"):
        assert rules[alert]["labels"]["team"] == "ai"


def test_render_is_loadable_yaml_with_readable_promql() -> None:
    text = slo.render_rules(slo.parse_spec(AVAILABILITY), source="slos/answers.yaml")
    assert text.startswith("# Generated by `chainsight slo generate slos/answers.yaml`")
    assert "&id" not in text  # no YAML anchors: the files are read by people and by Mimir
    assert "expr: |-\n" in text
    assert yaml.safe_load(text) == slo.generate_rules(slo.parse_spec(AVAILABILITY))


@pytest.mark.integration
@pytest.mark.parametrize("spec", [AVAILABILITY, LATENCY], ids=["events", "latency"])
def test_generated_rules_pass_promtool_lint(spec: dict[str, Any], tmp_path: Path) -> None:
    # Label values with regex and quote characters must survive escaping.
    spec = copy.deepcopy(spec)
    sli = next(iter(spec["slos"][0]["sli"].values()))
    sli["filter"]["release"] = ['v1.2+"rc"', "a|b", "back\\slash"]
    out = tmp_path / "rules.yaml"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert _run(["generate", str(spec_path), "-o", str(out)]) == 0
    result = promtool("check", "rules", "--lint=all", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 18 rules found" in result.stdout


# --- spec validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_with(AVAILABILITY, "slos.0.objective", 100), "strictly between 0 and 100"),
        (_with(AVAILABILITY, "slos.0.objective", "high"), "expected a percentage"),
        (_with(AVAILABILITY, "slos.0.objective", True), "expected a percentage"),
        (_with(AVAILABILITY, "slos.0.window", "2w"), "got '2w'"),
        (_with(AVAILABILITY, "slos.0.window", "3d"), "between 7d and 90d"),
        (_with(AVAILABILITY, "slos.0.name", "Answers"), "does not match"),
        (_with(AVAILABILITY, "slos.0.objectve", 99), "unknown key(s) ['objectve']"),
        (_with(AVAILABILITY, "slos.0.sli", ...), "missing key(s) ['sli']"),
        (_with(AVAILABILITY, "slos", []), "non-empty list"),
        (_with(AVAILABILITY, "service", "support bot"), "does not match"),
        (
            _with(AVAILABILITY, "slos.0.sli.events.metric", "chainsight_requests"),
            "not a counter chainsight exports",
        ),
        (
            _with(AVAILABILITY, "slos.0.sli.events.bad", {"outcome": ["errors"]}),
            "unknown value(s) ['errors']",
        ),
        (
            _with(AVAILABILITY, "slos.0.sli.events.bad", {"outcome": ["cancelled"]}),
            "bad events must be a subset",
        ),
        (_with(AVAILABILITY, "slos.0.sli.events.bad", {}), "at least one label"),
        (
            _with(AVAILABILITY, "slos.0.sli.events.filter", {"tenant": "acme"}),
            "the metric has no label 'tenant'",
        ),
        (
            _with(AVAILABILITY, "slos.0.sli.events.filter", {"feature": []}),
            "an empty list matches nothing",
        ),
        (_with(LATENCY, "slos.0.sli.latency.threshold_seconds", 3), "not a bucket bound"),
        (
            _with(
                LATENCY, "slos.0.sli.latency.metric", "chainsight_request_duration_seconds_bucket"
            ),
            "without _bucket",
        ),
        (_with(LATENCY, "slos.0.sli.latency.filter", {"le": "1.0"}), "do not filter on 'le'"),
        (_with(LATENCY, "slos.0.alerting.name", "slow-answers"), "does not match"),
        (_with(LATENCY, "slos.0.alerting.labels", {"severity": "page"}), "set by the generator"),
        (_with(LATENCY, "slos.0.alerting.absent_for", "soon"), "does not match"),
        (
            _with(LATENCY, "slos.0.alerting.labels", {"fault_domain": "network"}),
            "'network' is not a fault domain",
        ),
        (_with(AVAILABILITY, "version", 2), "only version 1"),
        ({"service": "x", "slos": [{"name": "a"}] * 2}, "missing key(s)"),
        ("just text", "expected a mapping"),
    ],
)
def test_bad_specs_are_refused_with_the_field_and_value(spec: object, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        slo.parse_spec(spec, source="spec.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("spec.yaml")


def test_duplicate_slo_names_are_refused() -> None:
    spec = copy.deepcopy(AVAILABILITY)
    spec["slos"].append(copy.deepcopy(spec["slos"][0]))
    with pytest.raises(ConfigurationError, match="'answers' is used by two SLOs"):
        slo.parse_spec(spec)


# --- pages that say where, alerts that do not cry wolf, rollback triggers ------------------------


def test_burn_alerts_are_per_job_with_a_traffic_floor_and_a_for() -> None:
    rules = _rules(_with(AVAILABILITY, "slos.0.alerting", {"page_for": "30s", "min_events": 50}))
    page = rules["SupportBotAnswersBudgetBurnPage"]
    ticket = rules["SupportBotAnswersBudgetBurnTicket"]
    assert page["for"] == "30s"
    assert ticket["for"] == "15m"
    assert "sum by (job) (rate(" in rules["slo:sli_error:ratio_rate5m"]["expr"]
    # Each pair needs the floor in its long window (1h = 3600 s, 6h = 21600 s).
    assert "[1h])) * 3600 >= 50" in page["expr"]
    assert "[6h])) * 21600 >= 50" in page["expr"]
    assert "[3d])) * 259200 >= 50" in ticket["expr"]
    # The sloth labels are static: the alert's series carries job and fault_domain instead.
    assert page["labels"]["sloth_id"] == "support-bot-answers"


def test_an_events_slo_on_requests_names_the_failing_domain() -> None:
    page = _rules(AVAILABILITY)["SupportBotAnswersBudgetBurnPage"]
    assert page["expr"].startswith("topk by (job) (1,")
    assert '"fault_domain", "$1", "fault", "(.*)"' in page["expr"]
    assert "{{ $labels.fault_domain }} faults failed" in page["annotations"]["description"]
    assert "{{ $labels.job }}" in page["annotations"]["description"]


def test_a_fixed_fault_domain_or_a_latency_sli_keeps_the_burn_expression() -> None:
    fixed = _with(AVAILABILITY, "slos.0.alerting", {"labels": {"fault_domain": "provider"}})
    for spec in (fixed, LATENCY):
        for rule in _rules(spec).values():
            if rule.get("alert", "").endswith("BudgetBurnPage"):
                assert rule["expr"].startswith("(\n  max(slo:sli_error:ratio_rate5m")


RELEASES: dict[str, Any] = {"service": "support-bot", "releases": {}}


def test_a_releases_section_alone_generates_the_rollback_triggers() -> None:
    spec = slo.parse_spec(RELEASES)
    assert spec.slos == ()
    assert spec.releases is not None
    assert slo.release_alert_names(spec.releases) == (
        "SupportBotReleaseValidationRegression",
        "SupportBotReleaseErrorRegression",
        "SupportBotReleaseLatencyRegression",
        "SupportBotReleaseCostRegression",
    )
    rules = _rules(RELEASES)
    error = rules["SupportBotReleaseErrorRegression"]
    assert error["for"] == "10m"
    assert error["labels"] == {"severity": "ticket", "trigger": "rollback"}
    assert "(2.0 * (" in error["expr"]
    assert "+ 0.01)" in error["expr"]
    # The floor: 100 requests in 30m (1800 s) on the candidate and on the previous release.
    assert "slo:release_requests:rate * 1800 >= 100" in rules["slo:release_candidate:info"]["expr"]
    assert "slo:release_requests:rate * 1800 >= 100" in rules["slo:release_previous:info"]["expr"]
    assert "[1d:1m]" in rules["slo:release_first_seen:timestamp"]["expr"]
    # Recordings and alerts share one group: its rules run in order.
    groups = slo.generate_rules(slo.parse_spec(RELEASES))["groups"]
    assert len(groups) == 1


def test_release_triggers_take_their_settings_from_the_spec() -> None:
    spec = {
        "service": "bot",
        "releases": {
            "window": "1h",
            "min_requests": 500,
            "for": "5m",
            "alerting": {"name": "BotCanary"},
            "triggers": {"p95_seconds": {"factor": 2, "margin": 0.5}},
        },
    }
    rules = _rules(spec)
    latency = rules["BotCanaryLatencyRegression"]
    assert latency["for"] == "5m"
    assert "(2.0 * max by (job)" in latency["expr"]
    assert "+ 0.5)" in latency["expr"]
    assert "[1h]" in rules["slo:release_requests:rate"]["expr"]
    assert "* 3600 >= 500" in rules["slo:release_candidate:info"]["expr"]


def test_cli_validate_describes_the_rollback_triggers(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["validate", str(ROOT / "slos" / "release-regression.yaml")]) == 0
    out = capsys.readouterr().out
    assert "candidate vs previous over 30m, at least 100 requests each" in out
    assert "ChainsightReleaseValidationRegression at 2x+0.02" in out


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"service": "x"}, "missing key(s) ['slos']"),
        ({"service": "x", "releases": {"window": "soon"}}, "does not match"),
        ({"service": "x", "releases": {"min_requests": 0}}, "at least 1"),
        ({"service": "x", "releases": {"min_requests": 10.5}}, "whole number"),
        ({"service": "x", "releases": {"triggers": {"latency": {}}}}, "unknown key(s) ['latency']"),
        (
            {"service": "x", "releases": {"triggers": {"error_ratio": {"factor": 0.5}}}},
            "at least 1",
        ),
        ({"service": "x", "releases": {"alerting": {"name": "bad-name"}}}, "does not match"),
        (_with(AVAILABILITY, "slos.0.alerting", {"min_events": 0}), "at least 1"),
        (_with(AVAILABILITY, "slos.0.alerting", {"page_for": "2 minutes"}), "does not match"),
    ],
)
def test_bad_alerting_and_release_settings_are_refused(spec: object, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        slo.parse_spec(spec, source="spec.yaml")
    assert message in str(info.value)


# --- the command line ---------------------------------------------------------------------------


def test_cli_generate_writes_the_rule_file(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(LATENCY), encoding="utf-8")
    out = tmp_path / "rules.yaml"
    assert _run(["generate", str(spec_path), "-o", str(out), "--runbook-base", "https://x/rb"]) == 0
    rules = yaml.safe_load(out.read_text(encoding="utf-8"))
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert [a["annotations"]["runbook_url"] for a in alerts] == [
        f"https://x/rb/{name}.md" for name in slo.alert_names(slo.parse_spec(LATENCY).slos[0])
    ]


def test_cli_generate_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(AVAILABILITY), encoding="utf-8")
    assert _run(["generate", str(spec_path)]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == slo.generate_rules(
        slo.parse_spec(AVAILABILITY)
    )


def test_cli_validate_summarises(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["validate", str(ROOT / "slos" / "request-availability.yaml")]) == 0
    out = capsys.readouterr().out
    assert "chainsight-request-availability: 99.5% over 30d (error budget 0.5%)" in out
    assert "page ChainsightRequestAvailabilityBudgetBurnPage at 14.4x/6x" in out
    assert "ticket ChainsightRequestAvailabilityBudgetBurnTicket at 3x/1x" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read SLO spec"),
        ("service: [unclosed", "is not valid YAML"),
        ("service: x\nslos: []\n", "non-empty list"),
    ],
)
def test_cli_reports_bad_specs_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    spec_path = tmp_path / "spec.yaml"
    if content is not None:
        spec_path.write_text(content, encoding="utf-8")
    assert _run(["validate", str(spec_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chainsight slo: error: ")
    assert message in err
    assert str(spec_path) in err


def test_cli_reports_an_unwritable_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(AVAILABILITY), encoding="utf-8")
    missing_dir = tmp_path / "no" / "such" / "dir" / "rules.yaml"
    assert _run(["generate", str(spec_path), "-o", str(missing_dir)]) == 2
    assert "cannot write" in capsys.readouterr().err


# --- pure functions (hypothesis) ----------------------------------------------------------------


@given(st.floats(min_value=1e-6, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_le_label_matches_prometheus_client(bound: float) -> None:
    assert slo.le_label(bound) == floatToGoString(bound)


def test_le_label_of_infinity() -> None:
    assert slo.le_label(float("inf")) == "+Inf"


@given(st.integers(min_value=7, max_value=90))
def test_burn_rates_spend_the_documented_budget_shares(days: int) -> None:
    rates = slo.burn_rates(days)
    hours = days * 24
    # factor * long window / period = share of the budget spent when the alert fires.
    assert rates.page_fast * 1 / hours == pytest.approx(0.02)
    assert rates.page_slow * 6 / hours == pytest.approx(0.05)
    assert rates.ticket_fast * 24 / hours == pytest.approx(0.10)
    assert rates.ticket_slow * 72 / hours == pytest.approx(0.10)
    assert rates.page_fast > rates.page_slow > rates.ticket_fast > rates.ticket_slow


def test_burn_rates_for_30_days_are_the_workbook_factors() -> None:
    assert slo.burn_rates(30) == slo.BurnRates(14.4, 6.0, 3.0, 1.0)


def _unquote(literal: str) -> str:
    """Undo PromQL double-quoted string escaping (the subset the generator emits)."""
    assert literal.startswith('"')
    assert literal.endswith('"')
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), literal[1:-1])


@given(st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=4, unique=True))
def test_regex_matchers_match_exactly_the_listed_values(values: list[str]) -> None:
    rendered = slo.promql_matchers({"release": values})
    assert rendered.startswith("release=~")
    pattern = _unquote(rendered[len("release=~") :])
    # Prometheus anchors label regexes; RE2 and Python agree on backslash-escaped literals.
    for value in values:
        assert re.fullmatch(pattern, value, flags=re.DOTALL)
    joined = values[0] + values[1]
    if joined not in values:
        assert not re.fullmatch(pattern, joined, flags=re.DOTALL)


@given(st.text(min_size=1, max_size=20))
def test_equality_matchers_round_trip(value: str) -> None:
    rendered = slo.promql_matchers({"feature": [value]})
    assert _unquote(rendered[len("feature=") :]) == value


@given(
    st.decimals(min_value="50", max_value="99.999", places=3, allow_nan=False),
    st.integers(min_value=7, max_value=90),
)
def test_objective_and_budget_are_exact_decimals(objective: Any, days: int) -> None:
    spec = _with(AVAILABILITY, "slos.0.objective", str(objective))
    spec = _with(spec, "slos.0.window", f"{days}d")
    parsed = slo.parse_spec(spec).slos[0]
    assert parsed.objective_ratio + parsed.error_budget == pytest.approx(1.0)
    rules = _rules(spec)
    assert rules["slo:error_budget:ratio"]["expr"] == f"vector({float(1 - objective / 100)!r})"
    assert rules["slo:time_period:days"]["expr"] == f"vector({days})"


def test_the_chainsight_command_dispatches_to_slo(capsys: pytest.CaptureFixture[str]) -> None:
    from chainsight.tools.cli import main

    assert main(["slo", "validate", str(ROOT / "slos" / "model-latency.yaml")]) == 0
    assert "chainsight-model-latency: 99% over 30d" in capsys.readouterr().out


def test_slo_without_pyyaml_names_the_extra_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from chainsight.tools._shell import install_command
    from chainsight.tools.cli import main

    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` raises ImportError
    monkeypatch.delitem(sys.modules, "chainsight.tools.slo")  # the CLI imports it afresh
    assert main(["slo", "validate", str(ROOT / "slos" / "model-latency.yaml")]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "chainsight: error: the `chainsight slo` command needs PyYAML (the chainsight[tools] "
        f"extra), not installed here; install it with: {install_command('tools')}\n"
    )
    assert captured.out == ""
