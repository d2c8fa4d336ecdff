"""The JSONL span exporter: one JSON object per finished span, appended to a file or a FIFO.

Two properties make it safe where the file is shared or the sink stops taking bytes:

- **Whole lines, even across processes.** Lines are appended with ``os.write`` on a descriptor
  opened ``O_APPEND``, with no buffer in between, in chunks of whole lines. The kernel appends
  one ``write`` in one piece (on a local regular file whatever its size, on a pipe or FIFO up to
  ``PIPE_BUF`` bytes), so a forked child and its parent appending to one file never split each
  other's lines. A forked child drops its copy of the descriptor and opens the path itself.
- **Never stuck for ever.** The descriptor is non-blocking where that means something (a FIFO,
  a pipe): a FIFO nobody opened fails at once, and a sink that takes nothing for
  ``STALL_TIMEOUT_S``, or a :meth:`~JsonlSpanExporter.shutdown` (shutdown giving up), ends the
  batch. :meth:`~JsonlSpanExporter.write` says how many spans were written whole, so the rest
  are counted as lost, exactly. ``shutdown()`` itself never waits for a write in progress.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import stat
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from chainsight.errors import ConfigurationError

__all__ = ["JSONL_SCHEMA", "JsonlSpanExporter", "after_fork_in_child", "span_to_dict"]

JSONL_SCHEMA: Final = "chainsight.span/1"
# A sink that takes no byte for this long fails the rest of the batch: the OTLP exporters'
# timeout, so a stuck file costs the export thread no more than a dead collector does.
STALL_TIMEOUT_S: Final = 5.0
# How long a writer facing a full pipe waits before it looks again for a shutdown.
POLL_S: Final = 0.05
# The largest write a pipe takes in one piece (POSIX: at least 512 bytes; Linux: 4096).
PIPE_CHUNK: Final = int(getattr(select, "PIPE_BUF", 512))
# A regular file takes any write in one piece; this only bounds one system call's size.
FILE_CHUNK: Final = 1 << 20
_OPEN_FLAGS: Final = (
    os.O_WRONLY
    | os.O_APPEND
    | os.O_CREAT
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_BINARY", 0)
)

_KIND_NAMES: Final = {
    trace.SpanKind.INTERNAL: "INTERNAL",
    trace.SpanKind.CLIENT: "CLIENT",
    trace.SpanKind.SERVER: "SERVER",
    trace.SpanKind.PRODUCER: "PRODUCER",
    trace.SpanKind.CONSUMER: "CONSUMER",
}


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return list(value)
    return value


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """The JSONL representation of a finished span (schema ``chainsight.span/1``)."""
    ctx = span.get_span_context()
    parent = span.parent
    start = span.start_time or 0
    end = span.end_time or start
    return {
        "schema": JSONL_SCHEMA,
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x") if ctx else None,
        "span_id": format(ctx.span_id, "016x") if ctx else None,
        "parent_span_id": format(parent.span_id, "016x") if parent else None,
        "kind": _KIND_NAMES.get(span.kind, "INTERNAL"),
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "duration_seconds": (end - start) / 1e9,
        "status": {
            "code": span.status.status_code.name,
            "description": span.status.description,
        },
        "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
        "events": [
            {
                "name": e.name,
                "time_unix_nano": e.timestamp,
                "attributes": {k: _plain(v) for k, v in (e.attributes or {}).items()},
            }
            for e in span.events
        ],
        "resource": {k: _plain(v) for k, v in span.resource.attributes.items()},
    }


def _line(span: ReadableSpan) -> bytes:
    # ASCII JSON never holds a raw newline, so b"\n" ends exactly one span.
    text = json.dumps(span_to_dict(span), separators=(",", ":"), default=str)
    return text.encode("ascii") + b"\n"


def _chunks(lines: Sequence[bytes], limit: int) -> Iterator[tuple[bytes, int]]:
    """Whole lines joined up to ``limit`` bytes (a longer line alone); with their count."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        if batch and size + len(line) > limit:
            yield b"".join(batch), len(batch)
            batch, size = [], 0
        batch.append(line)
        size += len(line)
    if batch:
        yield b"".join(batch), len(batch)


def _wait_writable(fd: int, timeout: float) -> None:
    if not hasattr(select, "poll"):  # no poll() (Windows): a short sleep does the same here
        time.sleep(timeout)
        return
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll(timeout * 1000)


