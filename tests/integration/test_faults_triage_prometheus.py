"""Acceptance 1 of the real-clients work, from Prometheus as well as from the span file.

The RAG app of ``test_faults_triage.py`` (written only against the docs) runs each failure
scenario in two phases: healthy requests, then requests of which every other one hits the
fault. A real Prometheus scrapes the app's ``/metrics`` (one port per scenario, told apart by
the ``instance`` label); ``chainsight triage --prometheus`` judges the fault phase against the
healthy one, and ``chainsight triage --spans`` does the same on the span file. Both must name the
right domain and component.

Two scenarios add the OpenAI SDK's own retries (``max_retries=2``) against the tests' local
provider: a 429 with ``retry-after`` and then an answer (no error reaches the app: the provider
shows as slow), and a 503 on every attempt (the error reaches the app after the retries).
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

import chainsight
from tests.integration._api_server import APIServer
from tests.integration._providers import FakeProvider
from tests.integration._servers import PrometheusServer, free_port, require_binary
from tests.integration.test_faults_triage import (
    ROUTES,
    SCENARIOS,
    Env,
    Factory,
    SupportBot,
    ask,
    gateway_rule,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("ignore::Warning"),
]

PER_PHASE = 12  # requests in the healthy phase, and in the fault phase
PACE = 0.3  # seconds between two requests: each phase spans several 1 s scrapes
RETRY_AFTER = 0.8  # the 429's retry-after, in seconds: the retried call is that much slower


class RetryEnv(Env):
    """The scenarios' servers, plus the local OpenAI-compatible provider."""

    def __init__(self, server: APIServer, closed: int, silent: int, provider: FakeProvider):
        super().__init__(server, closed, silent)
        self.provider = provider

    def retrying_llm(self) -> openai.OpenAI:
        return openai.OpenAI(
            api_key="sk-test",
            base_url=self.provider.openai_url,
            max_retries=2,
            timeout=5.0,
            http_client=openai.DefaultHttpxClient(trust_env=False),
        )


def _rate_limited_then_served(env: Env, fail: bool) -> SupportBot:
    assert isinstance(env, RetryEnv)
    if fail:
        env.provider.fail("429", retry_after=RETRY_AFTER)  # then the SDK's retry is answered
    return SupportBot(env.qdrant(), env.url, env.retrying_llm())


def _unavailable_through_retries(env: Env, fail: bool) -> SupportBot:
    assert isinstance(env, RetryEnv)
    if fail:
        env.provider.fail("503", times=3)  # the call and both retries
    return SupportBot(env.qdrant(), env.url, env.retrying_llm())


# scenario -> (factory, domain, component from the span file, component from Prometheus).
# The stage metrics carry a retrieval stage's system, not its collection; the GenAI metrics
# carry the provider (or a rerank stage's system) and the requested model.
EXPECTED: dict[str, tuple[Factory, str, str, str]] = {
    "qdrant-rest-down": (SCENARIOS["qdrant-rest-down"][0], "vector_store", "qdrant/kb", "qdrant"),
    "qdrant-grpc-down": (SCENARIOS["qdrant-grpc-down"][0], "vector_store", "qdrant/kb", "qdrant"),
    "provider-timeout-wrapped": (
        SCENARIOS["provider-timeout-wrapped"][0], "provider", "openai/gpt-4o", "openai/gpt-4o",
    ),
    "self-hosted-reranker-down": (
        SCENARIOS["self-hosted-reranker-down"][0], "provider", "tei/bge-reranker-v2",
        "tei/bge-reranker-v2",
    ),
    "gateway-error-with-a-rule": (
        SCENARIOS["gateway-error-with-a-rule"][0], "provider", "openai/gpt-4o", "openai/gpt-4o",
    ),
    "429-retry-after-then-served": (
        _rate_limited_then_served, "provider", "openai/gpt-4o", "openai/gpt-4o",
    ),
    "503-through-the-retries": (
        _unavailable_through_retries, "provider", "openai/gpt-4o", "openai/gpt-4o",
    ),
}  # fmt: skip


@dataclass
class Run:
    port: int
    spans: Path
    healthy_start: float
    fault_start: float
    end: float
    outcomes: list[str]


@dataclass
class Runs:
    prometheus: PrometheusServer
    runs: dict[str, Run]


def _phase(env: Env, factory: Factory, faulty: bool) -> list[str]:
    outcomes = []
    for i in range(PER_PHASE):
        outcomes.append(ask(env, factory, fail=faulty and i % 2 == 1))
        time.sleep(PACE)
    return outcomes


