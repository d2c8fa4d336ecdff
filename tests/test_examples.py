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


def test_tool_loop_adds_up_two_calls_and_prices_the_one_hour_cache() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tool_loop.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # 2,500 + 2,600 input, 40 + 260 output; 2,000 one-hour writes at $6, not $3.75.
    assert "gen_ai.usage.input_tokens = 5100" in result.stdout
    assert "gen_ai.usage.output_tokens = 300" in result.stdout
    assert "chainsight.usage.cache_creation_1h.input_tokens = 2000" in result.stdout
    assert "chainsight.cost.usd = 0.02040" in result.stdout


def test_the_integrations_example_records_every_sdk_call_as_a_stage() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", str(ROOT / "examples" / "rag_integrations.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "answer: Refunds take 5 business days." in result.stdout
    for stage in ("openai.embeddings", "qdrant.query_points", "openai.chat", "answer_ticket"):
        assert f"  {stage}" in result.stdout
    assert "gen_ai.response.time_to_first_chunk" in result.stdout
    assert 'chainsight_tokens_total{feature="support"' in result.stdout


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


def test_retries_and_fallbacks_example_tells_users_from_absorbed_failures() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "retries_and_fallbacks.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    verdict = result.stdout.strip().splitlines()[-1]
    assert verdict.startswith("verdict: provider in openai/gpt-4o: 0.0% of requests failed for"), (
        verdict
    )
    assert "were served by a fallback" in verdict
    assert "fallback at answer_ticket" in verdict
    assert "retries or handlers absorbed it in" in verdict
    assert "; since " in verdict