class JsonlSpanExporter(SpanExporter):
    """Appends one JSON object per finished span to a file (see ``docs/spans-jsonl.md``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        # One batch at a time, and no close() under a write: a closed descriptor's number may
        # be reused by another file at once. shutdown() never waits for it (see there).
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._chunk = PIPE_CHUNK
        self._closed = False
        # A write cut mid-line left part of a line in the sink: the next one starts a new line.
        self._torn = False
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise ConfigurationError(
                f"exporter 'jsonl:{path}': directory {directory!r} does not exist; create it or "
                "choose another path"
            )
        _live.add(self)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append the batch; SUCCESS only if every span was written."""
        if self.write(spans) == len(spans):
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def write(self, spans: Sequence[ReadableSpan]) -> int:
        """Append the batch, one line per span; return how many spans were written whole.

        The others were not written at all (or only in part, on a line the sink cannot parse):
        the caller counts them as lost.
        """
        lines = [_line(span) for span in spans]  # encoded before the lock: that is CPU work
        with self._lock:
            written = self._write_locked(lines)
        if self._closed:
            # shutdown() found the lock taken and left closing the file to the writer.
            self._close_if_idle()
        return written

    def _write_locked(self, lines: Sequence[bytes]) -> int:
        if self._closed or not lines:
            return 0
        try:
            fd = self._open()
        except OSError:  # a missing directory, no permission, a FIFO nobody reads (ENXIO)
            return 0
        if self._torn:
            if self._send(fd, b"\n") != 1:
                return 0
            self._torn = False
        written = 0
        for chunk, count in _chunks(lines, self._chunk):
            sent = self._send(fd, chunk)
            if sent < len(chunk):
                self._torn = sent > 0 and chunk[sent - 1] != ord("\n")
                return written + chunk.count(b"\n", 0, sent)
            written += count
        return written

    def _open(self) -> int:
        if self._fd is None:
            fd = os.open(self.path, _OPEN_FLAGS, 0o666)
            try:
                regular = stat.S_ISREG(os.fstat(fd).st_mode)
            except OSError:
                os.close(fd)
                raise
            self._chunk = FILE_CHUNK if regular else PIPE_CHUNK
            self._fd = fd
        return self._fd

    def _send(self, fd: int, data: bytes) -> int:
        """Write ``data``; return how many bytes went (fewer: stalled, shut down or failed)."""
        view = memoryview(data)
        sent = 0
        last_progress = time.monotonic()
        while sent < len(data):
            if self._closed:  # shutdown gave up on this batch: what is not written is lost
                break
            try:
                done = os.write(fd, view[sent:])
            except BlockingIOError:
                done = 0
            except OSError:  # EPIPE (the reader left), ENOSPC...: reopened for the next batch
                self._drop_fd()
                break
            if done:
                sent += done
                last_progress = time.monotonic()
                continue
            if time.monotonic() - last_progress >= STALL_TIMEOUT_S:
                break
            _wait_writable(fd, POLL_S)
        return sent

    def _drop_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _close_if_idle(self) -> None:
        if self._lock.acquire(blocking=False):
            try:
                self._drop_fd()
            finally:
                self._lock.release()

    def shutdown(self) -> None:
        """Stop writing and close the file, without waiting for a write in progress.

        A write stuck on the sink holds the lock; shutdown (and the give-up that calls it)
        must not wait on it. The writer sees the flag within ``POLL_S``, ends its batch and
        closes the file itself.
        """
        self._closed = True
        self._close_if_idle()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered: each batch is in the kernel's hands when ``write`` returns."""
        return True

    def after_fork_in_child(self) -> None:
        """In a forked child: a fresh lock, and the path opened anew on the next write.

        The parent's export thread may have held the lock at fork time (it is held for a whole
        batch), and it would stay held for ever in the child. The child closes only its own
        copy of the descriptor; the parent's stays open.
        """
        self._lock = threading.Lock()
        self._drop_fd()
        self._torn = False


_live: weakref.WeakSet[JsonlSpanExporter] = weakref.WeakSet()


def after_fork_in_child() -> None:
    """Renew every JSONL exporter of this process in a forked child (chainsight's fork hook)."""
    for exporter in list(_live):
        exporter.after_fork_in_child()