def _scraped(prometheus: PrometheusServer, port: int, after: float) -> bool:
    """Prometheus scraped ``port`` successfully at a time past ``after``."""
    found = prometheus.query(f'timestamp(up{{instance="127.0.0.1:{port}"}} == 1)')
    return bool(found) and float(found[0]["value"][1]) > after


def _wait(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "Prometheus did not scrape the app in time"
        time.sleep(0.2)


def _run(prometheus: PrometheusServer, env: Env, name: str, port: int, spans: Path) -> Run:
    factory = EXPECTED[name][0]
    chainsight.reset()
    chainsight.configure(
        service="support-bot",
        exporter=f"jsonl:{spans}",
        classifiers=[gateway_rule],
        metrics_port=port,
        metrics_addr="127.0.0.1",
    )
    try:
        # Two scrapes before the first request: the healthy phase is on record from its start.
        started = time.time()
        _wait(lambda: _scraped(prometheus, port, started + 1.0))
        healthy_start = time.time()
        outcomes = _phase(env, factory, faulty=False)
        fault_start = time.time()
        outcomes += _phase(env, factory, faulty=True)
        end = time.time()
        # The last requests are on record once a scrape after them has landed.
        _wait(lambda: _scraped(prometheus, port, end + 1.0))
    finally:
        assert chainsight.shutdown(timeout=10)
    return Run(port, spans, healthy_start, fault_start, end, outcomes)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    require_binary("prometheus")
    workdir = tmp_path_factory.mktemp("faults-prometheus")
    ports = {name: free_port() for name in EXPECTED}
    prometheus = PrometheusServer(
        [f"127.0.0.1:{port}" for port in ports.values()], workdir=workdir / "prometheus"
    ).start()
    server = APIServer()
    server.routes.update(ROUTES)
    server.thread.start()
    provider = FakeProvider().start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    env = RetryEnv(server, free_port(), silent.getsockname()[1], provider)
    try:
        done = {
            name: _run(prometheus, env, name, port, workdir / f"{name}.jsonl")
            for name, port in ports.items()
        }
        yield Runs(prometheus, done)
    finally:
        chainsight.reset()
        silent.close()
        provider.stop()
        server.stop()
        prometheus.stop()


def _triage(*args: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "chainsight", "triage", *args, "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _check(code: int, payload: dict[str, Any], domain: str, component: str) -> None:
    verdict = payload["verdict"]
    assert code == 1, verdict["line"]
    assert (verdict["domain"], verdict["component"]) == (domain, component), verdict["line"]
    assert [f["domain"] for f in verdict["faults"]] == [domain], verdict["line"]


def _outcomes_as_designed(name: str, run: Run) -> None:
    healthy, faulty = run.outcomes[:PER_PHASE], run.outcomes[PER_PHASE:]
    assert healthy == ["ok"] * PER_PHASE, run.outcomes
    if name == "429-retry-after-then-served":
        assert faulty == ["ok"] * PER_PHASE, run.outcomes  # the SDK's retry hides the 429
    else:
        assert faulty.count("ok") == PER_PHASE // 2, run.outcomes


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_triage_from_the_span_file(runs: Runs, scenario: str) -> None:
    run = runs.runs[scenario]
    _outcomes_as_designed(scenario, run)
    _, domain, component, _ = EXPECTED[scenario]
    # The fault phase, to the millisecond: its requests against the healthy ones before it.
    at = run.end + 1.0
    window = f"{int((at - run.fault_start) * 1000)}ms"
    code, payload = _triage("--spans", str(run.spans), "--window", window, "--at", f"{at:.3f}")
    _check(code, payload, domain, component)


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_triage_from_prometheus_that_scraped_the_app(runs: Runs, scenario: str) -> None:
    run = runs.runs[scenario]
    _outcomes_as_designed(scenario, run)
    _, domain, _, component = EXPECTED[scenario]
    at = run.end + 1.5
    window = math.ceil(at - run.fault_start)
    code, payload = _triage(
        "--prometheus", runs.prometheus.url, "--window", f"{window}s",
        "--baseline", f"{math.floor(run.fault_start - run.healthy_start)}s",
        "--at", f"{at:.3f}", "--selector", f'instance="127.0.0.1:{run.port}"',
    )  # fmt: skip
    _check(code, payload, domain, component)
    assert payload["requests"]["now"] >= PER_PHASE / 2
