"""The benchmark suite runs end to end (``make bench-smoke``) and writes valid results.

No timing is asserted: the smoke mode exists so the suite cannot rot between full runs.
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.__main__ import default_output, main
from benchmarks._harness import BenchmarkError, Case, percentile, run_interleaved
from benchmarks._scenarios import concurrency, uniform_io
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent

MICRO_CASES = {
    "bare_call",
    "R",
    "R_parent",
    "manual_stage",
    "cs_sync",
    "cs_sync_parent",
    "cs_context",
    "cs_async",
    "cs_async_parent",
    "bare_async",
    "cs_generator",
    "cs_generator_parent",
    "bare_generator",
    "cs_disabled",
    "cs_sampled_out",
    "cs_model_usage",
    "cs_otlp_metrics",
    "openai_call",
    "cs_openai_by_hand",
    "cs_openai_integration",
    "cs_openai_stub_by_hand",
    "cs_openai_stub_integration",
    # The request-level cases (issue 18): a request alone, the six-stage request and its twins.
    "cs_request",
    "R_chain6",
    "manual_chain6",
    "cs_chain6",
    "R2",
}


@pytest.mark.slow
def test_smoke_mode_runs_every_benchmark_and_writes_results(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--output", str(output)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "targets (smoke run: not judged)" in done.stdout

    results = json.loads(output.read_text(encoding="utf-8"))
    assert results["schema"] == "chainsight.bench/1"
    assert results["mode"] == "smoke"
    assert results["targets"] == []  # smoke mode judges no timing
    assert results["environment"]["versions"]["opentelemetry-sdk"] != "not installed"

    assert set(results["micro"]) == MICRO_CASES
    for name, row in results["micro"].items():
        assert row["rounds"] == 1, name
        assert row["ns_per_call"] > 0, name
        assert math.isfinite(row["ratio_to_R"]), name
    assert results["micro"]["R"]["ratio_to_R"] == 1.0

    assert set(results["concurrency"]) == {"ai_chain", "io_1ms", "io_20ms", "io_100ms"}
    assert results["concurrency"]["ai_chain"]["io_per_stage_ms"]["model"] > 0
    for row in results["concurrency"].values():
        assert row["with_rps"] > 0
        assert row["without_rps"] > 0
        assert row["raw_otel_rps"] > 0

    imports = results["import_cost"]
    assert set(imports) >= {"bare", "dependencies", "chainsight", "chainsight_otlp"}
    assert imports["chainsight_otlp"]["rss_mib"] > 0
    assert imports["chainsight"]["rss_mib"] > 0

    # Export CPU per span: both encoders, every batch size, every span decoded by the receiver.
    export = results["export_cpu"]
    assert export["spans_received"] == export["spans_sent"] > 0
    for size in (64, 256, 512):
        row = export[f"batch_{size}"]
        assert row["median_sdk_us"] > 0, size
        assert row["median_chainsight_us"] > 0, size
        assert math.isfinite(row["median_ratio"]), size

    phases = results["exporter_outage"]["phases"]
    assert set(phases) == {"off", "dropping", "healthy", "down", "dropping_2", "slow", "healthy_2"}
    assert results["exporter_outage"]["p99_healthy_ms"] > 0
    for name, phase in phases.items():
        assert phase["requests"] > 0, name
        assert "latencies_ms" not in phase, name  # pooled, not stored per phase
    # The healthy baseline is a real receiver in another process that decoded every span.
    for name in ("healthy", "healthy_2"):
        assert phases[name]["spans_received"] == phases[name]["spans_produced"] > 0, name
        assert phases[name]["spans_dropped_or_failed"] == 0, name
    # With the backend unreachable or too slow, lost spans are counted, not silent.
    for name in ("down", "slow"):
        assert phases[name]["spans_dropped_or_failed"] > 0, name
        assert isinstance(phases[name]["shutdown_finished"], bool), name
    assert phases["slow"]["receiver_requests"] >= 1


def test_smoke_output_never_replaces_the_full_results() -> None:
    # A CI smoke run must not overwrite the measured results a full run wrote.
    assert default_output(smoke=False).name == "results.json"
    assert default_output(smoke=True).name == "results-smoke.json"
    assert default_output(smoke=True).parent == ROOT / "benchmarks"


def test_too_few_rounds_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rounds", "2"]) == 2
    assert "--rounds=2" in capsys.readouterr().err


def test_a_window_too_short_to_hold_a_request_stretches_until_it_holds_some() -> None:
    # 6 ms per request and a window of a nanosecond: only the stretch can fill it.
    found = concurrency(
        requests=2,
        rounds=1,
        io=uniform_io(0.001),
        window_s=1e-9,
        warm_up=False,
        min_ramp_s=0.0,
        min_window_requests=3,
    )
    for key in ("without_rps", "with_rps", "raw_otel_rps"):
        assert found[key] > 0, key
        assert math.isfinite(found[key]), key
    assert math.isfinite(found["ratio"])


def test_an_empty_fixed_window_is_a_clear_error_not_a_division_by_zero() -> None:
    with pytest.raises(BenchmarkError, match="completed no request in a 1e-09 s window") as info:
        concurrency(
            requests=2,
            rounds=1,
            io=uniform_io(0.001),
            window_s=1e-9,
            warm_up=False,
            min_ramp_s=0.0,
            min_window_requests=0,
        )
    assert "longer window_s" in str(info.value)


def test_interleaved_runs_need_the_reference_among_the_cases() -> None:
    case = Case("a", "a case", lambda loops: None)
    with pytest.raises(ValueError, match="reference case 'R'"):
        run_interleaved([case], "R", rounds=3, target_ns=1000)


def test_interleaved_runs_time_every_case_every_round() -> None:
    calls: dict[str, int] = {"R": 0, "b": 0}

    def counter(name: str) -> Case:
        def run(loops: int) -> None:
            calls[name] += loops

        return Case(name, name, run)

    # The harness collects garbage before each of its ~40 batches; with the heap a whole test
    # session has built, that took seconds. Frozen objects are not scanned.
    gc.freeze()
    try:
        results = run_interleaved([counter("R"), counter("b")], "R", rounds=5, target_ns=100_000)
    finally:
        gc.unfreeze()
    assert all(len(r.ns_per_call) == 5 for r in results.values())
    assert results["R"].ratios == [1.0] * 5
    assert calls["R"] > 0
    assert calls["b"] > 0


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(values=st.lists(finite, min_size=1, max_size=50), pct=st.floats(0, 100))
def test_percentile_lies_within_the_values(values: list[float], pct: float) -> None:
    found = percentile(values, pct)
    assert min(values) <= found <= max(values)


@given(values=st.lists(finite, min_size=1, max_size=50))
def test_percentile_ends_and_middle(values: list[float]) -> None:
    assert percentile(values, 0) == min(values)
    assert percentile(values, 100) == max(values)
    assert math.isclose(percentile(values, 50), statistics.median(values), abs_tol=1e-3)


@given(
    values=st.lists(finite, min_size=1, max_size=50),
    low=st.floats(0, 100),
    high=st.floats(0, 100),
)
def test_percentile_is_monotonic(values: list[float], low: float, high: float) -> None:
    low, high = sorted((low, high))
    assert percentile(values, low) <= percentile(values, high) + 1e-6


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="pct=101"):
        percentile([1.0], 101)
