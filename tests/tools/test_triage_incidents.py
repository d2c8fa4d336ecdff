"""Triage on hand-written span files of the incidents an on-call meets: a long incident with
default arguments, a release to blame (after a change, or as a canary), retries that absorb
failures, a request-level fallback; the change-point search alone; the bucket-resolution note
and the ``--by release`` table."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest

from chainsight import _names as n
from chainsight.tools import triage
from chainsight.tools.cli import main
from chainsight.tools.triage_figures import BucketLatency
from chainsight.tools.triage_next import resolution_note
from chainsight.tools.triage_onset import binned_error_change, error_change, latency_change

T0 = 1_700_000_000.0


class Spans:
    """chainsight.span/1 lines of requests whose stages are children of the request span."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self.ids = 0

    def _id(self) -> str:
        self.ids += 1
        return f"{self.ids:016x}"

    def _span(self, trace: str, parent: str | None, attrs: dict[str, Any], end: float,
              seconds: float) -> str:  # fmt: skip
        span_id = self._id()
        self.lines.append(
            json.dumps(
                {
                    "schema": "chainsight.span/1",
                    "name": "x",
                    "trace_id": trace,
                    "span_id": span_id,
                    "parent_span_id": parent,
                    "start_time_unix_nano": int((end - seconds) * 1e9),
                    "end_time_unix_nano": int(end * 1e9),
                    "attributes": attrs,
                    "events": [],
                }
            )
        )
        return span_id

    def request(
        self,
        at: float,
        *,
        release: str = "answer@7",
        model_seconds: float = 0.5,
        provider_failures: int = 0,
        attempts: int = 1,
        invalid: bool = False,
        request_fallback: bool = False,
    ) -> None:
        """One request ending at ``at``: retrieval, then ``attempts`` model calls of which the
        first ``provider_failures`` fail with a 503, then validation."""
        trace = f"{self.ids + 1:032x}"
        root_id = f"{self.ids + 10**6:016x}"
        rel = {
            n.CS_RELEASE_ID: f"model=gpt-4o,prompt={release}",
            n.CS_RELEASE_PREFIX + "model": "gpt-4o",
            n.CS_RELEASE_PREFIX + "prompt": release,
        }
        ok = {n.CS_OUTCOME: "ok", **rel}
        self._span(trace, root_id, {n.CS_STAGE_KIND: "retrieval", n.CS_STAGE_NAME: "search_kb",
                                    n.DB_SYSTEM_NAME: "qdrant", **ok}, at - 0.9, 0.05)  # fmt: skip
        root: dict[str, Any] = {n.CS_STAGE_KIND: "request", n.CS_REQUEST_NAME: "answer_ticket",
                                n.CS_REQUEST_COST_USD: 0.002, **ok}  # fmt: skip
        failure = {n.CS_OUTCOME: "error", n.CS_FAULT: "provider", n.ERROR_TYPE: "server_error",
                   n.CS_ERROR_ORIGIN: "generate"}  # fmt: skip
        model = {n.CS_STAGE_KIND: "model", n.CS_STAGE_NAME: "generate",
                 n.GEN_AI_PROVIDER_NAME: "openai", n.GEN_AI_REQUEST_MODEL: "gpt-4o"}  # fmt: skip
        for attempt in range(attempts):
            failed = attempt < provider_failures
            attrs = {**model, **ok, **(failure if failed else {})}
            self._span(trace, root_id, attrs, at - 0.3 + attempt * 0.01, model_seconds)
        if provider_failures >= attempts:
            if request_fallback:
                root.update({**failure, n.CS_OUTCOME: "degraded", n.CS_FALLBACK_TO: "canned"})
            else:
                root.update(failure)
        else:
            check = {n.CS_STAGE_KIND: "validation", n.CS_STAGE_NAME: "validate_answer", **ok}
            if invalid:
                bad = {n.CS_OUTCOME: "error", n.CS_FAULT: "model",
                       n.ERROR_TYPE: "validation_failed", n.CS_ERROR_ORIGIN: "validate_answer"}  # fmt: skip
                check.update(bad)
                root.update(bad)
            self._span(trace, root_id, check, at - 0.01, 0.001)
        self.lines.append(
            json.dumps(
                {
                    "trace_id": trace,
                    "span_id": root_id,
                    "parent_span_id": None,
                    "start_time_unix_nano": int((at - 1) * 1e9),
                    "end_time_unix_nano": int(at * 1e9),
                    "attributes": root,
                }
            )
        )

    def write(self) -> str:
        self.path.write_text("\n".join(self.lines) + "\n")
        return str(self.path)


def _run(spans: Spans, seconds: int, per_second: int, each: Any) -> None:
    count = 0
    for second in range(seconds):
        for i in range(per_second):
            count += 1
            spans.request(T0 + second + i / per_second, **each(second, count))


# --- where the incident began -------------------------------------------------------------


