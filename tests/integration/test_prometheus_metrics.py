"""chainsight's metrics as a real Prometheus sees them, and every way of exposing them.

A real Prometheus (1 s scrape interval, exemplar storage on) scrapes a process that runs a known
traffic mix; PromQL through the HTTP API must return exactly the injected counts, a sane
latency quantile and the exemplars' trace ids. ``promtool check metrics`` lints a busy scrape.
``configure(metrics_port=...)`` and ``chainsight.metrics_app()`` (WSGI and ASGI) are exercised
over real sockets or the real calling conventions.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

import chainsight
from chainsight.config import state as _config
from chainsight.errors import ConfigurationError
from chainsight.testing import Capture, capture
from tests.export.test_metrics import RELEASE, one_request, run_mix
from tests.integration._servers import PrometheusServer, free_port, promtool

PrometheusFactory = Callable[..., PrometheusServer]

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
EXEMPLAR_LINE = re.compile(r'_bucket\{[^}]*\} \S+ # \{(?=[^}]*trace_id="[0-9a-f]{32}")[^}]*\} ')


def http_get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    """Status, content type and body of a GET to one of our loopback servers."""
    headers = {"Accept": accept} if accept else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http://127.0.0.1 only
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return int(response.status), response.headers["Content-Type"], response.read().decode()


def api(prom: PrometheusServer, path: str, **params: str) -> Any:
    """``data`` of a Prometheus HTTP API answer; fails the test on an error answer."""
    url = f"{prom.url}{path}?{urllib.parse.urlencode(params)}"
    _status, _ctype, body = http_get(url)
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    return answer["data"]


def by_label(prom: PrometheusServer, expr: str, label: str) -> dict[str, float]:
    """An instant query's result as ``{value of label: sample value}``."""
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in prom.query(expr)}


def wait_for_value(prom: PrometheusServer, expr: str, expected: float, timeout: float = 15) -> None:
    """Block until ``expr`` (one series) has ``expected`` in Prometheus: a scrape saw it all."""
    deadline = time.monotonic() + timeout
    seen: float | None = None
    while time.monotonic() < deadline:
        seen = prom.query_scalar(expr)
        if seen == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"{expr} stayed {seen} in Prometheus, expected {expected}")


@pytest.fixture
def served() -> Iterator[Capture]:
    """chainsight with a fresh registry, in-memory spans and /metrics on a free loopback port."""
    cap = capture(metrics_port=0, metrics_addr="127.0.0.1", release=RELEASE, environment="it")
    try:
        yield cap
    finally:
        chainsight.reset()


def metrics_url() -> str:
    port = _config.current().metrics.server_port
    assert port is not None
    return f"http://127.0.0.1:{port}/metrics"


@chainsight.traced_stage("rerank", name="rerank_slow")
def rerank_slow() -> None:
    """A stage of known latency (~30 ms) for the quantile check."""
    time.sleep(0.03)


# --- promtool --------------------------------------------------------------------------------


@pytest.mark.integration
def test_promtool_check_metrics_accepts_a_busy_scrape(served: Capture) -> None:
    chainsight.configure(
        budgets=[chainsight.Budget("daily", 0.0001, hard=True, match={"tenant": "capped"})]
    )
    run_mix()
    for tenant in ['quote"d', "new\nline", "ü🙂", "x" * 500]:
        one_request(tenant)
    for accept in (None, OPENMETRICS):
        status, ctype, body = http_get(metrics_url(), accept)
        assert status == 200
        assert body.count("\n") > 300, "expected a busy scrape"
        if accept is None:
            # promtool lints the Prometheus text format (it cannot parse OpenMetrics exemplars)
            checked = promtool("check", "metrics", input=body)
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert checked.stdout.strip() == ""
            assert checked.stderr.strip() == ""
        else:
            assert ctype.startswith("application/openmetrics-text")
            assert body.endswith("# EOF\n")
            assert EXEMPLAR_LINE.search(body), "no exemplar on any bucket line"


