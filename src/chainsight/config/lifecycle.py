"""The life of what ``configure()`` built: retiring a replaced pipeline, shutdown, fork.

Every function takes the snapshot it works on; the current one is ``config.state``'s. A dead
or slow backend never holds the caller longer than its timeout: what could not be sent by then
is counted as lost, so every span is either received or counted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Final

from opentelemetry.sdk.trace import TracerProvider

from chainsight import _names as n
from chainsight.config.snapshot import Config
from chainsight.export import metrics as _metrics
from chainsight.export import traces as _traces
from chainsight.export.traces import DroppingBatchProcessor

__all__ = ["after_fork_in_child", "close", "exit_timeout", "retire", "shutdown"]

logger = logging.getLogger("chainsight")

RETIRE_GRACE_S: Final = 2.0
RETIRE_TIMEOUT_S: Final = 5.0
DEFAULT_EXIT_TIMEOUT_S: Final = 3.0


@dataclass(frozen=True, slots=True)
class Owned:
    """A tracer provider chainsight created, with the processor that accounts for its spans."""

    provider: TracerProvider
    processor: DroppingBatchProcessor | None


# Providers replaced by configure() whose queues are still being flushed: shutdown() must
# finish (or count) them too, or a process exiting right after a reconfiguration loses spans.
_retiring: list[Owned] = []
_retiring_lock = threading.Lock()
# Set by shutdown(): retiring providers skip the rest of their grace period.
_expedite = threading.Event()


def owned(cfg: Config) -> Owned | None:
    """The provider ``cfg`` created (None when the app's own provider is in use)."""
    if cfg.owned_provider is None:
        return None
    return Owned(cfg.owned_provider, cfg.processor)


def retire(old: Config | None, new: Config) -> None:
    """Shut down a provider (and OTLP metrics bridge) we no longer use, off the caller's thread."""
    if old is None:
        return
    if old.otlp_bridge is not None and old.otlp_bridge is not new.otlp_bridge:
        threading.Thread(
            target=old.otlp_bridge.shutdown, args=(5.0,), name="chainsight-retire", daemon=True
        ).start()
    retiring = owned(old)
    if retiring is None or old.owned_provider is new.owned_provider:
        return
    with _retiring_lock:
        _retiring.append(retiring)
    threading.Thread(
        target=_retire_later, args=(retiring,), name="chainsight-retire", daemon=True
    ).start()


def _retire_later(retiring: Owned) -> None:
    # Stages in flight keep the snapshot they started with: give them a moment to end on the
    # old provider and be exported; any that end later are counted as dropped.
    _expedite.wait(RETIRE_GRACE_S)
    close(retiring, RETIRE_TIMEOUT_S)
    with _retiring_lock, contextlib.suppress(ValueError):
        _retiring.remove(retiring)


def _bounded_shutdown(provider: TracerProvider, timeout: float) -> None:
    try:
        provider.force_flush(int(timeout * 1000))
        provider.shutdown()
    except Exception:  # a failing exporter must not surface at shutdown
        logger.debug("chainsight: exporter failed during shutdown", exc_info=True)


def close(target: Owned, timeout: float) -> bool:
    """Flush and shut down within ``timeout``; past it, give up and count what is left."""
    worker = threading.Thread(
        target=_bounded_shutdown,
        args=(target.provider, timeout),
        name="chainsight-shutdown",
        daemon=True,
    )
    worker.start()
    worker.join(max(timeout, 0.0))
    if not worker.is_alive():
        return True
    if target.processor is not None:
        target.processor.abandon()
    return False


def reset(old: Config) -> None:
    """Stop what ``old`` started (``reset()``): its ``/metrics`` server, OTLP metrics, spans."""
    old.metrics.stop_server()
    if old.otlp_bridge is not None:
        old.otlp_bridge.shutdown(2.0)
    _expedite.clear()
    target = owned(old)
    if target is not None:
        # A stuck exporter must not hold reset() (and the test or reload calling it).
        close(target, 2.0)


def shutdown(cfg: Config, timeout: float) -> bool:
    """Flush and stop span export within ``timeout`` seconds; True if it all finished."""
    deadline = time.monotonic() + max(timeout, 0.0)
    _expedite.set()
    bridge_ok = True
    if cfg.otlp_bridge is not None:
        bridge_ok = cfg.otlp_bridge.shutdown(timeout / 2)
    with _retiring_lock:
        targets = list(_retiring)
    mine = owned(cfg)
    if mine is not None:
        targets.append(mine)
    results: list[bool] = []
    workers = [
        threading.Thread(
            target=lambda o=target: results.append(close(o, max(0.0, deadline - time.monotonic()))),
            name="chainsight-shutdown",
            daemon=True,
        )
        for target in targets
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()) + 0.1)
    finished = all(results) and len(results) == len(targets)
    if not finished:
        for target in targets:  # a close still running past the deadline: give up on it now
            if target.processor is not None:
                target.processor.abandon()
    return finished and bridge_ok


def exit_timeout() -> float:
    """``CHAINSIGHT_SHUTDOWN_TIMEOUT`` seconds (default 3) for the flush at interpreter exit."""
    raw = os.environ.get(n.ENV_SHUTDOWN_TIMEOUT, "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_EXIT_TIMEOUT_S
    except ValueError:
        logger.warning("ignoring %s=%r: expected seconds", n.ENV_SHUTDOWN_TIMEOUT, raw)
        return DEFAULT_EXIT_TIMEOUT_S
    return value if math.isfinite(value) and value >= 0 else DEFAULT_EXIT_TIMEOUT_S


def after_fork_in_child(cfg: Config) -> None:
    """Renew, in a forked child, what threads and locks of ``cfg``'s pipeline held.

    Threads do not survive ``fork()``, and a lock one of them held at that moment stays held
    for ever in the child. The SDK restarts its batch export thread itself; here we renew every
    lock chainsight owns (span export, metrics, budgets, redactor, this module's), our counts
    of queued spans, the OTLP metrics thread, and the retirement of providers a recent
    ``configure()`` replaced. In prometheus-client multiprocess mode the parent alone pushes
    OTLP metrics, since it reads every worker's values.
    """
    global _retiring_lock, _expedite
    _retiring_lock = threading.Lock()
    # A shutdown() under way in the parent is not the child's: its retirements keep their grace.
    _expedite = threading.Event()
    _traces.after_fork_in_child()
    _metrics.after_fork_in_child()
    if cfg.budgets is not None:
        cfg.budgets.after_fork_in_child()
    cfg.redactor.after_fork_in_child()
    if cfg.otlp_bridge is not None and _metrics.multiprocess_dir() is None:
        cfg.otlp_bridge.after_fork_in_child()
    for retiring in _retiring:
        # Their retire threads did not survive the fork: the child retires them itself.
        threading.Thread(
            target=_retire_later, args=(retiring,), name="chainsight-retire", daemon=True
        ).start()
