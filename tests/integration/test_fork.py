"""Fork safety: a forked child exports its own spans and never inherits a held lock."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import chainsight
from chainsight.config import lifecycle as _lifecycle
from chainsight.config import state as _config
from chainsight.export import metrics as _metrics
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
    otlp_receiver: OTLPReceiver, span_encoder: str, monkeypatch: pytest.MonkeyPatch
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


def _every_lock_chainsight_owns() -> list[tuple[str, threading.Lock | threading.RLock]]:
    """The locks of the current pipeline, by name (tests/test_fork_locks.py keeps the list
    complete: each lock the code creates has a renewal that this test exercises)."""
    cfg = _config.current()
    assert cfg.processor is not None
    assert cfg.budgets is not None
    counting = cfg.processor._exporter
    store = cfg.budgets.store
    return [
        ("config state", _config.lock),
        ("retiring providers", _lifecycle._retiring_lock),
        ("metrics registry table", _metrics._registry_lock),
        ("label guard", cfg.metrics.guard._lock),
        ("processor count", cfg.processor._count_lock),
        ("counting exporter", counting._lock),
        ("jsonl exporter", counting.inner._lock),  # type: ignore[attr-defined]
        ("budget set", cfg.budgets._lock),
        ("budget charge", cfg.budgets._charge_lock),
        ("budget store", store._lock),  # type: ignore[attr-defined]
        ("redactor", cfg.redactor._failure_lock),
    ]


@contextlib.contextmanager
def _held(locks: list[tuple[str, threading.Lock | threading.RLock]]) -> Iterator[None]:
    """Another thread holds every lock until the block ends (as busy threads may at fork)."""
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with contextlib.ExitStack() as stack:
            for _, lock in locks:
                stack.enter_context(lock)
            holding.set()
            release.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert holding.wait(10)
    try:
        yield
    finally:
        release.set()
        holder.join(10)


def _failing_redactor(text: str) -> str:
    # Fails on one text only: names and labels go through the user's redactors too, and a
    # redactor failing on every text would replace them all.
    if "fail here" in text:
        raise ValueError("a user redactor bug: the redactor fails closed and counts it")
    return text


def _use_every_lock(result: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    cfg = _config.current()
    with (
        chainsight.request("child", tenant="a-new-tenant"),  # guard, processor, exporter
        chainsight.stage("model", provider="openai", model="gpt-4o-mini") as stage,
    ):
        stage.record_usage(input_tokens=1000, output_tokens=10)  # budget, charge, store
    assert cfg.budgets is not None
    cfg.budgets.spend({"feature": "x"}, 0.01)
    assert cfg.redactor("please fail here") is None  # the redactor's failure lock
    _metrics.metrics_for(cfg.metrics.registry, None)  # the registry table's lock
    finished = chainsight.shutdown(timeout=10.0)  # retiring providers' lock, the export
    chainsight.configure(service="locks-child")  # the config state's lock
    result.put(json.dumps({"finished": finished}))


def test_every_lock_chainsight_owns_held_at_fork_is_fresh_in_the_child(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    chainsight.configure(
        service="locks",
        exporter=f"jsonl:{path}",
        budgets=[chainsight.Budget("daily", 100.0)],
        redactors=[_failing_redactor],
    )
    locks = _every_lock_chainsight_owns()
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    with _held(locks):
        child = ctx.Process(target=_use_every_lock, args=(result,))
        child.start()
        # Far past what the child needs; a lock inherited held would hang it for ever.
        child.join(30)
    if child.is_alive():
        child.kill()
        child.join(5)
        names = ", ".join(name for name, _ in locks)
        pytest.fail(f"the child hung on a lock held at fork time (one of: {names})")
    assert child.exitcode == 0
    assert json.loads(result.get(timeout=5)) == {"finished": True}
    child_lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert {"invoke_workflow child", "chat gpt-4o-mini"} <= {r["name"] for r in child_lines}
