"""The demo: its simulated parts behave like the real things, its options are checked, and a
compressed run (a faster clock) produces spans from which triage names the injected fault.

The full matrix of faults, with a real Prometheus, is in
``tests/integration/test_demo_triage.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import socket
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk
from qdrant_client.http.exceptions import ResponseHandlingException

from chainsight.errors import ConfigurationError
from chainsight.tools import demo, demo_sim
from chainsight.tools import demo_app as app
from chainsight.tools.cli import main

# --- the simulated application ------------------------------------------------------------------


def test_bm25_ranks_the_matching_article_first() -> None:
    index = app.BM25Index(app.KNOWLEDGE_BASE)
    hits = index.search("how do I get a refund for an annual plan", 3)
    assert hits[0][0].title == "Refund policy"
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert index.search("zzz qqq", 3) == []


def test_vector_search_finds_the_article_in_embedded_qdrant_and_fails_like_a_down_qdrant() -> None:
    async def search(store: app.VectorStore) -> list[str]:
        found = await store.client().query_points("kb", query=app.embed("reset my password"))
        return [store.docs[int(p.id)].title for p in found.points]

    async def scenario() -> tuple[list[str], BaseException | None]:
        faults = app.FaultPlan({"vector-store-down": 1.0})
        store = app.VectorStore(app.KNOWLEDGE_BASE, faults, app.Clock(100.0))
        try:
            await store.load()
            titles = await search(store)
            faults.active = True
            try:
                await search(store)
            except Exception as exc:
                return titles, exc
            return titles, None
        finally:
            await store.close()

    titles, error = asyncio.run(scenario())
    assert titles[0] == "Reset your password"
    # qdrant-client's own exception for a server it cannot reach, around httpx's ConnectError.
    assert isinstance(error, ResponseHandlingException)
    assert isinstance(error.source, httpx.ConnectError)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"answer": "Yes.", "citations": ["kb-01"]', "not JSON"),
        ('{"reply": "Yes."}', "missing field 'answer'"),
        ("Sure! Yes.", "not JSON"),
        ('{"answer": "Yes.", "citations": ["kb-99"]}', "kb-99"),
        ('["Yes."]', "expected a JSON object"),
    ],
)
def test_parse_answer_rejects_bad_output_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(app.InvalidAnswer, match=reason):
        app.parse_answer(text, ["kb-01"])


def test_parse_answer_accepts_a_good_answer() -> None:
    assert app.parse_answer('{"answer": "Yes.", "citations": ["kb-01"]}', ["kb-01"]) == (
        "Yes.",
        ("kb-01",),
    )


async def _call(
    faults: app.FaultPlan, temperature: float = 0.2, hold: float = 0.0
) -> list[ChatCompletionChunk]:
    """One streamed call of the real OpenAI SDK to the demo's provider (clock 100x)."""
    clock = app.Clock(100.0)
    provider = demo_sim.SimProvider(faults, clock)
    client = openai.AsyncOpenAI(
        api_key="sk-test",
        base_url=await provider.start(),
        max_retries=0,
        timeout=clock.client_timeout(),
        http_client=openai.DefaultAsyncHttpxClient(trust_env=False),
    )
    try:
        if hold:
            # Runs once the call has asked for its answer: the loop is held up long after the
            # first chunk was due.
            asyncio.get_running_loop().call_soon(time.sleep, hold)
        stream = await client.chat.completions.create(
            model=app.MODEL,
            messages=[{"role": "user", "content": "[kb-01] Reset your password: Open Settings."}],
            temperature=temperature,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            return [chunk async for chunk in stream]
    finally:
        await client.close()
        await provider.stop()


def test_the_provider_streams_openai_chunks_with_usage_last() -> None:
    chunks = asyncio.run(_call(app.FaultPlan(rng=random.Random(3))))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"answer": "Open Settings.", "citations": ["kb-01"]}
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert {c.model for c in chunks} == {app.MODEL}


