"""Triage: the pure parts (durations, quantiles) with hypothesis, the span-file source on
hand-written span files, and the command line's exit codes and messages."""

from __future__ import annotations

import argparse
import json
import math
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainsight import _names as n
from chainsight.tools import triage
from chainsight.tools.cli import main

# --- durations ----------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=10**9))
def test_format_then_parse_duration_round_trips(millis: int) -> None:
    seconds = millis / 1000
    assert triage.parse_duration(triage.format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("1h30m", 5400), ("90s", 90), ("250ms", 0.25), ("1.5h", 5400), ("42", 42)],
)
def test_parse_duration_reads_promql_durations(text: str, seconds: float) -> None:
    assert triage.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "10x", "m10", "-5s", "0s", "5s3"])
def test_parse_duration_rejects_nonsense_with_the_value(text: str) -> None:
    if text == "10":
        assert triage.parse_duration(text) == 10  # a bare number is seconds
        return
    with pytest.raises(triage.TriageError, match=f"duration {text!r}"):
        triage.parse_duration(text)


# --- quantiles ------------------------------------------------------------------------------

BOUNDS = n.LATENCY_BUCKETS


def _histogram(samples: Sequence[float]) -> list[tuple[float, float]]:
    buckets = [(b, float(sum(1 for s in samples if s <= b))) for b in BOUNDS]
    return [*buckets, (math.inf, float(len(samples)))]


samples_st = st.lists(st.floats(min_value=0.0, max_value=60.0), min_size=1, max_size=200)


@given(samples_st, st.floats(min_value=0.01, max_value=1.0))
def test_bucket_quantile_lies_in_the_bucket_of_the_exact_quantile(
    samples: list[float], q: float
) -> None:
    exact = triage.SampleLatency(list(samples)).quantile(q)
    estimate = triage.bucket_quantile(q, _histogram(samples))
    assert exact is not None
    assert estimate is not None
    upper = next((b for b in BOUNDS if exact <= b), BOUNDS[-1])
    lower = max((b for b in BOUNDS if b < upper), default=0.0)
    assert lower - 1e-9 <= estimate <= upper + 1e-9


@given(samples_st, st.floats(0.01, 1.0), st.floats(0.01, 1.0))
def test_bucket_quantile_is_monotonic_in_q(samples: list[float], q1: float, q2: float) -> None:
    low, high = sorted((q1, q2))
    hist = _histogram(samples)
    a, b = triage.bucket_quantile(low, hist), triage.bucket_quantile(high, hist)
    assert a is not None
    assert b is not None
    assert a <= b + 1e-12


def test_bucket_quantile_of_an_empty_histogram_is_none() -> None:
    assert triage.bucket_quantile(0.95, []) is None
    assert triage.bucket_quantile(0.95, [(1.0, 0.0), (math.inf, 0.0)]) is None


def test_bucket_quantile_interpolates_like_histogram_quantile() -> None:
    # 10 observations in (0.5, 1.0]: p50 is the middle of that bucket, as Prometheus says.
    assert triage.bucket_quantile(0.5, [(0.5, 0.0), (1.0, 10.0), (math.inf, 10.0)]) == 0.75
    # A rank in +Inf gives the highest finite bound.
    assert triage.bucket_quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0


@given(samples_st, st.floats(0.0, 100.0), st.floats(0.0, 100.0))
def test_fraction_above_is_a_decreasing_fraction(
    samples: list[float], x1: float, x2: float
) -> None:
    low, high = sorted((x1, x2))
    for dist in (triage.SampleLatency(list(samples)), _bucketed(samples)):
        a, b = dist.fraction_above(low), dist.fraction_above(high)
        assert 0.0 <= b <= a + 1e-12 <= 1.0 + 1e-12


def _bucketed(samples: Sequence[float]) -> triage.BucketLatency:
    dist = triage.BucketLatency()
    for bound, count in _histogram(samples):
        dist.add(bound, count)
    return dist


def test_sample_quantile_is_the_nearest_rank() -> None:
    dist = triage.SampleLatency([5.0, 1.0, 4.0, 2.0, 3.0])
    assert dist.quantile(0.95) == 5.0
    assert dist.quantile(0.5) == 3.0
    assert dist.fraction_above(3.0) == 0.4
    assert triage.SampleLatency().quantile(0.5) is None


