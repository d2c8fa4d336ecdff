"""End to end, as an on-call lives the shipped alerts: real Prometheus, real Alertmanager, a webhook.

Prometheus (1 s scrape and evaluation) loads every rule file in ``grafana/alerts/`` and sends to
a real Alertmanager that routes everything to a webhook receiver in this test. The demo app
(``chainsight demo``) serves healthy traffic for ``HEALTHY`` seconds, then 30 % of provider
calls time out. Asserted: no notification at all during the healthy phase (nothing cries
wolf on a young Prometheus and a young app), then the SLO page arrives naming the failing
domain (``fault_domain="provider"``) and carrying the ``job`` its runbook's triage command
selects on.

Every rule runs as shipped except one setting: the page's ``for`` is generated with
``alerting.page_for: 20s`` (a parameter of the SLO generator) instead of 2m, which keeps the
run near two and a half minutes. Its ``min_events`` floor and windows are the shipped ones.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from chainsight.tools import slo
from tests.integration._alerting import (
    AlertingPrometheus,
    AlertmanagerServer,
    Notification,
    WebhookReceiver,
)
from tests.integration._servers import free_port, require_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(480)]

ROOT = Path(__file__).resolve().parents[2]
ALERTS_DIR = ROOT / "grafana" / "alerts"
AVAILABILITY_SPEC = ROOT / "slos" / "request-availability.yaml"

JOB = "support-bot"
PAGE = "ChainsightRequestAvailabilityBudgetBurnPage"
HEALTHY = 75  # seconds of healthy traffic before the fault
PAGE_WITHIN = 240  # generous bound for the page after the fault starts (expected ~1 min)
RPS = 20


@dataclass
class Run:
    """What the scenario produced, for the tests to judge."""

    launched: float
    fault_at: float
    notifications: list[Notification]
    page: Notification | None
    firing_before_fault: list[str]
    rule_groups: set[str]
    demo_stderr: str


def _rule_files(directory: Path) -> list[Path]:
    """Every shipped rule file, the availability SLO regenerated with a 20 s page ``for``."""
    directory.mkdir(parents=True)
    paths = []
    for path in sorted(ALERTS_DIR.glob("*.yaml")):
        target = directory / path.name
        shutil.copyfile(path, target)
        paths.append(target)
    data = yaml.safe_load(AVAILABILITY_SPEC.read_text(encoding="utf-8"))
    data["slos"][0].setdefault("alerting", {})["page_for"] = "20s"
    spec = slo.parse_spec(data, source=str(AVAILABILITY_SPEC))
    (directory / "slo-request-availability.yaml").write_text(
        slo.render_rules(spec, source="slos/request-availability.yaml"), encoding="utf-8"
    )
    return paths


def _expected_groups() -> set[str]:
    return {
        group["name"]
        for path in ALERTS_DIR.glob("*.yaml")
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    }


def _wait(check: object, timeout: float, interval: float = 0.5) -> bool:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


def _page(notifications: list[Notification]) -> Notification | None:
    for notification in notifications:
        if any(a["labels"].get("alertname") == PAGE for a in notification.alerts()):
            return notification
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    workdir = tmp_path_factory.mktemp("alerts-e2e")
    port = free_port()
    webhook = WebhookReceiver().start()
    alertmanager = AlertmanagerServer(webhook.url, workdir=workdir / "alertmanager").start()
    prometheus = AlertingPrometheus(
        [f"127.0.0.1:{port}"],
        workdir=workdir / "prometheus",
        job=JOB,
        rule_files=_rule_files(workdir / "rules"),
        alertmanager=f"127.0.0.1:{alertmanager.port}",
    ).start()
    demo: subprocess.Popen[str] | None = None
    try:
        groups = {g["name"] for g in prometheus.api("/api/v1/rules")["groups"]}
        assert _wait(lambda: prometheus.api("/api/v1/alertmanagers")["activeAlertmanagers"], 30), (
            "Prometheus never discovered the Alertmanager"
        )
        launched = time.time()
        cmd = [
            sys.executable, "-m", "chainsight", "demo",
            "--fault", "provider-timeout", "--fault-rate", "0.3",
            "--fault-start", str(HEALTHY), "--duration", str(HEALTHY + PAGE_WITHIN + 30),
            "--rps", str(RPS), "--metrics-port", str(port), "--seed", "17",
            "--spans", str(workdir / "spans.jsonl"), "--quiet",
        ]  # fmt: skip
        demo = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The demo's clock starts after its imports and configure(): the fault starts a little
        # after this, never before, so everything received until then came from healthy traffic.
        fault_at = launched + HEALTHY
        time.sleep(max(0.0, fault_at - time.time()))
        firing = [
            s["metric"]["alertname"]
            for s in prometheus.query('ALERTS{alertstate="firing"}')
            if "alertname" in s["metric"]
        ]
        _wait(lambda: _page(webhook.received()) is not None, PAGE_WITHIN, interval=1.0)
        notifications = webhook.received()
        stderr = ""
        if demo.poll() is not None and demo.stderr is not None:
            stderr = demo.stderr.read()
        yield Run(
            launched,
            fault_at,
            notifications,
            _page(notifications),
            firing,
            groups,
            stderr,
        )
    finally:
        if demo is not None and demo.poll() is None:
            demo.kill()
            demo.communicate()
        prometheus.stop()
        alertmanager.stop()
        webhook.stop()


def test_every_shipped_rule_file_is_loaded(run: Run) -> None:
    assert run.rule_groups == _expected_groups()


def test_nothing_notifies_during_the_healthy_phase(run: Run) -> None:
    early = [
        (round(n.received - run.launched, 1), [a["labels"] for a in n.alerts()])
        for n in run.notifications
        if n.received < run.fault_at
    ]
    assert early == [], f"notifications during healthy traffic: {early}"
    assert run.firing_before_fault == []


def test_the_page_arrives_naming_the_provider_and_the_job(run: Run) -> None:
    assert run.page is not None, (
        f"no page within {PAGE_WITHIN} s of the fault; notifications: "
        f"{[[a['labels'] for a in n.alerts()] for n in run.notifications]}; {run.demo_stderr}"
    )
    (alert,) = [a for a in run.page.alerts() if a["labels"]["alertname"] == PAGE]
    labels = alert["labels"]
    assert labels["fault_domain"] == "provider"
    assert labels["job"] == JOB
    assert labels["severity"] == "page"
    assert alert["status"] == "firing"
    assert "provider faults failed" in alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"].endswith(f"/{PAGE}.md")
    # After the fault started, and well inside the bound (20 s of `for` plus the windows).
    assert run.fault_at < run.page.received < run.fault_at + PAGE_WITHIN
    print(  # shown with -s: how long an on-call waits for the page
        f"page {run.page.received - run.fault_at:.0f} s after the fault; "
        f"{len(run.notifications)} notification(s) in all"
    )