def test_a_long_incident_is_found_with_default_arguments(tmp_path: Path) -> None:
    # 20 s healthy, then 40 s of a slow vector store: a quarter-of-the-file window (15 s) with
    # everything before as the baseline would hold the incident on both sides.
    spans = Spans(tmp_path / "s.jsonl")
    count = 0
    for second in range(60):
        for i in range(10):
            count += 1
            at = T0 + second + i / 10
            spans.request(at)
            if second >= 20:  # the search of this request was slow: rewrite its duration
                line = json.loads(spans.lines[-4])
                line["start_time_unix_nano"] = int((at - 0.9 - 0.4) * 1e9)
                spans.lines[-4] = json.dumps(line)
    report = triage.from_spans(spans.write())
    assert [f.domain for f in report.faults] == ["vector_store"], report.verdict_line()
    assert report.onset is not None
    assert abs(report.onset.at - (T0 + 20)) < 1
    assert report.window_seconds == pytest.approx(40, abs=1)
    # The first slow search ended 0.9 s before its request: the onset is between the two.
    assert re.search(r"; since 22:13:(39|40) UTC$", report.verdict_line())
    assert report.to_dict()["verdict"]["since"].startswith("2023-11-14T22:13:")


def test_window_still_overrides_the_onset(tmp_path: Path) -> None:
    spans = Spans(tmp_path / "s.jsonl")
    _run(spans, 60, 5, lambda s, c: {"provider_failures": int(s >= 20 and c % 2 == 0)})
    report = triage.from_spans(spans.write(), window=10)
    assert report.window_seconds == 10
    assert report.faults[0].domain == "provider"
    assert report.onset is not None  # still said: when it began


def test_healthy_file_has_no_onset_and_no_fault(tmp_path: Path) -> None:
    spans = Spans(tmp_path / "s.jsonl")
    rng = random.Random(3)
    _run(spans, 60, 5, lambda s, c: {"invalid": rng.random() < 0.004})
    report = triage.from_spans(spans.write())
    assert report.healthy, report.verdict_line()
    assert report.onset is None


@pytest.mark.parametrize("seed", range(20))
def test_change_point_search_finds_no_change_in_noise(seed: int) -> None:
    rng = random.Random(seed)
    times = [float(i) for i in range(2000)]
    assert error_change(times, [rng.random() < 0.01 for _ in times]) is None
    assert latency_change(times, [rng.lognormvariate(-1, 0.4) for _ in times]) is None


def test_change_point_search_finds_the_change() -> None:
    rng = random.Random(1)
    times = [float(i) for i in range(900)]
    bad = [rng.random() < (0.08 if i >= 600 else 0.0) for i in range(900)]
    found = error_change(times, bad)
    assert found is not None
    assert 560 <= found[0] <= 640
    slow = [rng.uniform(1.0, 1.4) * (2.4 if i >= 600 else 1) for i in range(900)]
    found = latency_change(times, slow)
    assert found is not None
    assert 590 <= found[0] <= 610


# --- releases ------------------------------------------------------------------------------


def test_release_change_that_fails_validation_is_named(tmp_path: Path) -> None:
    spans = Spans(tmp_path / "s.jsonl")
    _run(spans, 60, 10, lambda s, c: {
        "release": "answer@8" if s >= 40 else "answer@7",
        "invalid": c % 4 == 0 if s >= 40 else c % 250 == 0,
    })  # fmt: skip
    report = triage.from_spans(spans.write())
    fault = report.faults[0]
    assert fault.domain == "model"
    assert fault.release is not None
    assert (fault.release.name, fault.release.previous) == ("answer@8 (prompt)", "answer@7")
    assert not fault.release.canary
    line = report.verdict_line()
    assert re.match(
        r"verdict: model in answer@8 \(prompt\): validation failures 2[45]\.\d% vs 0\.[0-4]% on "
        r"answer@7 - consider rolling back; 2[45]\.\d% of requests failed for users",
        line,
    ), line
    assert fault.next is not None
    assert fault.next.rollback == "roll back answer@8 (prompt) to answer@7, then triage again"
    assert fault.next.runbook == "docs/runbooks/ChainsightValidationFailureSpike.md"


def test_a_failing_canary_is_named(tmp_path: Path) -> None:
    spans = Spans(tmp_path / "s.jsonl")
    _run(spans, 60, 10, lambda s, c: {
        "release": "answer@8" if s >= 40 and c % 2 else "answer@7",
        "invalid": s >= 40 and c % 2 == 1 and c % 8 == 1,
    })  # fmt: skip
    report = triage.from_spans(spans.write())
    release = report.faults[0].release
    assert release is not None
    assert release.canary
    assert release.name == "answer@8 (prompt)"
    assert "(canary)" in report.verdict_line()


def test_an_outage_across_releases_names_no_release(tmp_path: Path) -> None:
    spans = Spans(tmp_path / "s.jsonl")
    _run(spans, 60, 10, lambda s, c: {
        "release": "answer@8" if s >= 40 and c % 2 else "answer@7",
        "provider_failures": int(s >= 40 and c % 3 == 0),
    })  # fmt: skip
    report = triage.from_spans(spans.write())
    assert report.faults[0].domain == "provider"
    assert report.faults[0].release is None


