"""The GenAI metrics agree with docs/metrics.md, read where users read them.

The real ``anthropic`` client calls a local provider that answers ``claude-sonnet-4-5`` with the
dated ``claude-sonnet-4-5-20250929``, as Anthropic does. The metrics are read from chainsight's
own ``/metrics`` over HTTP (the exposition Prometheus scrapes, parsed by prometheus-client's
parser) and from a real OTLP receiver: one call carries the same model labels on the duration,
the token usage and the time to first chunk, and a call a budget refused is in the duration
with ``error_type="budget_exceeded"``.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from prometheus_client.parser import text_string_to_metric_families

import chainsight
from chainsight import _names as n
from chainsight.config import state as _config
from chainsight.testing import capture
from tests.integration._providers import Answer, FakeProvider
from tests.integration._servers import OTLPReceiver

pytestmark = pytest.mark.integration

ASKED = "claude-sonnet-4-5"
ANSWERED = "claude-sonnet-4-5-20250929"
MESSAGES: list[Any] = [{"role": "user", "content": "where is my order?"}]
DURATION = "gen_ai_client_operation_duration_seconds_count"
TOKENS = "gen_ai_client_token_usage_count"
TTFC = "gen_ai_client_operation_time_to_first_chunk_seconds_count"


@pytest.fixture
def dated_provider() -> Iterator[FakeProvider]:
    """A local Anthropic-format provider whose answers name the dated model."""
    server = FakeProvider(answer=Answer(anthropic_model=ANSWERED)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(dated_provider: FakeProvider) -> Iterator[anthropic.Anthropic]:
    """The real Anthropic client, instrumented, pointed at the local provider."""
    chainsight.instrument("anthropic")
    real = anthropic.Anthropic(base_url=dated_provider.anthropic_url, api_key="sk-ant-local")
    try:
        yield real
    finally:
        real.close()
        chainsight.uninstrument("anthropic")


def scrape() -> list[tuple[str, dict[str, str], float]]:
    """Every sample of chainsight's ``/metrics``, as Prometheus would scrape it."""
    address = chainsight.metrics_address()
    assert address is not None, "configure(metrics_port=0) serves /metrics"
    host, port = address
    url = f"http://{host}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def samples(scraped: list[tuple[str, dict[str, str], float]], name: str) -> list[dict[str, str]]:
    """The label sets of ``name``'s samples with a value above zero."""
    return [labels for sample, labels, value in scraped if sample == name and value > 0]


def test_one_call_has_the_same_model_labels_on_every_genai_metric(
    client: anthropic.Anthropic, otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", otlp_receiver.metrics_url)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")  # only the flush below
    capture(metrics_port=0, otlp_metrics=True)
    client.messages.create(model=ASKED, max_tokens=100, messages=MESSAGES)
    with client.messages.create(
        model=ASKED, max_tokens=100, messages=MESSAGES, stream=True
    ) as stream:
        for _event in stream:
            pass

    scraped = scrape()
    both = {n.L_GEN_AI_REQUEST_MODEL: ASKED, n.L_GEN_AI_RESPONSE_MODEL: ANSWERED}
    for name in (DURATION, TOKENS, TTFC):
        found = samples(scraped, name)
        assert found, f"no {name} sample"
        for labels in found:
            assert {k: labels[k] for k in both} == both, (name, labels)
    assert {labels[n.L_GEN_AI_TOKEN_TYPE] for labels in samples(scraped, TOKENS)} == {
        n.TOKEN_INPUT,
        n.TOKEN_OUTPUT,
    }
    assert sum(v for s, _labels, v in scraped if s == DURATION) == 2

    # The same rule over OTLP: gen_ai.request.model and gen_ai.response.model on each point.
    bridge = _config.current().otlp_bridge
    assert bridge is not None
    assert bridge.force_flush(timeout=10)
    for metric_name in ("gen_ai.client.operation.duration", "gen_ai.client.token.usage"):
        metric = otlp_receiver.wait_for_metric(metric_name)
        for point in metric["data_points"]:
            attributes = point["attributes"]
            assert attributes[n.GEN_AI_REQUEST_MODEL] == ASKED, (metric_name, attributes)
            assert attributes[n.GEN_AI_RESPONSE_MODEL] == ANSWERED, (metric_name, attributes)


def test_a_call_a_budget_refused_is_in_the_duration_as_budget_exceeded(
    client: anthropic.Anthropic, dated_provider: FakeProvider
) -> None:
    # The first call is admitted with nothing spent yet and spends past the limit; the second
    # is refused before any request leaves the process.
    capture(metrics_port=0, budgets=[chainsight.Budget("cap", limit_usd=1e-6)])
    client.messages.create(model=ASKED, max_tokens=100, messages=MESSAGES)
    with pytest.raises(chainsight.BudgetExceeded):
        client.messages.create(model=ASKED, max_tokens=100, messages=MESSAGES)
    assert dated_provider.count("/v1/messages") == 1

    scraped = scrape()
    durations = {
        labels[n.L_GEN_AI_ERROR_TYPE]: (labels[n.L_GEN_AI_RESPONSE_MODEL], value)
        for name, labels, value in scraped
        if name == DURATION and labels[n.L_GEN_AI_REQUEST_MODEL] == ASKED
    }
    # The refused call never had a response: it names no response model.
    assert durations == {"": (ANSWERED, 1.0), n.ERR_BUDGET_EXCEEDED: ("", 1.0)}
    # It used no tokens: the token histogram has the admitted call only.
    assert {value for name, _labels, value in scraped if name == TOKENS} == {1.0}
    rejections = [
        value
        for name, labels, value in scraped
        if name == "chainsight_budget_rejections_total" and labels.get("budget") == "cap"
    ]
    assert rejections == [1.0]
