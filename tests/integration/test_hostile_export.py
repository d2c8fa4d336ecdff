"""Hostile export: a JSONL sink that stops taking bytes.

The accounting rule of ``docs/operations.md`` holds: every span the process produced is written
(a JSONL line) or counted in ``chainsight_export_failures_total{signal="traces"}``, and
``shutdown()`` returns within its bound.

Time bounds here only catch hangs: each is far above what the test needs on a loaded machine and
far below the hang it guards against (a shutdown that never returns). Everything else is a
condition waited for.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import chainsight
from chainsight import _names as n
from chainsight.export.traces import BATCH_SIZE

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs"),
]

FAILURES = n.M_EXPORT_FAILURES + "_total"
STUCK_SHUTDOWN_TIMEOUT_S = 1.0
# shutdown() joins a thread and counts; anything near this is the sink holding it, not CPU.
STUCK_SHUTDOWN_SLACK_S = 2.0
STUCK_SPANS = 6000


def failures(registry: CollectorRegistry) -> float:
    """``chainsight_export_failures_total{signal="traces"}`` in ``registry`` (0 if absent)."""
    return registry.get_sample_value(FAILURES, {n.L_SIGNAL: "traces"}) or 0.0


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


# --- a JSONL sink that stops taking bytes -------------------------------------------------------


class FifoReader:
    """The read end of a FIFO that reads nothing until told to drain it."""

    def __init__(self, path: Path) -> None:
        # Non-blocking: opening a FIFO to read would otherwise wait for a writer.
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = b""

    def drain(self) -> int:
        """Read what the pipe holds now; return the whole lines read so far."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.data += chunk
        return self.data.count(b"\n")

    def close(self) -> None:
        os.close(self.fd)


def timed_shutdown(timeout: float) -> tuple[bool | None, float]:
    """``shutdown(timeout)`` on a thread; (result or None if it never returned, seconds)."""
    result: list[bool] = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: result.append(chainsight.shutdown(timeout=timeout)))
    worker.daemon = True
    worker.start()
    worker.join(timeout + 30.0)  # far past any bound: a hang, not a slow machine
    elapsed = time.monotonic() - started
    return (result[0] if result else None), elapsed


@pytest.mark.parametrize("reader", ["never_reads", "none"])
def test_a_stuck_jsonl_sink_is_counted_and_shutdown_returns_in_time(
    tmp_path: Path, reader: str
) -> None:
    fifo = tmp_path / "spans.fifo"
    os.mkfifo(fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    # A reader that never reads: the pipe takes 64 KiB, then every write would block. With no
    # reader at all, opening the FIFO to write would block instead.
    drain = FifoReader(fifo) if reader == "never_reads" else None
    registry = CollectorRegistry()
    chainsight.configure(service="stuck-sink", exporter=f"jsonl:{fifo}", registry=registry)
    try:
        for _ in range(STUCK_SPANS // 2):
            with chainsight.request("stuck", tenant="acme"), chainsight.stage("tool", name="s"):
                pass

        finished, elapsed = timed_shutdown(STUCK_SHUTDOWN_TIMEOUT_S)

        assert finished is not None, f"shutdown() had not returned after {elapsed:.1f} s"
        assert elapsed < STUCK_SHUTDOWN_TIMEOUT_S + STUCK_SHUTDOWN_SLACK_S, (
            f"shutdown(timeout={STUCK_SHUTDOWN_TIMEOUT_S}) took {elapsed:.2f} s"
        )
        counted_at_return = failures(registry)
        written = drain.drain() if drain else 0
        # All but the batch being written when shutdown gave up is counted by then; that batch
        # counts what it did not write as soon as its writer sees the give-up.
        assert counted_at_return + written >= STUCK_SPANS - BATCH_SIZE, (
            f"at shutdown: produced {STUCK_SPANS}, written {written}, counted {counted_at_return}"
        )

        def accounted() -> bool:
            lines = drain.drain() if drain else 0
            return lines + failures(registry) == STUCK_SPANS

        assert wait_for(accounted, 30.0), (
            f"produced {STUCK_SPANS}, written {drain.drain() if drain else 0}, "
            f"counted {failures(registry)} ({counted_at_return} at shutdown, {finished=})"
        )
        # Nothing the give-up counted is written later, nor counted twice.
        time.sleep(0.5)
        assert accounted()
        print(
            f"\nreader {reader}: produced {STUCK_SPANS}, written {drain.drain() if drain else 0}, "
            f"counted {failures(registry):.0f} ({counted_at_return:.0f} when shutdown returned "
            f"{finished} after {elapsed:.2f} s)"
        )
        if drain:
            for line in drain.data.splitlines():
                assert json.loads(line)["schema"] == "chainsight.span/1"
    finally:
        if drain:
            drain.close()