def test_the_providers_faults_are_the_openai_sdks_own_exceptions() -> None:
    limited = app.FaultPlan({"provider-ratelimit": 1.0}, active=True)
    with pytest.raises(openai.RateLimitError) as info:
        asyncio.run(_call(limited))
    assert info.value.status_code == 429
    assert float(info.value.response.headers["retry-after"]) > 0
    with pytest.raises(openai.BadRequestError) as bad:
        asyncio.run(_call(app.FaultPlan(), temperature=2.5))
    assert bad.value.status_code == 400
    assert "temperature" in str(bad.value)
    with pytest.raises(openai.APITimeoutError):
        asyncio.run(_call(app.FaultPlan({"provider-timeout": 1.0}, active=True)))


def test_a_late_event_loop_never_turns_a_prompt_answer_into_a_timeout() -> None:
    # A busy machine: the loop runs 0.3 s late, eight times the simulated client timeout at
    # this clock (25 ms). The answer was due in time, so it is an answer: the client's real
    # timeout never drops below MIN_REAL_TIMEOUT.
    chunks = asyncio.run(_call(app.FaultPlan(rng=random.Random(3)), hold=0.3))
    assert chunks[-1].usage is not None


def test_tickets_sometimes_lack_the_plan_the_buggy_template_needs() -> None:
    rng = random.Random(7)
    tickets = [app.make_ticket(rng, i) for i in range(300)]
    without = sum("plan" not in t.customer for t in tickets)
    assert 50 < without < 150


# --- options ----------------------------------------------------------------------------------


def test_parse_faults_accepts_one_rate_or_one_per_fault() -> None:
    assert demo.parse_faults("none", "0.5") == {}
    assert demo.parse_faults("provider-slow", "0.3") == {"provider-slow": 0.3}
    assert demo.parse_faults("app-bug, provider-timeout", "0.2,0.6") == {
        "app-bug": 0.2,
        "provider-timeout": 0.6,
    }


@pytest.mark.parametrize(
    ("faults", "rates", "message"),
    [
        ("provider-down", "0.5", "'provider-down' is not a fault"),
        ("app-bug", "half", "not a number"),
        ("app-bug", "1.5", "not a fraction"),
        ("app-bug,provider-slow", "0.1,0.2,0.3", "3 rates for 2 faults"),
    ],
)
def test_parse_faults_rejects_bad_values(faults: str, rates: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        demo.parse_faults(faults, rates)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fault", "nope"], "'nope' is not a fault"),
        (["--duration", "0"], "--duration must be a positive number"),
        (["--fault-start", "50"], "--fault-start 50.0 must be within the run"),
        (["--time-scale", "-1"], "--time-scale must be positive"),
        (["--metrics-port", "70000"], "is not a TCP port"),
    ],
)
def test_demo_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *argv]) == 2
    assert message in capsys.readouterr().err


def test_default_scenario_is_healthy_then_a_provider_fault_within_a_minute() -> None:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args([])
    scenario = demo._scenario(args)
    assert scenario.faults == {"provider-timeout": 0.5}
    assert 0 < scenario.fault_start < scenario.duration
    # Traffic, plus the longest in-flight call (the client timeout) to drain, under 60 s.
    assert scenario.duration / scenario.time_scale + app.Clock().client_timeout() < 60
    assert scenario.metrics_port == demo.DEFAULT_METRICS_PORT
    assert scenario.spans == "demo-spans.jsonl"


# --- compressed runs --------------------------------------------------------------------------


def _run(tmp_path: Path, faults: dict[str, float], **kwargs: object) -> demo.triage.Report:
    # 40 requests a second of wall-clock time: each goes through the real OpenAI SDK and
    # embedded Qdrant (a few milliseconds of CPU), and at 80 a second a busy 2-core machine
    # left the demo behind its own traffic (latency rising through a healthy run).
    scenario = demo.Scenario(
        duration=20,
        rps=10,
        faults=faults,
        fault_start=10,
        time_scale=4,
        spans=str(tmp_path / "spans.jsonl"),
        metrics_port=None,
        seed=11,
    )
    for key, value in kwargs.items():
        setattr(scenario, key, value)
    progress = io.StringIO()
    report, seen = demo.run_scenario(scenario, out=progress)
    assert "injecting fault" in progress.getvalue() or not faults
    assert seen.started > 0.75 * scenario.duration * scenario.rps  # in a quarter of the time
    assert sum(seen.outcomes.values()) == seen.started
    return report


