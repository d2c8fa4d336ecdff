"""Lifecycle against real processes: bounded shutdown, the exit hook, the start-up switch, and
``configure()`` called while stages run.

The accounting rule every test here checks is the one in ``docs/operations.md``: each span that
was produced (sampled) is either received by the OTLP receiver or counted in
``chainsight_export_failures_total{signal="traces"}`` — never both, never neither.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import chainsight
from chainsight import _names as n
from chainsight.config import lifecycle
from chainsight.export.traces import BATCH_SIZE
from tests.integration._servers import OTLPReceiver, free_port

pytestmark = pytest.mark.integration

FAILURES = n.M_EXPORT_FAILURES + "_total"
# Shutdown joins a thread and counts what is left; anything beyond this is the backend holding us.
SHUTDOWN_SLACK_S = 0.5
# A child process also tears the interpreter down after its exit hook.
EXIT_SLACK_S = 1.5
SPANS_PER_CHAIN = 4


class AppError(RuntimeError):
    """The application's own failure; chainsight must hand it back unchanged."""


@chainsight.traced_stage("retrieval", system="qdrant", collection="kb")
def retrieve(query: str) -> list[str]:
    return [query]


@chainsight.traced_stage("model", provider="openai", model="gpt-4o-mini")
def generate(docs: list[str]) -> str:
    chainsight.current_stage().record_usage(input_tokens=10, output_tokens=5)
    return "answer:" + ",".join(docs)


def chain(i: int) -> str:
    """One request of SPANS_PER_CHAIN spans."""
    with chainsight.request("lifecycle", tenant="acme"):
        docs = retrieve(f"q{i}")
        with chainsight.stage("prompt", name="answer"):
            pass
        return generate(docs)


def failures(registry: CollectorRegistry) -> float:
    """``chainsight_export_failures_total{signal="traces"}`` in ``registry`` (0 if absent)."""
    return registry.get_sample_value(FAILURES, {n.L_SIGNAL: "traces"}) or 0.0


def received_ids(receiver: OTLPReceiver) -> set[str]:
    """Span ids the receiver accepted; a batch retried after a lost answer counts once."""
    return {span["span_id"] for span in receiver.spans()}


def settle(read: Callable[[], tuple[float, int]], quiet: float = 1.5, limit: float = 25.0) -> None:
    """Wait until ``read()`` stops changing for ``quiet`` seconds (or ``limit`` passes).

    Threads that shutdown() left behind may still send or count; the accounting is only
    meaningful once they are done.
    """
    deadline = time.monotonic() + limit
    last = read()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            return


def timed_shutdown(timeout: float) -> tuple[bool, float]:
    started = time.monotonic()
    finished = chainsight.shutdown(timeout=timeout)
    return finished, time.monotonic() - started


# --- bounded shutdown -----------------------------------------------------------------------


