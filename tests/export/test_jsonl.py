"""The JSONL exporter where the file is shared or stops taking bytes (``export/jsonl.py``)."""

from __future__ import annotations

import fcntl
import json
import os
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

from chainsight.export import jsonl
from chainsight.export.jsonl import JsonlSpanExporter

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def spans(count: int, pad: int = 0) -> list[ReadableSpan]:
    return [
        ReadableSpan(
            name=f"span-{i}",
            context=SpanContext(trace_id=i + 1, span_id=i + 1, is_remote=False),
            resource=Resource({}),
            attributes={"pad": "x" * pad},
            start_time=1,
            end_time=2,
        )
        for i in range(count)
    ]


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


class Reader:
    """A FIFO's read end that reads only when asked to."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = b""

    def waiting(self) -> int:
        """Bytes in the pipe, not read yet."""
        return int.from_bytes(fcntl.ioctl(self.fd, termios.FIONREAD, b"\0" * 4), "little")

    def drain(self) -> bytes:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.data += chunk
        return self.data


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "spans.fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def reader(fifo: Path) -> Iterator[Reader]:
    opened = Reader(fifo)
    yield opened
    os.close(opened.fd)


def test_a_batch_goes_to_a_regular_file_in_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One write(2) of whole lines on an O_APPEND file: another process's lines go before or
    # after it, never inside a line.
    path = tmp_path / "spans.jsonl"
    exporter = JsonlSpanExporter(str(path))
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes | memoryview) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    assert exporter.write(spans(64, pad=200)) == 64
    assert len(writes) == 1
    assert os.fstat(exporter._fd or -1).st_size == writes[0]
    exporter.shutdown()
    assert len(path.read_text().splitlines()) == 64


def test_a_fifo_nobody_reads_fails_the_batch_at_once(fifo: Path) -> None:
    # Opening a FIFO with no reader would block the export thread for ever.
    exporter = JsonlSpanExporter(str(fifo))
    assert exporter.write(spans(3)) == 0
    exporter.shutdown()


def test_shutdown_does_not_wait_for_a_write_stuck_on_a_full_pipe(
    fifo: Path, reader: Reader
) -> None:
    exporter = JsonlSpanExporter(str(fifo))
    result: list[int] = []
    writer = threading.Thread(target=lambda: result.append(exporter.write(spans(200, pad=1000))))
    writer.start()
    # The pipe is full (less than one chunk of room left): the writer waits for room.
    assert wait_for(lambda: reader.waiting() > 65536 - jsonl.PIPE_CHUNK and not result)
    stopper = threading.Thread(target=exporter.shutdown)
    stopper.start()
    stopper.join(10)  # the writer holds its lock for the whole batch: it is not waited for
    assert not stopper.is_alive()
    writer.join(10)  # it sees the shutdown at its next look, within POLL_S
    assert not writer.is_alive()
    lines = reader.drain().splitlines()
    assert 0 < result[0] == len(lines) < 200  # exactly the whole lines in the pipe
    assert all(json.loads(line)["schema"] == jsonl.JSONL_SCHEMA for line in lines)
    assert exporter._fd is None  # closed by the writer, since shutdown could not


def test_a_line_cut_by_a_stalled_sink_does_not_swallow_the_next(
    fifo: Path, reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonl, "STALL_TIMEOUT_S", 0.2)
    exporter = JsonlSpanExporter(str(fifo))
    # Longer than the pipe holds: the sink takes part of the line, then nothing.
    assert exporter.write(spans(1, pad=100_000)) == 0
    reader.drain()
    assert exporter.write(spans(1)) == 1
    fragment, line = reader.drain().split(b"\n")[-3:-1]
    assert fragment.startswith(b'{"schema"')
    assert not fragment.endswith(b"}")  # cut: ended by a newline of its own
    assert json.loads(line)["name"] == "span-0"
    exporter.shutdown()


def test_after_fork_the_child_has_a_fresh_lock_and_opens_the_file_itself(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = JsonlSpanExporter(str(path))
    assert exporter.write(spans(1)) == 1
    inherited = exporter._fd
    assert inherited is not None
    exporter._lock.acquire()  # the parent's export thread, mid-batch at fork time
    jsonl.after_fork_in_child()  # what chainsight's fork hook calls in the child
    assert exporter._fd is None
    # The child's copy of the descriptor is closed, not leaked.
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(inherited)
    assert exporter.write(spans(2)) == 2  # the lock is a new one, the path opened anew
    exporter.shutdown()
    assert len(path.read_text().splitlines()) == 3
