"""instrument()/uninstrument(): names, laziness, and what happens when chainsight itself fails.

No server here (``make unit``): the SDK calls are the wrappers' own, driven with stand-in
callables; the real clients against real local servers are in ``tests/integration/``.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import chainsight
from chainsight.integrations._calls import Site, run_sync
from chainsight.testing import capture

LIBRARIES = ("openai", "anthropic", "qdrant_client", "chromadb")


def _imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(','.join(m for m in {LIBRARIES!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=120
    )
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_chainsight_imports_no_client_library() -> None:
    assert _imported_after("import chainsight") == []


def test_instrument_imports_only_the_library_it_is_given() -> None:
    code = "import chainsight\nassert chainsight.instrument('qdrant') == ('qdrant',)"
    assert _imported_after(code) == ["qdrant_client"]


def test_an_unknown_name_says_which_names_exist() -> None:
    with pytest.raises(chainsight.ConfigurationError, match=r"'opnai'.*anthropic, chromadb"):
        chainsight.instrument("opnai")
    with pytest.raises(chainsight.ConfigurationError):
        chainsight.uninstrument("pinecone")


def test_instrument_returns_what_is_on_and_uninstrument_turns_it_off() -> None:
    try:
        assert chainsight.instrument("openai") == ("openai",)
        assert chainsight.instrument("openai", "chromadb") == ("openai", "chromadb")
    finally:
        chainsight.uninstrument()
    assert chainsight.instrument.__module__ == "chainsight.integrations"


def _site(record: Any, attributes: Any = None) -> Site:
    return Site(
        "model",
        "fake.call",
        attributes or (lambda obj, args, kwargs: {"provider": "openai"}),
        record,
        lambda stage, chunk: None,
        "integration:test",
    )


def test_our_own_error_is_counted_and_the_call_still_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHAINSIGHT_RAISE_INTERNAL_ERRORS", "0")
    cap = capture()

    def broken(stage: Any, obj: Any, result: Any) -> None:
        raise RuntimeError("a bug in chainsight")

    assert run_sync(_site(broken), lambda obj: "answer", None, (), {}) == "answer"
    assert cap.stage(name="fake.call").outcome == "ok"
    assert cap.metric("chainsight_internal_errors_total", {"where": "integration:test"}) == 1

    def bad_attributes(obj: Any, args: Any, kwargs: Any) -> dict[str, Any]:
        raise KeyError("model")

    site = _site(lambda stage, obj, result: None, bad_attributes)
    assert run_sync(site, lambda obj: "untraced", None, (), {}) == "untraced"
    assert len(cap.find(name="fake.call")) == 1  # the second call ran untraced


def test_the_sdks_exception_is_the_same_object(chainsight_capture: Any) -> None:
    error = ValueError("from the SDK")

    def call(obj: object) -> None:
        raise error

    with pytest.raises(ValueError, match="from the SDK") as raised:
        run_sync(_site(lambda stage, obj, result: None), call, None, (), {})
    assert raised.value is error
    assert chainsight_capture.stage(name="fake.call").outcome == "error"


def test_off_means_a_straight_call(chainsight_capture: Any) -> None:
    chainsight.configure(enabled=False)
    assert run_sync(_site(lambda stage, obj, result: None), lambda obj: 42, None, (), {}) == 42
    assert chainsight_capture.find(name="fake.call") == []


def _child_turns_integrations_off_and_on(result: Any) -> None:
    chainsight.uninstrument("openai")
    chainsight.instrument("openai")
    chainsight.uninstrument("openai")
    result.put("done")


def test_the_integrations_lock_held_at_fork_is_fresh_in_the_child() -> None:
    import multiprocessing
    import threading

    from chainsight.integrations import _patching

    chainsight.instrument("openai")  # installs the fork hook
    try:
        ctx = multiprocessing.get_context("fork")
        result = ctx.Queue()
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with _patching._LOCK:
                holding.set()
                release.wait(60)

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        assert holding.wait(10)
        try:
            child = ctx.Process(target=_child_turns_integrations_off_and_on, args=(result,))
            child.start()
            child.join(30)  # far past what the child needs; an inherited held lock hangs it
        finally:
            release.set()
            holder.join(10)
        if child.is_alive():
            child.kill()
            child.join(5)
            pytest.fail("the child hung on the integrations' lock held at fork time")
        assert child.exitcode == 0
        assert result.get(timeout=5) == "done"
    finally:
        chainsight.uninstrument()
