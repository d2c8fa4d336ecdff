"""Every dashboard query returns data from a real Prometheus that scraped a real traffic mix.

A test app (a thread in this process, ``/metrics`` served by ``configure(metrics_port=0)``) runs
a mix in which each fault domain fails, a fallback degrades a request, validations pass and
fail, a retrieval comes back empty, a streamed model call reports time to first chunk, a hard
budget refuses a tenant, an unpriced model is used and gpt-4o calls cost money. Prometheus
scrapes it every second with the SLO rules (``grafana/alerts/slo-*.yaml``) loaded; then every
expression of ``grafana/generate.py``'s ``all_queries()`` must return at least one sample, and
one that is a number (not NaN), except the few listed in ``MAY_BE_EMPTY`` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import chainsight
from chainsight.config import state as _config
from chainsight.testing import capture
from tests.export.test_metrics import HTTPStatusError, SchemaError, one_request, search, stream
from tests.integration._servers import PrometheusServer
from tests.tools.test_dashboards import _load_generator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
SLO_RULES = sorted((GRAFANA / "alerts").glob("slo-*.yaml"))
DATA_TIMEOUT = 25.0

# Queries that may legitimately return nothing (or only NaN) in a live test a few seconds old,
# keyed by (dashboard uid, panel title), each with the reason. They must still parse.
# Every other query returns a number. Examples of what could belong here, and why none does:
# - "Spend per day ..." uses increase(...[1d]); Prometheus extrapolates over whatever samples
#   the window holds, so two scrapes are enough.
# - "Error budget left" reads slo:sli_error:ratio_rate30d; rate() over 30d likewise needs only
#   two samples, so it has data seconds after start (it is noisy then, not empty).
# - "annotation: Release changes" (X unless X offset 1m) returns the release at start-up
#   because nothing exists a minute earlier; in steady state it is empty until a release
#   changes, which is what an annotation query should do.
MAY_BE_EMPTY: dict[tuple[str, str], str] = {
    ("chainsight-releases", "Candidate vs previous release"): (
        "needs two releases of one job serving 100 requests each in 30m, the later one first "
        "seen a minute after the other; this app runs one release. The promtool tests in "
        "grafana/alerts/tests/slo-release-regression_test.yaml show the recordings it reads"
    ),
}


def traffic_round() -> None:
    """One round of the mix; every failure is expected and swallowed here."""
    one_request("acme")
    one_request("globex")
    for kwargs, error in (
        ({"retrieval_fails": True}, ConnectionError),  # vector_store
        ({"provider_status": 503}, HTTPStatusError),  # provider
        ({"prompt_bug": True}, SchemaError),  # app
    ):
        try:
            one_request("acme", **kwargs)
        except error:
            pass
        else:
            raise AssertionError(f"{kwargs} did not fail")
    one_request("acme", validation_passes=False)  # model (validation failed)

    # degraded: the request falls back after its retrieval failed
    with chainsight.request("answer_ticket", tenant="acme", feature="copilot") as req:
        try:
            search("q", fail=True)
        except ConnectionError:
            req.fallback(to="bm25", reason="vector store down")

    with chainsight.request("answer_ticket", tenant="acme", feature="copilot"):
        search("q", empty=True)

    async def streamed() -> None:
        with chainsight.request("stream_answer", tenant="acme", feature="copilot"):
            async for _chunk in stream("p"):
                pass

    asyncio.run(streamed())

    with (
        chainsight.request("answer_ticket", tenant="acme", feature="labs"),
        chainsight.stage("model", name="local", provider="vllm", model="no-such-model") as m,
    ):
        m.record_usage(input_tokens=7, output_tokens=3)

    # the capped tenant: its first call ever is admitted and overspends, later ones are refused
    with contextlib.suppress(chainsight.BudgetExceeded):
        one_request("capped")


class TrafficThread(threading.Thread):
    """Runs traffic rounds until stopped; keeps the first exception for the test to raise."""

    def __init__(self) -> None:
        super().__init__(name="dashboard-traffic", daemon=True)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.rounds = 0

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                traffic_round()
                self.rounds += 1
                self.stop.wait(0.25)
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            self.error = exc


@pytest.fixture
def traffic() -> Iterator[TrafficThread]:
    """The test app: chainsight serving /metrics, with a release and a hard budget."""
    capture(
        metrics_port=0,
        metrics_addr="127.0.0.1",
        release={"model": "gpt-4o-2024-08-06", "prompt": "answer@7"},
        environment="test",
        # Scoped to one tenant, so exactly that tenant's calls are refused and the others keep
        # spending (an unscoped 0.0001 USD budget would stop all cost after the first call).
        budgets=[chainsight.Budget("daily", 0.0001, hard=True, match={"tenant": "capped"})],
    )
    traffic_round()  # every series exists before the first scrape
    thread = TrafficThread()
    try:
        yield thread
    finally:
        thread.stop.set()
        if thread.is_alive():
            thread.join(10)
        chainsight.reset()


def _has_number(result: list[dict[str, object]]) -> bool:
    return any(
        not math.isnan(float(r["value"][1]))  # type: ignore[index]
        for r in result
    )


def test_every_dashboard_query_returns_data(
    traffic: TrafficThread, prometheus_server: Callable[..., PrometheusServer]
) -> None:
    queries = _load_generator().all_queries()
    assert len(queries) > 40
    unknown = set(MAY_BE_EMPTY) - {(uid, title) for uid, title, _expr in queries}
    assert not unknown, f"MAY_BE_EMPTY names panels that do not exist: {unknown}"
    assert len(SLO_RULES) == 3

    port = _config.current().metrics.server_port
    prom = prometheus_server([f"127.0.0.1:{port}"], rule_files=SLO_RULES)
    prom.wait_for_scrapes(n=2)
    traffic.start()

    missing: dict[tuple[str, str, str], str] = {}
    deadline = time.monotonic() + DATA_TIMEOUT
    pending = list(queries)
    while pending and time.monotonic() < deadline:
        still: list[tuple[str, str, str]] = []
        for uid, title, expr in pending:
            result = prom.query(expr)  # raises PrometheusQueryError if it does not parse
            if not _has_number(result):
                still.append((uid, title, expr))
                missing[(uid, title, expr)] = "no sample" if not result else "only NaN"
            else:
                missing.pop((uid, title, expr), None)
        pending = still
        if pending:
            time.sleep(1.0)
    if traffic.error is not None:
        raise traffic.error
    assert traffic.rounds >= 3, "the traffic thread barely ran"

    unexpected = {key: why for key, why in missing.items() if (key[0], key[1]) not in MAY_BE_EMPTY}
    assert not unexpected, "queries without data:\n" + "\n".join(
        f"  {uid} / {title}: {why}\n    {expr}" for (uid, title, expr), why in unexpected.items()
    )
    # the SLO rules loaded and evaluate without errors
    for group in prom.rules():
        for rule in group["rules"]:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