def test_by_release_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spans = Spans(tmp_path / "s.jsonl")
    _run(spans, 60, 10, lambda s, c: {
        "release": "answer@8" if s >= 40 else "answer@7",
        "invalid": c % 4 == 0 if s >= 40 else False,
    })  # fmt: skip
    assert main(["triage", "--spans", spans.write(), "--by", "release"]) == 1
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("release "))
    assert "provider" in header
    assert "USD/req" in header
    assert "validation" in header
    new = next(line for line in lines if line.startswith("model=gpt-4o,prompt=answer@8"))
    assert " now " in new
    assert re.search(r" 2[45]\.\d%$", new), new
    assert "0.00200" in new  # cost per request


def test_by_release_table_tells_long_ids_apart_by_their_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Real release ids are long and a canary differs only in its last part.
    prompt = "answer-the-support-ticket-from-the-knowledge-base"
    spans = Spans(tmp_path / "s.jsonl")
    _run(spans, 60, 10, lambda s, c: {
        "release": f"{prompt}@8" if s >= 40 else f"{prompt}@7",
        "invalid": c % 4 == 0 if s >= 40 else False,
    })  # fmt: skip
    main(["triage", "--spans", spans.write(), "--by", "release"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("model=gpt-4o,prompt=")]
    ids = {row.split()[0] for row in rows}
    assert any(i.endswith(f"{prompt}@8") for i in ids), rows
    assert any(i.endswith(f"{prompt}@7") for i in ids), rows


# --- what users saw ----------------------------------------------------------------------


def test_retries_that_recover_are_absorbed_not_user_failures(tmp_path: Path) -> None:
    # From second 40: every 10th request fails twice (the user sees it), every 10th + 5 fails
    # once and its retry succeeds (absorbed).
    spans = Spans(tmp_path / "s.jsonl")

    def plan(second: int, count: int) -> dict[str, Any]:
        if second < 40 or count % 5:
            return {}
        fails = 2 if count % 10 == 0 else 1
        return {"provider_failures": fails, "attempts": 2}

    _run(spans, 60, 10, plan)
    report = triage.from_spans(spans.write())
    provider = report.domains["provider"]
    assert report.impact.failed == pytest.approx(0.10, abs=0.01)
    assert provider.impact.absorbed == pytest.approx(0.10, abs=0.01)
    assert provider.error_ratio == pytest.approx(0.20, abs=0.01)
    assert provider.retries == 40  # every request with a failure tried twice
    line = report.verdict_line()
    assert re.search(r": 10\.\d% of requests failed for users", line), line
    assert re.search(r"absorbed it in 10\.\d% more \(20 stage failures, 40 retried", line), line


def test_request_level_fallback_carries_the_providers_fault(tmp_path: Path) -> None:
    spans = Spans(tmp_path / "s.jsonl")
    _run(spans, 60, 10, lambda s, c: {
        "provider_failures": int(s >= 40 and c % 3 == 0),
        "request_fallback": True,
    })  # fmt: skip
    report = triage.from_spans(spans.write())
    assert [f.domain for f in report.faults] == ["provider"], report.verdict_line()
    provider = report.domains["provider"]
    assert provider.fallback_stage == "answer_ticket"
    assert provider.stage == "generate"
    assert report.domains["app"].fallback_rate == 0.0
    assert report.impact.degraded == pytest.approx(1 / 3, abs=0.02)
    assert "at stage generate, fallback at answer_ticket" in report.verdict_line()


# --- Prometheus's resolution -------------------------------------------------------------


def _histogram(bounds: list[float], samples: list[float]) -> BucketLatency:
    hist = BucketLatency()
    for bound in [*bounds, math.inf]:
        hist.add(bound, float(sum(1 for s in samples if s <= bound)))
    return hist


def test_coarse_buckets_are_named_when_p95_rose_without_a_signal() -> None:
    doubling = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    rng = random.Random(2)
    before = [rng.uniform(1.0, 1.8) for _ in range(500)]
    after = [s * 2.4 for s in before]
    note = resolution_note(
        "provider", _histogram(doubling, after), _histogram(doubling, before), doubling
    )
    assert note is not None
    assert note.startswith("provider: p95 rose from")
    assert "1.00s to 2.00s" in note
    assert "cannot be told from Prometheus" in note
    fine = [1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0]
    assert (
        resolution_note("provider", _histogram(fine, after), _histogram(fine, before), fine) is None
    )


def test_binned_change_point_search_for_prometheus_counts() -> None:
    ends = [float(t) for t in range(0, 120, 4)]
    totals = [32.0] * len(ends)
    bad = [0.3 if t < 80 else 3.0 for t in ends]  # 1 % before second 80, then about 9 %
    found = binned_error_change(ends, bad, totals)
    assert found is not None
    assert found[0] == 76.0  # the end of the last bin before the change
    assert binned_error_change(ends, [0.3] * len(ends), totals) is None
    assert binned_error_change(ends[:1], bad[:1], totals[:1]) is None
