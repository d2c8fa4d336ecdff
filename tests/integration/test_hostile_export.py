"""Hostile export: ``fork()`` from a busy parent, and a JSONL sink that stops taking bytes.

The accounting rule of ``docs/operations.md`` holds in both: every span a process produced is
written (a JSONL line, or a span the real OTLP receiver accepted) or counted in
``chainsight_export_failures_total{signal="traces"}``, and ``shutdown()`` returns within its bound.

Time bounds here only catch hangs: each is far above what the test needs on a loaded machine and
far below the hang it guards against (a child or a shutdown that never returns). Everything else
is a condition waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import chainsight
from chainsight import _names as n
from chainsight.export.traces import BATCH_SIZE
from tests.integration._servers import OTLPReceiver

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # The test process runs threads (busy producers, exporter, receiver); forking it is the point.
    pytest.mark.filterwarnings("ignore:This process.*is multi-threaded"),
]

FAILURES = n.M_EXPORT_FAILURES + "_total"
CHILDREN = 30
SPANS_PER_CHILD = 100  # a request and one stage, fifty times
BUSY_THREADS = 4
# The OTLP receiver answers from this very process: producers without a pause starve it of the
# GIL, and a child's shutdown would then measure the receiver's wait (seconds), not chainsight's.
RECEIVER_SHARE_PAUSE_S = 0.0005
CHILD_SHUTDOWN_TIMEOUT_S = 10.0
# Every child has reported and exited by then; one still running is hung.
CHILDREN_DEADLINE_S = 120.0
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


# --- fork() from a busy parent ------------------------------------------------------------------


@dataclass(frozen=True)
class ChildReport:
    """What one forked child measured itself."""

    pid: int
    counted: int
    finished: bool
    shutdown_s: float

    @property
    def tenant(self) -> str:
        return child_tenant(self.pid)


def child_tenant(pid: int) -> str:
    """The tenant a child sets on each of its spans: how its spans are told apart."""
    return f"child-{pid}"


@contextlib.contextmanager
def busy_parent(pause: float = 0.0) -> Iterator[None]:
    """Threads producing spans (``pause`` s apart), so the export thread is busy at every fork."""
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            with chainsight.request("busy", tenant="parent"), chainsight.stage("tool", name="busy"):
                pass
            if pause:
                time.sleep(pause)

    threads = [threading.Thread(target=produce, daemon=True) for _ in range(BUSY_THREADS)]
    for thread in threads:
        thread.start()
    try:
        # The export thread has batches to write before the first fork.
        time.sleep(0.3)
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)


def _child(registry: CollectorRegistry, report_fd: int) -> None:
    """The forked child: 100 spans, shutdown, one report line. Never returns."""
    code = 70
    try:
        before = failures(registry)  # the parent's count, inherited
        tenant = child_tenant(os.getpid())
        # The parent threads' names: the same metric children, whose locks those threads take.
        for _ in range(SPANS_PER_CHILD // 2):
            with chainsight.request("busy", tenant=tenant), chainsight.stage("tool", name="busy"):
                pass
        started = time.monotonic()
        finished = chainsight.shutdown(timeout=CHILD_SHUTDOWN_TIMEOUT_S)
        took = time.monotonic() - started
        report = {
            "pid": os.getpid(),
            "counted": failures(registry) - before,
            "finished": finished,
            "shutdown_s": took,
        }
        # One line under PIPE_BUF: written whole, whatever the other children write.
        os.write(report_fd, json.dumps(report).encode() + b"\n")
        code = 0
    finally:
        os._exit(code)  # never back into pytest


def _report(raw: dict[str, object]) -> ChildReport:
    return ChildReport(
        pid=int(str(raw["pid"])),
        counted=round(float(str(raw["counted"]))),
        finished=raw["finished"] is True,
        shutdown_s=float(str(raw["shutdown_s"])),
    )


def _read_reports(read_fd: int) -> list[ChildReport]:
    """The report lines that arrive before every child exited, or before the deadline."""
    data = b""
    deadline = time.monotonic() + CHILDREN_DEADLINE_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([read_fd], [], [], 0.5)
        if ready:
            chunk = os.read(read_fd, 65536)
            if not chunk:  # every child closed its end: all exited
                break
            data += chunk
    return [_report(json.loads(line)) for line in data.decode().splitlines()]


def _reap(pids: list[int]) -> dict[int, int]:
    """Each child's exit code; one still running past the deadline is hung: killed, -9."""
    codes = {}
    for pid in pids:
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        codes[pid] = os.waitstatus_to_exitcode(status)
    return codes