@pytest.mark.slow
def test_shutdown_with_dead_backend_returns_in_time_and_counts_each_span_once(
    otlp_receiver: OTLPReceiver, span_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    otlp_receiver.stop()  # connections to the port are refused from now on
    monkeypatch.setenv(n.ENV_OTEL_TRACES_ENDPOINT, otlp_receiver.traces_url)
    chainsight.configure(service="dead-backend", registry=registry, exporter="otlp:http")
    chains = 750
    for i in range(chains):
        chain(i)
    produced = chains * SPANS_PER_CHAIN

    finished, elapsed = timed_shutdown(2.0)

    assert elapsed < 2.0 + SHUTDOWN_SLACK_S, f"shutdown(timeout=2.0) took {elapsed:.2f} s"
    # Six batches against a refusing port take ~3 s each (the exporter's retries): it cannot finish.
    assert not finished
    # Everything still queued is counted at give-up; the one batch in flight counts itself
    # when its (cut short) attempt returns.
    assert failures(registry) >= produced - BATCH_SIZE, "spans not sent must be counted"
    # The backend comes back: whatever shutdown() gave up on must not be sent (or counted) later,
    # or the spans would be counted as lost and received as well.
    otlp_receiver.start()
    settle(lambda: (failures(registry), len(otlp_receiver.spans())))
    received = received_ids(otlp_receiver)
    assert len(received) + failures(registry) == produced, (
        f"produced {produced}, received {len(received)}, counted {failures(registry)}"
    )


@pytest.mark.slow
def test_shutdown_with_slow_receiver_returns_in_time_and_counts_exactly(
    otlp_receiver: OTLPReceiver, span_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    otlp_receiver.set_mode("slow", delay=3.0)  # slower than shutdown allows, faster than 5 s
    monkeypatch.setenv(n.ENV_OTEL_TRACES_ENDPOINT, otlp_receiver.traces_url)
    chainsight.configure(service="slow-backend", registry=registry, exporter="otlp:http")
    chains = 400
    for i in range(chains):
        chain(i)
    produced = chains * SPANS_PER_CHAIN

    finished, elapsed = timed_shutdown(1.0)

    assert elapsed < 1.0 + SHUTDOWN_SLACK_S, f"shutdown(timeout=1.0) took {elapsed:.2f} s"
    assert not finished
    counted_at_give_up = failures(registry)
    assert counted_at_give_up > 0
    otlp_receiver.set_mode("ok")
    # Quiet for longer than the receiver's delay, so an answer still on its way is waited for.
    settle(lambda: (failures(registry), len(otlp_receiver.spans())), quiet=4.0)
    received = received_ids(otlp_receiver)
    assert len(received) + failures(registry) == produced, (
        f"produced {produced}, received {len(received)}, counted {failures(registry)} "
        f"({counted_at_give_up} at give-up)"
    )


def test_shutdown_with_healthy_receiver_sends_everything(
    otlp_receiver: OTLPReceiver, span_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    monkeypatch.setenv(n.ENV_OTEL_TRACES_ENDPOINT, otlp_receiver.traces_url)
    chainsight.configure(service="healthy", registry=registry, exporter="otlp:http")
    for i in range(300):
        chain(i)

    finished, elapsed = timed_shutdown(5.0)

    assert finished
    assert elapsed < 5.0
    assert len(received_ids(otlp_receiver)) == 300 * SPANS_PER_CHAIN
    assert failures(registry) == 0


# --- the exit hook and the start-up switch, in real child processes -------------------------

_EXIT_CHILD = textwrap.dedent(
    """
    import sys, time
    import chainsight

    @chainsight.traced_stage("tool", name="work")
    def work(i):
        return i

    chainsight.configure(service="exit-hook", exporter="otlp:http")
    for i in range(500):
        with chainsight.request("exiting"):
            work(i)
    # What follows is the interpreter's exit: only chainsight's atexit hook flushes.
    print(time.time(), flush=True)
    """
)


@pytest.mark.parametrize("backend", ["dead", "slow"])
def test_atexit_hook_exits_within_the_shutdown_timeout(
    backend: str, otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    if backend == "dead":
        endpoint = f"http://127.0.0.1:{free_port()}/v1/traces"
    else:
        otlp_receiver.set_mode("slow", delay=30.0)  # beyond the exporter's own 5 s timeout
        endpoint = otlp_receiver.traces_url
    timeout = 1.5
    env = {
        **os.environ,
        n.ENV_OTEL_TRACES_ENDPOINT: endpoint,
        "CHAINSIGHT_SHUTDOWN_TIMEOUT": str(timeout),
    }
    with subprocess.Popen(
        [sys.executable, "-c", _EXIT_CHILD],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        marker = proc.stdout.readline()
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        exited_at = time.time()
    assert marker, f"the child died before its exit: {stderr}"
    done_at = float(marker)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert exited_at - done_at < timeout + EXIT_SLACK_S, (
        f"the exit hook held the process {exited_at - done_at:.2f} s with "
        f"CHAINSIGHT_SHUTDOWN_TIMEOUT={timeout}"
    )


_SWITCH_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from prometheus_client import CollectorRegistry, generate_latest
    import chainsight

    calls = []

    @chainsight.traced_stage("retrieval", system="qdrant")
    def retrieve(q):
        calls.append(("sync", repr(chainsight.current_stage())))
        return [q]

    @chainsight.traced_stage("model", provider="openai", model="gpt-4o-mini")
    async def generate(docs):
        calls.append(("async", repr(chainsight.current_stage())))
        return "answer"

    @chainsight.traced_stage("tool", name="stream")
    def stream():
        calls.append(("gen", repr(chainsight.current_stage())))
        yield 1
        yield 2

    registry = CollectorRegistry()
    chainsight.configure(service="switch", exporter="otlp:http", registry=registry)

    async def main():
        async with chainsight.request("switched", tenant="acme") as root:
            calls.append(("request", repr(root)))
            docs = retrieve("q")
            answer = await generate(docs)
            chunks = list(stream())
        return docs, answer, chunks

    result = asyncio.run(main())
    finished = chainsight.shutdown(timeout=5.0)
    samples = [
        s.name
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(("chainsight_requests", "chainsight_stage_duration",
                              "gen_ai_client_operation_duration"))
    ]
    print(json.dumps({"result": result, "calls": calls, "finished": finished,
                      "samples": samples, "enabled": chainsight.config.state.current().enabled}))
    """
)


@pytest.mark.parametrize("enabled_env", ["false", None])
def test_chainsight_enabled_false_at_start_up_makes_stages_straight_calls(
    enabled_env: str | None, otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    env = {**os.environ, n.ENV_OTEL_TRACES_ENDPOINT: otlp_receiver.traces_url}
    env.pop(n.ENV_ENABLED, None)
    if enabled_env is not None:
        env[n.ENV_ENABLED] = enabled_env
    done = subprocess.run(
        [sys.executable, "-c", _SWITCH_CHILD],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # The functions ran and returned exactly what they return undecorated.
    assert out["result"] == [["q"], "answer", [1, 2]]
    kinds = [kind for kind, _ in out["calls"]]
    assert kinds == ["request", "sync", "async", "gen"]
    noop = "<chainsight.Stage (none)>"
    if enabled_env == "false":
        assert out["enabled"] is False
        assert all(stage == noop for _, stage in out["calls"]), out["calls"]
        assert out["samples"] == [], "a disabled chainsight recorded metrics"
        assert otlp_receiver.request_count == 0, "a disabled chainsight sent spans"
    else:  # the control: the same script, switched on, is seen by every backend
        assert out["enabled"] is True
        assert all(stage != noop for _, stage in out["calls"]), out["calls"]
        assert any(name.startswith("chainsight_requests") for name in out["samples"])
        assert len(received_ids(otlp_receiver)) == 4


# --- configure() while stages run -------------------------------------------------------------


def _release(k: int, capture: bool) -> dict[str, str]:
    # Every value names the same generation k, and the id names the capture setting too, so a
    # span mixing two configure() calls shows as a mismatch.
    return {"id": f"r{k}-c{int(capture)}", "model": f"m{k}", "prompt": f"p{k}"}


def _check_span(span: dict[str, Any]) -> str | None:
    attrs = span["attributes"]
    release_id = attrs.get(n.CS_RELEASE_ID)
    model = attrs.get(n.CS_RELEASE_PREFIX + "model")
    prompt = attrs.get(n.CS_RELEASE_PREFIX + "prompt")
    if release_id is None or model is None or prompt is None:
        return f"missing release attributes: {release_id!r} {model!r} {prompt!r}"
    generation, _, capture = release_id.partition("-c")
    if model != f"m{generation[1:]}" or prompt != f"p{generation[1:]}":
        return f"release attributes from two snapshots: {release_id} {model} {prompt}"
    if span["name"] == "prompt answer":
        has_content = n.GEN_AI_INPUT_MESSAGES in attrs
        if has_content != (capture == "1"):
            return f"content captured={has_content} under release {release_id}"
    return None


@pytest.mark.slow
def test_configure_hammered_while_stages_run_keeps_every_span_consistent(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    monkeypatch.setenv(n.ENV_OTEL_TRACES_ENDPOINT, otlp_receiver.traces_url)
    chainsight.configure(
        service="hammer", registry=registry, exporter="otlp:http", release=_release(0, False)
    )
    stop = threading.Event()
    errors: list[BaseException] = []
    app_errors = [0]
    generation = [0]
    lock = threading.Lock()

    def reconfigure(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                with lock:
                    generation[0] += 1
                    k = generation[0]
                capture = rng.random() < 0.5
                chainsight.configure(
                    release=_release(k, capture),
                    capture_content=capture,
                    enabled=k % 13 != 0,  # now and then switched off and on again
                )
                time.sleep(rng.uniform(0, 0.003))
        except BaseException as exc:
            errors.append(exc)

    def run_stages(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                try:
                    with chainsight.request("hammered", tenant="acme") as root:
                        retrieve("q")
                        with chainsight.stage("prompt", name="answer") as st:
                            st.record_content(input_messages="what is our refund policy?")
                            time.sleep(rng.uniform(0, 0.002))
                        generate(["d"])
                        if rng.random() < 0.1:
                            raise AppError(root.name)
                except AppError:
                    app_errors[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reconfigure, args=(s,)) for s in range(3)]
    threads += [threading.Thread(target=run_stages, args=(100 + s,)) for s in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(4.0)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert errors == [], errors
    assert app_errors[0] > 0
    assert generation[0] > 100, "configure() was not called often enough to mean anything"
    assert chainsight.shutdown(timeout=5.0)
    spans = otlp_receiver.spans()
    assert len(spans) > 500
    bad = [(span["name"], problem) for span in spans if (problem := _check_span(span))]
    assert bad == [], f"{len(bad)} of {len(spans)} spans inconsistent, e.g. {bad[:5]}"


@pytest.mark.slow
def test_reconfiguring_sample_ratio_in_flight_loses_no_span_uncounted(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new sample_ratio builds a new tracer provider and retires the old one while stages that
    # started under it are still running.
    registry = CollectorRegistry()
    monkeypatch.setenv(n.ENV_OTEL_TRACES_ENDPOINT, otlp_receiver.traces_url)
    chainsight.configure(service="ratio", registry=registry, exporter="otlp:http")
    stop = threading.Event()
    errors: list[BaseException] = []
    produced = [0] * 6

    def reconfigure() -> None:
        try:
            k = 0
            while not stop.is_set():
                k += 1
                chainsight.configure(sample_ratio=1.0 if k % 2 else 0.5)
                time.sleep(0.05)
        except BaseException as exc:
            errors.append(exc)

    def run_chains(slot: int) -> None:
        rng = random.Random(slot)
        try:
            while not stop.is_set():
                with chainsight.request("ratio") as root:
                    retrieve("q")
                    with chainsight.stage("prompt", name="answer"):
                        time.sleep(rng.uniform(0, 0.01))  # in flight across a configure()
                    generate(["d"])
                if root.span_id is not None:  # sampled: the children follow their parent
                    produced[slot] += SPANS_PER_CHAIN
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reconfigure)]
    threads += [threading.Thread(target=run_chains, args=(s,)) for s in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(4.0)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert errors == [], errors
    assert chainsight.shutdown(timeout=5.0)
    # This test is about stages in flight across a change; the process lives on, so the retired
    # providers may finish their grace period and flush (what shutdown() owes them is tested
    # below).
    for thread in threading.enumerate():
        if thread.name == "chainsight-retire":
            thread.join(30)
    settle(lambda: (failures(registry), len(otlp_receiver.spans())))
    received = received_ids(otlp_receiver)
    total = sum(produced)
    assert total > 500
    assert len(received) + failures(registry) == total, (
        f"produced {total}, received {len(received)}, counted {failures(registry)}: "
        f"{total - len(received) - failures(registry):.0f} spans vanished"
    )


def test_stage_outliving_its_retired_provider_is_counted_not_lost(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    monkeypatch.setenv(n.ENV_OTEL_TRACES_ENDPOINT, otlp_receiver.traces_url)
    # A short grace so the old provider is shut down while the stage below is still open.
    monkeypatch.setattr(lifecycle, "RETIRE_GRACE_S", 0.2)
    chainsight.configure(service="outlive", registry=registry, exporter="otlp:http")
    with chainsight.request("long") as root:
        with chainsight.stage("prompt", name="answer"):
            pass
        # A new service name needs a new provider (a sample_ratio change no longer does).
        chainsight.configure(service="outlive-2")
        retired = [t for t in threading.enumerate() if t.name == "chainsight-retire"]
        for thread in retired:
            thread.join(10)
        assert retired, "the old provider was not retired"
        assert root.span_id is not None
    assert chainsight.shutdown(timeout=5.0)
    settle(lambda: (failures(registry), len(otlp_receiver.spans())))
    names = [span["name"] for span in otlp_receiver.spans()]
    assert names == ["prompt answer"]
    assert failures(registry) == 1, "the request span ended after its provider shut down"


def test_shutdown_right_after_a_provider_change_accounts_for_the_old_provider(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An app that changes its service name and exits soon after: when shutdown() returns, every span
    # of the retired provider must already be sent or counted, since the process may end now.
    registry = CollectorRegistry()
    monkeypatch.setenv(n.ENV_OTEL_TRACES_ENDPOINT, otlp_receiver.traces_url)
    chainsight.configure(service="exit-after-change", registry=registry, exporter="otlp:http")
    for i in range(100):
        chain(i)
    chainsight.configure(service="renamed")  # retires the provider holding those 400 spans

    finished, elapsed = timed_shutdown(5.0)

    assert finished
    assert elapsed < 5.0 + SHUTDOWN_SLACK_S
    received = received_ids(otlp_receiver)
    assert len(received) + failures(registry) == 100 * SPANS_PER_CHAIN, (
        f"at shutdown() return: received {len(received)}, counted {failures(registry)} of "
        f"{100 * SPANS_PER_CHAIN}; the rest still waits on the retired provider"
    )