# --- a real Prometheus -----------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_prometheus_returns_exactly_the_injected_counts(
    served: Capture, prometheus_server: PrometheusFactory
) -> None:
    prom = prometheus_server(
        [metrics_url().removeprefix("http://").removesuffix("/metrics")],
        extra_args=["--enable-feature=exemplar-storage"],
    )
    prom.wait_for_scrapes(n=2)
    started = time.time()
    # Two rounds with a scrape between them, so rate() sees the histograms grow.
    for _round in range(2):
        for tenant in ("acme", "globex"):
            one_request(tenant)
        with pytest.raises(ConnectionError):
            one_request("acme", retrieval_fails=True)
        with pytest.raises(Exception, match="HTTP 503"):
            one_request("acme", provider_status=503)
        with pytest.raises(Exception, match="HTTP 401"):
            one_request("globex", provider_status=401)
        one_request("acme", validation_passes=False)
        for _ in range(5):
            rerank_slow()
        wait_for_value(prom, "sum(chainsight_requests_total)", 6.0 * (_round + 1))

    errors = by_label(prom, 'sum by (fault) (chainsight_requests_total{outcome="error"})', "fault")
    assert errors == {"vector_store": 2.0, "provider": 2.0, "app": 2.0, "model": 2.0}
    ok = by_label(prom, 'sum by (outcome) (chainsight_requests_total{fault="none"})', "outcome")
    assert ok == {"ok": 4.0}
    stage_errors = by_label(
        prom, "sum by (error_type) (chainsight_stage_errors_total)", "error_type"
    )
    assert stage_errors == {
        "connection": 2.0,
        "server_error": 2.0,
        "auth": 2.0,
        "validation_failed": 2.0,
    }
    # 2 ok + 1 validation-failed requests per round called the model and recorded usage
    tokens = by_label(prom, "sum by (token_type) (chainsight_tokens_total)", "token_type")
    assert tokens == {"input": 6000.0, "output": 1200.0, "cache_read": 2400.0, "reasoning": 300.0}
    by_tenant = by_label(
        prom, 'sum by (tenant) (chainsight_tokens_total{token_type="input"})', "tenant"
    )
    assert by_tenant == {"acme": 4000.0, "globex": 2000.0}
    cost = prom.query_scalar("sum(chainsight_cost_usd_total)")
    assert cost == pytest.approx(6 * (600 * 2.5 + 400 * 1.25 + 200 * 10.0) / 1e6, rel=1e-9)
    release = prom.query("chainsight_release_info")
    assert [r["metric"]["prompt"] for r in release] == [RELEASE["prompt"]]

    p50 = prom.query_scalar(
        "histogram_quantile(0.5, sum by (le) "
        '(rate(chainsight_stage_duration_seconds_bucket{stage="rerank_slow"}[1m])))'
    )
    assert p50 is not None
    # each call sleeps 30 ms: the median lies in the (0.025, 0.05] bucket, or one of the next
    # two up on a loaded machine (a sleep never ends early)
    assert 0.025 <= p50 <= 0.25, p50

    # exemplars: Prometheus scraped OpenMetrics and stored trace ids of exported spans
    data = api(
        prom,
        "/api/v1/query_exemplars",
        query='chainsight_stage_duration_seconds_bucket{stage="rerank_slow"}',
        start=str(started - 5),
        end=str(time.time() + 5),
    )
    stored = [ex["labels"] for series in data for ex in series["exemplars"]]
    assert stored, "Prometheus stored no exemplar"
    exported = {(f"{s.trace_id:032x}", f"{s.span_id:016x}") for s in served.find(kind="rerank")}
    for labels in stored:
        assert (labels["trace_id"], labels["span_id"]) in exported


# --- exposition endpoints --------------------------------------------------------------------


def test_configure_metrics_port_serves_both_formats(served: Capture) -> None:
    one_request("acme")
    status, ctype, body = http_get(metrics_url())
    assert status == 200
    assert ctype.startswith("text/plain")
    assert 'chainsight_requests_total{fault="none",feature="copilot"' in body
    status, ctype, body = http_get(metrics_url(), OPENMETRICS)
    assert ctype.startswith("application/openmetrics-text")
    assert EXEMPLAR_LINE.search(body)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another listener holds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_metrics_port_that_is_taken_is_a_configuration_error(taken_port: int) -> None:
    with pytest.raises(ConfigurationError, match=rf"127\.0\.0\.1:{taken_port}.*free port"):
        chainsight.configure(metrics_port=taken_port, metrics_addr="127.0.0.1")


def test_failed_port_change_keeps_the_running_server(served: Capture, taken_port: int) -> None:
    url = metrics_url()
    with pytest.raises(ConfigurationError):
        chainsight.configure(metrics_port=taken_port)
    assert http_get(url)[0] == 200


def test_reset_stops_the_metrics_server(served: Capture) -> None:
    url = metrics_url()
    assert http_get(url)[0] == 200
    chainsight.reset()
    assert _config.current().metrics.server_port is None
    with pytest.raises(OSError, match="refused"):
        http_get(url)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output free of access log lines."""


def test_metrics_app_serves_wsgi(chainsight_capture: Capture) -> None:
    one_request("acme")
    app = chainsight.metrics_app()
    server = make_server("127.0.0.1", free_port(), app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/metrics"
        status, ctype, body = http_get(base)
        assert status == 200
        assert ctype.startswith("text/plain")
        assert "chainsight_requests_total{" in body
        _status, ctype, body = http_get(base, OPENMETRICS)
        assert ctype.startswith("application/openmetrics-text")
        assert EXEMPLAR_LINE.search(body)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_metrics_app_serves_asgi(chainsight_capture: Capture) -> None:
    one_request("acme")
    app = chainsight.metrics_app()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/metrics",
        "raw_path": b"/metrics",
        "query_string": b"",
        "headers": [(b"accept", OPENMETRICS.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    assert start["type"] == "http.response.start"
    assert start["status"] == 200
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    assert headers["content-type"].startswith("application/openmetrics-text")
    body = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    assert "chainsight_requests_total{" in body
    assert EXEMPLAR_LINE.search(body)