def fork_children(registry: CollectorRegistry) -> list[ChildReport]:
    """Fork CHILDREN children from this (busy) process; return their reports once all exited."""
    read_fd, write_fd = os.pipe()
    pids: list[int] = []
    try:
        for _ in range(CHILDREN):
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                _child(registry, write_fd)
            pids.append(pid)
            # Forks land at different points of the parent's export.
            time.sleep(random.uniform(0.0, 0.02))
    finally:
        os.close(write_fd)
    try:
        reports = _read_reports(read_fd)
    finally:
        os.close(read_fd)
        codes = _reap(pids)
    failed = {pid: code for pid, code in codes.items() if code != 0}
    silent = sorted(set(pids) - {r.pid for r in reports})
    assert not failed, f"children failed (exit code; -9: hung, killed at the deadline): {failed}"
    assert not silent, f"children exited without a report: {silent}"
    return reports


def check_children(reports: list[ChildReport], written: Counter[str]) -> None:
    """Per child: written + counted == produced, and a shutdown that finished in time."""
    table = [
        f"pid {r.pid}: written {written[r.tenant]}, counted {r.counted}, "
        f"shutdown {r.shutdown_s:.3f} s {'ok' if r.finished else 'GAVE UP'}"
        for r in reports
    ]
    print("\n".join(["", *table]))
    wrong = [
        line
        for line, r in zip(table, reports, strict=True)
        if written[r.tenant] + r.counted != SPANS_PER_CHILD or not r.finished
    ]
    assert len(reports) == CHILDREN
    assert not wrong, f"{len(wrong)} of {CHILDREN} children lost spans or hung:\n" + "\n".join(
        wrong
    )


def test_forked_children_of_a_busy_parent_write_or_count_every_span_jsonl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spans.jsonl"
    registry = CollectorRegistry()
    monkeypatch.setenv(n.ENV_BSP_SCHEDULE_DELAY, "20")  # the export thread writes all the time
    chainsight.configure(service="busy-parent", exporter=f"jsonl:{path}", registry=registry)
    with busy_parent():
        reports = fork_children(registry)
    assert chainsight.shutdown(timeout=10.0)
    written: Counter[str] = Counter()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        # A line that parent and child wrote into each other would not parse.
        record = json.loads(line)
        assert record["schema"] == "chainsight.span/1", f"line {number}: {line[:200]}"
        written[record["attributes"].get(n.CS_TENANT, "")] += 1
    check_children(reports, written)


def test_forked_children_of_a_busy_parent_send_or_count_every_span_otlp(
    otlp_receiver: OTLPReceiver, span_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    monkeypatch.setenv(n.ENV_OTEL_TRACES_ENDPOINT, otlp_receiver.traces_url)
    monkeypatch.setenv(n.ENV_BSP_SCHEDULE_DELAY, "20")
    chainsight.configure(service="busy-parent", exporter="otlp:http", registry=registry)
    with busy_parent(pause=RECEIVER_SHARE_PAUSE_S):
        reports = fork_children(registry)
    assert chainsight.shutdown(timeout=10.0)
    # A child's shutdown returned after the receiver answered, so its spans are all stored.
    received = Counter(
        span["attributes"].get(n.CS_TENANT, "")
        for span in {s["span_id"]: s for s in otlp_receiver.spans()}.values()
    )
    check_children(reports, received)


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
