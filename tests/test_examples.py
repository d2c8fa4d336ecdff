"""The examples are documentation: they must run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_quickstart_runs_and_shows_the_provider_fault() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "fault=provider" in result.stdout
    assert 'chainsight_requests_total{fault="provider"' in result.stdout


def test_classification_example_shows_the_rule_at_work() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "classification.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(
        "without the rule" in ln and "via_gateway" in ln and "fault=app" in ln for ln in lines
    )
    for name in ("wrapped", "via_gateway"):
        assert any(
            "with the rule " in ln and name in ln and "fault=provider error.type=connection" in ln
            for ln in lines
        ), result.stdout
