"""Multiprocess metrics: a real gunicorn with two workers, one scrape showing both.

gunicorn runs ``examples/wsgi_app.py`` with ``examples/gunicorn.conf.py`` and
``PROMETHEUS_MULTIPROC_DIR`` set, so prometheus-client writes every worker's values to files and
``chainsight.metrics_app()`` sums them. The test drives requests until both workers have
answered, checks one scrape counts all of them, then stops a worker: the ``child_exit`` hook
must drop its live gauge while its counters stay in the sum.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration._servers import PrometheusServer, free_port, promtool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@dataclass
class Gunicorn:
    """A running gunicorn: its base URL, metrics directory and log file."""

    url: str
    multiproc_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def get(self, path: str) -> bytes:
        """Body of a GET to the app; fails the test on a non-200 answer."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:  # noqa: S310
            assert response.status == 200
            return bytes(response.read())

    def scrape(self) -> dict[str, float]:
        """One /metrics page as ``{sample line without value: value}``."""
        samples: dict[str, float] = {}
        for line in self.get("/metrics").decode().splitlines():
            if line and not line.startswith("#"):
                key, _, raw = line.rpartition(" ")
                samples[key] = float(raw)
        return samples

    def worker_pids(self) -> set[int]:
        """The pids of the master's live children (the workers)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return {int(p) for p in children.read_text().split()}


def _wait(check: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s; gunicorn log:\n{log.read_text()[-3000:]}")


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Gunicorn]:
    """gunicorn with two workers on a free loopback port, in multiprocess mode."""
    port = free_port()
    multiproc_dir = tmp_path / "metrics"
    log = tmp_path / "gunicorn.log"
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "CHAINSIGHT_EXPORTER": "none",
        "PROMPT_VERSION": "answer@7",
    }
    # A leftover file from an earlier run: on_starting must remove it before workers write.
    multiproc_dir.mkdir()
    (multiproc_dir / "counter_999999.db").write_bytes(b"stale")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(EXAMPLES / "gunicorn.conf.py"),
                "--pythonpath",
                str(EXAMPLES),
                "wsgi_app:app",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Gunicorn(f"http://127.0.0.1:{port}", multiproc_dir, log, proc)
    try:
        _wait(lambda: len(server.worker_pids()) == 2, 20, "two workers did not start", log)
        _wait(lambda: server.get("/metrics") is not None, 20, "/metrics did not answer", log)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


TOKEN_TYPE = re.compile(r'token_type="(\w+)"')
REQUESTS_TOTAL = (
    'chainsight_requests_total{fault="none",feature="faq",outcome="ok",'
    'release="model=gpt-4o,prompt=answer@7",request="answer"}'
)


def _answer_until_both_workers_served(server: Gunicorn) -> Counter[int]:
    """Send concurrent slow requests until each of the two workers answered some."""
    served: Counter[int] = Counter()

    def one(i: int) -> int:
        body = server.get(f"/answer?q=when+do+orders+ship&tenant=t{i % 3}&delay=0.05")
        return int(json.loads(body)["pid"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        for _attempt in range(10):
            served.update(pool.map(one, range(12)))
            if len(served) >= 2:
                break
    return served


def test_one_scrape_sums_both_workers(gunicorn: Gunicorn) -> None:
    assert not (gunicorn.multiproc_dir / "counter_999999.db").exists(), "stale file kept"
    served = _answer_until_both_workers_served(gunicorn)
    assert len(served) == 2, f"only one worker answered: {served}"
    assert set(served) == gunicorn.worker_pids()
    sent = sum(served.values())
    for pid in served:
        assert (gunicorn.multiproc_dir / f"counter_{pid}.db").exists()
    # Whichever worker serves the scrape, it shows every worker's requests.
    for _ in range(6):
        samples = gunicorn.scrape()
        assert samples[REQUESTS_TOTAL] == sent
        by_type: dict[str, float] = {}
        for key, value in samples.items():
            token_type = TOKEN_TYPE.search(key)
            if key.startswith("chainsight_tokens_total{") and token_type is not None:
                by_type[token_type.group(1)] = by_type.get(token_type.group(1), 0.0) + value
        # "when do orders ship" + "Orders ship in two days." = 9 input, 5 output tokens per call
        assert by_type == {"input": 9.0 * sent, "output": 5.0 * sent}
        assert samples['chainsight_in_flight_requests{request="answer"}'] == 0
        release = [k for k in samples if k.startswith("chainsight_release_info")]
        assert len(release) == 1
        assert 'prompt="answer@7"' in release[0]


def test_multiprocess_scrape_passes_promtool(gunicorn: Gunicorn) -> None:
    _answer_until_both_workers_served(gunicorn)
    checked = promtool("check", "metrics", input=gunicorn.get("/metrics").decode())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == ""


def test_child_exit_drops_live_gauges_and_keeps_counters(gunicorn: Gunicorn) -> None:
    served = _answer_until_both_workers_served(gunicorn)
    assert len(served) == 2, f"only one worker answered: {served}"
    sent = sum(served.values())
    victim = min(served)
    live_file = gunicorn.multiproc_dir / f"gauge_livesum_{victim}.db"
    assert live_file.exists()
    os.kill(victim, signal.SIGTERM)
    _wait(
        lambda: not live_file.exists() and len(gunicorn.worker_pids() - {victim}) == 2,
        20,
        "child_exit did not remove the dead worker's live gauge, or no new worker came up",
        gunicorn.log,
    )
    samples = gunicorn.scrape()
    # the dead worker's requests still count: totals never go backwards on a recycle
    assert samples[REQUESTS_TOTAL] == sent
    assert (gunicorn.multiproc_dir / f"counter_{victim}.db").exists()


@pytest.mark.slow
def test_prometheus_scrapes_the_workers_sum(
    gunicorn: Gunicorn, prometheus_server: Callable[..., PrometheusServer]
) -> None:
    prom = prometheus_server([gunicorn.url.removeprefix("http://")])
    prom.wait_for_scrapes(n=1)
    served = _answer_until_both_workers_served(gunicorn)
    sent = float(sum(served.values()))
    deadline = time.monotonic() + 15
    seen = None
    while time.monotonic() < deadline:
        seen = prom.query_scalar('sum(chainsight_requests_total{request="answer"})')
        if seen == sent:
            break
        time.sleep(0.2)
    assert seen == sent