# --- span files -------------------------------------------------------------------------------


class SpanFile:
    """Writes chainsight.span/1 lines: one request per call, with its stages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self.traces = 0

    def request(
        self,
        at: float,
        *,
        model_seconds: float = 0.5,
        fail: tuple[str, str, str] | None = None,
        fallback: bool = False,
    ) -> None:
        """One request ending at ``at``; ``fail`` = (stage, fault, error type)."""
        self.traces += 1
        trace = f"{self.traces:032x}"
        stages: list[dict[str, Any]] = [
            {
                n.CS_STAGE_KIND: "retrieval",
                n.CS_STAGE_NAME: "search_kb",
                n.DB_SYSTEM_NAME: "memvec",
                n.DB_COLLECTION_NAME: "kb",
            },
            {n.CS_STAGE_KIND: "prompt", n.CS_STAGE_NAME: "build_prompt"},
            {
                n.CS_STAGE_KIND: "model",
                n.CS_STAGE_NAME: "generate_answer",
                n.GEN_AI_PROVIDER_NAME: "simai",
                n.GEN_AI_REQUEST_MODEL: "sim-gpt-4o",
            },
            {n.CS_STAGE_KIND: "validation", n.CS_STAGE_NAME: "validate_answer"},
        ]
        root: dict[str, Any] = {
            n.CS_STAGE_KIND: "request",
            n.CS_REQUEST_NAME: "answer_ticket",
            n.CS_OUTCOME: "ok",
        }
        for attrs in stages:
            attrs[n.CS_OUTCOME] = "ok"
            duration = model_seconds if attrs[n.CS_STAGE_KIND] == "model" else 0.01
            if fallback and attrs[n.CS_STAGE_NAME] == "search_kb":
                attrs.update(
                    {
                        n.CS_OUTCOME: "degraded",
                        n.CS_FAULT: "vector_store",
                        n.ERROR_TYPE: "connection",
                        n.CS_ERROR_ORIGIN: "search_kb",
                        n.CS_FALLBACK_TO: "bm25",
                    }
                )
                root[n.CS_OUTCOME] = "degraded"
            if fail and attrs[n.CS_STAGE_NAME] == fail[0]:
                origin = {n.CS_FAULT: fail[1], n.ERROR_TYPE: fail[2], n.CS_ERROR_ORIGIN: fail[0]}
                attrs.update({n.CS_OUTCOME: "error", **origin})
                root.update({n.CS_OUTCOME: "error", **origin})
            self._span(trace, attrs, at - 0.01, duration)
            if fail and attrs[n.CS_STAGE_NAME] == fail[0]:
                break
        self._span(trace, root, at, model_seconds + 0.05)

    def _span(self, trace: str, attrs: dict[str, Any], end: float, duration: float) -> None:
        record = {
            "schema": "chainsight.span/1",
            "name": "x",
            "trace_id": trace,
            "span_id": f"{len(self.lines) + 1:016x}",
            "parent_span_id": None,
            "kind": "INTERNAL",
            "start_time_unix_nano": int((end - duration) * 1e9),
            "end_time_unix_nano": int(end * 1e9),
            "duration_seconds": duration,
            "status": {"code": "UNSET", "description": None},
            "attributes": attrs,
            "events": [],
            "resource": {"service.name": "t"},
        }
        self.lines.append(json.dumps(record))

    def write(self) -> str:
        self.path.write_text("\n".join(self.lines) + "\n")
        return str(self.path)


T0 = 1_700_000_000.0


def _traffic(
    spans: SpanFile,
    *,
    seconds: int = 60,
    per_second: int = 5,
    fault_from: int = 40,
    fault: dict[str, Any] | None = None,
    every: int = 2,
) -> None:
    """Healthy traffic, then from ``fault_from`` every ``every``-th request gets ``fault``."""
    count = 0
    for second in range(seconds):
        for i in range(per_second):
            count += 1
            at = T0 + second + i / per_second
            faulty = fault is not None and second >= fault_from and count % every == 0
            spans.request(at, **(fault if faulty and fault else {}))


def test_healthy_span_file_is_healthy(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path / "s.jsonl")
    _traffic(spans)
    report = triage.from_spans(spans.write(), window=20)
    assert report.healthy
    assert report.to_dict()["verdict"]["domain"] == "healthy"
    assert report.requests == 100
    assert report.requests_baseline == 200


@pytest.mark.parametrize(
    ("fault", "domain", "component", "error_type"),
    [
        ({"fail": ("generate_answer", "provider", "timeout")}, "provider", "simai/sim-gpt-4o",
         "timeout"),
        ({"fail": ("generate_answer", "app", "bad_request")}, "app", "generate_answer",
         "bad_request"),
        ({"fail": ("build_prompt", "app", "KeyError")}, "app", "build_prompt", "KeyError"),
        ({"fail": ("validate_answer", "model", "validation_failed")}, "model", "validate_answer",
         "validation_failed"),
        ({"fallback": True}, "vector_store", "memvec/kb", "connection"),
    ],
)  # fmt: skip
def test_span_file_fault_is_named_with_component_and_error_type(
    tmp_path: Path, fault: dict[str, Any], domain: str, component: str, error_type: str
) -> None:
    spans = SpanFile(tmp_path / "s.jsonl")
    _traffic(spans, fault=fault)
    report = triage.from_spans(spans.write(), window=20)
    verdict = report.to_dict()["verdict"]
    assert (verdict["domain"], verdict["component"]) == (domain, component)
    assert len(verdict["faults"]) == 1
    figures = report.domains[domain]
    assert figures.error_ratio == pytest.approx(0.5)
    assert figures.error_ratio_baseline == 0.0
    assert figures.top_error_types[0][0] == error_type
    assert error_type in verdict["evidence"]


def test_slow_provider_without_errors_is_a_provider_fault(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path / "s.jsonl")
    _traffic(spans, fault={"model_seconds": 3.0})
    report = triage.from_spans(spans.write(), window=20)
    verdict = report.to_dict()["verdict"]
    assert (verdict["domain"], verdict["component"]) == ("provider", "simai/sim-gpt-4o")
    figures = report.domains["provider"]
    assert figures.signals == ["latency"]
    assert figures.error_ratio == 0.0
    assert figures.p95_seconds == 3.0
    assert figures.p95_seconds_baseline == 0.5
    assert "p95 latency 3.00s vs 500ms" in verdict["evidence"]


def test_slight_slowdown_is_not_a_fault(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path / "s.jsonl")
    _traffic(spans, fault={"model_seconds": 0.8})  # 1.6x: under the 2x threshold
    assert triage.from_spans(spans.write(), window=20).healthy


def test_two_faults_are_both_reported_biggest_first(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path / "s.jsonl")
    count = 0
    for second in range(60):
        for i in range(10):
            count += 1
            kwargs: dict[str, Any] = {}
            if second >= 40 and count % 2 == 0:
                kwargs["fail"] = ("generate_answer", "provider", "rate_limited")
            if second >= 40 and count % 5 == 1:
                kwargs["fallback"] = True
            spans.request(T0 + second + i / 10, **kwargs)
    report = triage.from_spans(spans.write(), window=20)
    faults = [(f.domain, f.component) for f in report.faults]
    assert faults == [("provider", "simai/sim-gpt-4o"), ("vector_store", "memvec/kb")]
    line = report.verdict_line()
    assert line.index("provider in simai") < line.index("also vector_store in memvec/kb")


def test_rare_errors_in_line_with_the_baseline_are_healthy(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path / "s.jsonl")
    # One provider error in every 100 requests, before and during the window.
    count = 0
    for second in range(60):
        for i in range(10):
            count += 1
            fail = ("generate_answer", "provider", "server_error") if count % 100 == 0 else None
            spans.request(T0 + second + i / 10, fail=fail)
    report = triage.from_spans(spans.write(), window=20)
    assert report.healthy
    assert report.domains["provider"].error_ratio == pytest.approx(0.01)


def test_high_error_ratio_is_a_fault_even_when_the_baseline_was_as_bad(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path / "s.jsonl")
    _traffic(spans, fault_from=0, fault={"fail": ("generate_answer", "provider", "timeout")})
    report = triage.from_spans(spans.write(), window=20)
    assert [f.domain for f in report.faults] == ["provider"]


def test_default_window_is_a_quarter_of_the_file(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path / "s.jsonl")
    _traffic(spans, seconds=40)
    report = triage.from_spans(spans.write())
    assert report.window_seconds == pytest.approx(10.0, abs=0.7)
    assert report.baseline_seconds is None


def test_baseline_and_at_select_the_periods(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path / "s.jsonl")
    _traffic(spans, fault={"fail": ("generate_answer", "provider", "timeout")})
    path = spans.write()
    # Looking back at 30 s, before the fault began: healthy.
    assert triage.from_spans(path, window=10, baseline=10, at=T0 + 30.5).healthy
    report = triage.from_spans(path, window=10, baseline=10)
    assert report.requests_baseline == 50
    assert not report.healthy


def test_malformed_lines_are_skipped(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path / "s.jsonl")
    _traffic(spans)
    path = Path(spans.write())
    with path.open("a") as handle:
        handle.write('{"schema": "chainsight.span/1", "trace_id": \n')  # cut-off line
        handle.write("not json\n\n[1, 2]\n")
    assert triage.from_spans(str(path), window=20).healthy


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(triage.TriageError, match="does not exist"):
        triage.from_spans(str(missing))


def test_file_without_requests_says_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"trace_id": "1", "start_time_unix_nano": 1,
                                "end_time_unix_nano": 2, "attributes": {}}) + "\n")  # fmt: skip
    with pytest.raises(triage.TriageError, match=r"no request spans .* among 1 spans"):
        triage.from_spans(str(path))


def test_window_with_no_finished_request_is_an_error(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path / "s.jsonl")
    _traffic(spans, seconds=10)
    with pytest.raises(triage.TriageError, match="no request that finished"):
        triage.from_spans(spans.write(), window=5, at=T0 - 100)


# --- the command line -------------------------------------------------------------------------


def test_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    healthy = SpanFile(tmp_path / "ok.jsonl")
    _traffic(healthy)
    assert main(["triage", "--spans", healthy.write(), "--window", "20s", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["verdict"]["domain"] == "healthy"
    assert payload["verdict"]["component"] is None
    assert set(payload["domains"]) == set(n.FAULTS)
    provider = payload["domains"]["provider"]
    assert set(provider) >= {"error_ratio", "top_error_types", "p95_seconds", "fallback_rate"}

    failing = SpanFile(tmp_path / "bad.jsonl")
    _traffic(failing, fault={"fail": ("generate_answer", "provider", "rate_limited")})
    assert main(["triage", "--spans", failing.write(), "--window", "20s"]) == 1
    text = capsys.readouterr().out
    assert text.splitlines()[-1].startswith("verdict: provider in simai/sim-gpt-4o: 50.0% of")
    assert "rate_limited" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--spans", "/no/such/file.jsonl"], "does not exist"),
        (["--spans", "x", "--window", "ten"], "duration 'ten'"),
        (["--spans", "x", "--at", "yesterday"], "--at 'yesterday'"),
        (["--prometheus", "localhost:9090"], "not an HTTP URL"),
        (["--prometheus", "http://127.0.0.1:9", "--timeout", "0"], "--timeout"),
    ],
)
def test_cli_usage_errors_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["triage", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("chainsight triage: error:")


def test_cli_needs_exactly_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["triage"])
    assert exit_info.value.code == 2
    assert "--prometheus" in capsys.readouterr().err


def test_unreachable_prometheus_names_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    assert main(["triage", "--prometheus", url, "--timeout", "2"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach Prometheus at {url}" in err


def test_triage_function_reads_parsed_arguments(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path / "s.jsonl")
    _traffic(spans, fault={"fail": ("build_prompt", "app", "KeyError")})
    parser = argparse.ArgumentParser()
    triage.add_arguments(parser)
    args = parser.parse_args(["--spans", spans.write(), "--window", "20s", "--baseline", "40s"])
    report = triage.triage(args)
    assert report.baseline_seconds == 40
    assert report.faults[0].component == "build_prompt"


def test_a_few_stalled_calls_are_not_a_latency_fault(tmp_path: Path) -> None:
    # One call in 12 stalls for 3 s (a GC pause, a busy CPU): p95 jumps, but few calls are slow.
    spans = SpanFile(tmp_path / "s.jsonl")
    _traffic(spans, fault={"model_seconds": 3.0}, every=12)
    report = triage.from_spans(spans.write(), window=20)
    figures = report.domains["provider"]
    assert (figures.p95_seconds, figures.p95_seconds_baseline) == (3.0, 0.5)
    assert report.healthy, report.verdict_line()