def test_a_late_loop_still_starts_every_request_due_before_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = app.SupportAssistant.answer
    stalls: list[float] = []

    async def stalling_answer(self: app.SupportAssistant, ticket: app.Ticket) -> app.Answer:
        if stalls:
            # A busy machine: the loop next runs long after the end of the 20 ms run.
            asyncio.get_running_loop().call_soon(time.sleep, stalls.pop())
        return await answer(self, ticket)

    monkeypatch.setattr(app.SupportAssistant, "answer", stalling_answer)

    def started(stall: float | None) -> int:
        stalls[:] = [stall] if stall is not None else []
        scenario = demo.Scenario(
            duration=2, rps=100, faults={}, time_scale=100, metrics_port=None, seed=5,
            spans=str(tmp_path / f"spans-{stall}.jsonl"),
        )  # fmt: skip
        _, seen = demo.run_scenario(scenario, out=io.StringIO())
        return seen.started

    expected = started(None)
    assert expected > 100  # 2 s at 100 rps
    assert started(0.1) == expected


@pytest.mark.slow
def test_compressed_provider_timeout_run_is_triaged_as_provider(tmp_path: Path) -> None:
    report = _run(tmp_path, {"provider-timeout": 0.5})
    top = report.faults[0]
    assert (top.domain, top.component) == ("provider", "simai/sim-gpt-4o")
    assert "timeout" in top.evidence
    spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    names = {s["attributes"].get("chainsight.stage.name") for s in spans}
    assert names >= {"answer_ticket", "search_kb", "rerank", "build_prompt", "generate_answer",
                     "validate_answer"}  # fmt: skip
    model_spans = [s for s in spans if s["attributes"].get("chainsight.stage.kind") == "model"]
    ok = [s for s in model_spans if s["attributes"]["chainsight.outcome"] == "ok"]
    assert ok
    assert all(s["attributes"]["gen_ai.usage.output_tokens"] > 0 for s in ok)
    assert all("chainsight.time_to_first_chunk_seconds" in s["attributes"] for s in ok)
    assert all(s["attributes"].get("chainsight.cost.usd", 0) > 0 for s in ok)


@pytest.mark.slow
def test_compressed_healthy_run_is_healthy(tmp_path: Path) -> None:
    # A healthy verdict is a latency verdict too: the second half of the run must not look
    # slower than the first. A stalled machine slows whatever calls are in flight, so the
    # judged half lasts 5 s of wall-clock time (40 s at 4x), in which one stall holds up a
    # small share of the calls and stalls fall on both halves alike. With a 2.5 s half, random
    # freezes of the test process (SIGSTOP, about 1 s in every 2 s) gave a false provider
    # slowdown in 3 of 11 runs; with 5 s, in none of 8.
    report = _run(tmp_path, {}, duration=40)
    assert report.healthy, report.verdict_line()


@pytest.mark.slow
def test_compressed_vector_store_outage_falls_back_to_bm25(tmp_path: Path) -> None:
    report = _run(tmp_path, {"vector-store-down": 0.5})
    top = report.faults[0]
    assert (top.domain, top.component) == ("vector_store", "qdrant/kb")
    assert report.domains["vector_store"].fallback_rate > 0.3
    spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    roots = [s for s in spans if s["attributes"].get("chainsight.stage.kind") == "request"]
    outcomes = [r["attributes"]["chainsight.outcome"] for r in roots[-100:]]
    assert outcomes.count("degraded") > 30
    # The BM25 fallback keeps requests answering: only the provider's rare 503s fail.
    assert outcomes.count("error") <= 3


@pytest.mark.slow
def test_busy_metrics_port_is_reported_and_the_demo_continues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # The healthy run of test_compressed_healthy_run_is_healthy, for the same reason: in
        # 3 s of real time (a 1.5 s judged half) the same freezes gave a false provider
        # slowdown in 2 of 6 runs.
        code = main(
            ["demo", "--duration", "40", "--rps", "10", "--fault", "none", "--time-scale", "4",
             "--metrics-port", str(port), "--spans", str(tmp_path / "s.jsonl"), "--seed", "1"]
        )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    assert f"port {port} is busy (" in captured.err
    assert "continuing without /metrics" in captured.err
    assert "verdict: healthy" in captured.out
    assert "triage --spans" in captured.out
