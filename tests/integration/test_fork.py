"""Fork safety: a forked child exports its own spans and never inherits a held lock."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

import chainsight
from chainsight.config import state as _config
from tests.integration._servers import OTLPReceiver

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
]
# The test process itself runs threads (receiver, exporter); forking it is the point here.
pytestmark.append(pytest.mark.filterwarnings("ignore:This process.*is multi-threaded"))


def _child_work(done: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    with (
        chainsight.request("in_child", tenant=f"pid-{os.getpid()}"),
        chainsight.stage("tool", name="child_stage"),
    ):
        pass
    ok = chainsight.shutdown(timeout=5.0)
    if ok:
        done.set()


def test_child_exports_its_spans_through_a_fresh_batch_thread(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    chainsight.configure(service="forking")
    with chainsight.request("in_parent"):
        pass  # the parent's batch thread is running before the fork
    ctx = multiprocessing.get_context("fork")
    done = ctx.Event()
    child = ctx.Process(target=_child_work, args=(done,))
    child.start()
    child.join(20)
    assert child.exitcode == 0
    assert done.is_set(), "the child's shutdown did not finish in time"
    spans = otlp_receiver.wait_for_spans(2, timeout=10)
    names = {s["name"] for s in spans}
    assert {"invoke_workflow in_child", "execute_tool child_stage"} <= names
    assert chainsight.shutdown(timeout=5.0)
    assert "invoke_workflow in_parent" in {s["name"] for s in otlp_receiver.wait_for_spans(3)}


def _record_new_label(done: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    with chainsight.request("r", tenant="a-brand-new-tenant"):  # needs the guard's lock
        pass
    done.set()


def test_lock_held_by_another_thread_at_fork_is_not_inherited_held() -> None:
    chainsight.configure(service="locks")
    guard = _config.current().metrics.guard
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with guard._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    held.wait(5)
    try:
        ctx = multiprocessing.get_context("fork")
        done = ctx.Event()
        child = ctx.Process(target=_record_new_label, args=(done,))
        child.start()
        child.join(15)
        assert done.is_set(), "the child deadlocked on a lock held at fork time"
        assert child.exitcode == 0
    finally:
        release.set()
        holder.join(5)
