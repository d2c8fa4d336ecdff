"""The soak test: mixed request chains under failing backends, for ``CHAINSIGHT_SOAK_SECONDS``.

A child process runs the application: sync threads and asyncio tasks running request chains
(retrieval, rerank, prompt, model under a hard Redis-backed budget, validation) that fail now
and then with the application's own exceptions, while another thread calls ``configure()``
over and over (release, content capture, sample ratio). This process plays the world around
it: it stops, restarts, slows and breaks the real OTLP receiver, SIGKILLs and restarts the real
redis-server, and scrapes ``/metrics`` all along.

Afterwards it checks what ``docs/operations.md`` promises: no exception other than the
application's own and ``BudgetExceeded`` reached the application; every sampled span was either
received (deduplicated by span id) or counted in ``chainsight_export_failures_total``; RSS stayed
under ``RSS_PEAK_BOUND_MB`` and grew by less than ``RSS_GROWTH_BOUND_MB``; the final
``shutdown()`` finished within its timeout, and the process exited promptly after it.

``make test`` runs 20 seconds (the default); ``make soak`` runs it with
``CHAINSIGHT_SOAK_SECONDS=120``. The child writes its figures to a JSON file, printed at the end.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import random
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import chainsight
from chainsight import _names as n
from chainsight.config import state as _config

if TYPE_CHECKING:
    from tests.integration._servers import OTLPReceiver, RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOAK_SECONDS_ENV = "CHAINSIGHT_SOAK_SECONDS"
CHILD_ENV = "CHAINSIGHT_SOAK_CHILD"
REPO_ROOT = Path(__file__).resolve().parents[2]
SHUTDOWN_TIMEOUT_S = 5.0
SHUTDOWN_SLACK_S = 0.5
# After the final shutdown() the exit hook runs again with CHAINSIGHT_SHUTDOWN_TIMEOUT (3 s).
EXIT_BOUND_S = 3.0 + 2.0
# Memory, measured from /proc/self/status (docs/operations.md has the figures). Peak: the
# queues of the current and of retired providers fill during an outage, and that is bounded.
# Growth: RSS at the end (backend healthy, backlog drained) against the highest RSS of the first
# quarter (warm-up and one outage); a leak per request or per configure() shows here.
RSS_PEAK_BOUND_MB = 256.0
RSS_GROWTH_BOUND_MB = 32.0
RELEASES = 5  # releases cycle, as deployments do; a new label value per call would be a test bug
FAILURES = n.M_EXPORT_FAILURES + "_total"


def soak_seconds() -> float:
    """The soak's duration from ``CHAINSIGHT_SOAK_SECONDS`` (default 20)."""
    raw = os.environ.get(SOAK_SECONDS_ENV, "20")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"{SOAK_SECONDS_ENV}={raw!r} is not a number of seconds, e.g. 120"
        ) from None
    if value < 5:
        raise ValueError(f"{SOAK_SECONDS_ENV}={raw!r} is too short to mean anything; use >= 5")
    return value


# --- the application (runs in the child process) --------------------------------------------


class UserError(Exception):
    """Base of the application's own exceptions; they must reach the application unchanged."""


class VectorStoreDown(UserError, ConnectionError):
    pass


class ProviderTimeout(UserError, TimeoutError):
    pass


class InvalidAnswer(UserError, ValueError):
    pass


@chainsight.traced_stage("retrieval", system="qdrant", collection="kb")
def retrieve(rng: random.Random) -> list[str]:
    time.sleep(rng.uniform(0, 0.002))
    if rng.random() < 0.03:
        raise VectorStoreDown("qdrant refused the connection")
    chainsight.current_stage().record_documents(count=3, scores=[0.9, 0.5, 0.2])
    return ["a", "b", "c"]


@chainsight.traced_stage("model", provider="openai", model="gpt-4o-mini")
def generate(rng: random.Random, prompt: str) -> str:
    time.sleep(rng.uniform(0, 0.003))
    if rng.random() < 0.03:
        raise ProviderTimeout("the provider did not answer in 30 s")
    chainsight.current_stage().record_usage(input_tokens=1000, output_tokens=200)
    return prompt.upper()


@chainsight.traced_stage("validation", validator="json")
def validate(rng: random.Random, answer: str) -> str:
    if rng.random() < 0.03:
        raise InvalidAnswer("the answer is not JSON")
    return answer


@chainsight.traced_stage("retrieval", system="pgvector", collection="faq")
async def aretrieve(rng: random.Random) -> list[str]:
    await asyncio.sleep(rng.uniform(0, 0.002))
    if rng.random() < 0.03:
        raise VectorStoreDown("pgvector is down")
    return ["x", "y"]


@chainsight.traced_stage("model", provider="anthropic", model="claude-3-5-haiku-20241022")
async def agenerate(rng: random.Random, prompt: str) -> str:
    await asyncio.sleep(rng.uniform(0, 0.003))
    if rng.random() < 0.03:
        raise ProviderTimeout("overloaded")
    chainsight.current_stage().record_usage(input_tokens=800, output_tokens=150)
    return prompt


class Tally:
    """What the application saw, per worker (merged at the end; no shared writes)."""

    def __init__(self) -> None:
        self.requests = 0
        self.produced = 0
        self.user_errors = 0
        self.budget_refusals = 0
        self.unexpected: list[str] = []
        self.traces: list[str] = []

    def settle(self, root: chainsight.Stage | None, spans: int, exc: BaseException | None) -> None:
        """Book one finished request; ``spans`` counts every stage opened in it, root included."""
        self.requests += 1
        if root is not None and root.trace_id is not None:
            # Children follow a sampled parent, so all of the request's spans were produced.
            self.produced += spans
            self.traces.append(root.trace_id)
        if exc is None:
            return
        if isinstance(exc, chainsight.BudgetExceeded):
            self.budget_refusals += 1
        elif isinstance(exc, UserError):
            self.user_errors += 1
        else:
            self.unexpected.append("".join(traceback.format_exception(exc)))


def sync_chain(rng: random.Random, tally: Tally) -> None:
    """retrieval → rerank → prompt → model → validation, sync."""
    spans = 1
    root: chainsight.Stage | None = None
    try:
        with chainsight.request("soak_sync", tenant=rng.choice("abc"), feature="copilot") as root:
            spans += 1
            docs = retrieve(rng)
            spans += 1
            with chainsight.stage("rerank", name="bge-reranker"):
                docs = sorted(docs)
            spans += 1
            with chainsight.stage("prompt", name="answer") as st:
                st.record_content(input_messages="what is the refund policy?")
                prompt = " ".join(docs)
            spans += 1
            answer = generate(rng, prompt)
            spans += 1
            validate(rng, answer)
    except BaseException as exc:
        tally.settle(root, spans, exc)
        return
    tally.settle(root, spans, None)


async def async_chain(rng: random.Random, tally: Tally) -> None:
    """retrieval → prompt → model, on the event loop."""
    spans = 1
    root: chainsight.Stage | None = None
    try:
        async with chainsight.request("soak_async", tenant=rng.choice("abc")) as root:
            spans += 1
            docs = await aretrieve(rng)
            spans += 1
            async with chainsight.stage("prompt", name="answer"):
                prompt = " ".join(docs)
            spans += 1
            await agenerate(rng, prompt)
    except BaseException as exc:
        tally.settle(root, spans, exc)
        return
    tally.settle(root, spans, None)


def _release(k: int) -> dict[str, str]:
    return {"id": f"r{k}", "model": f"m{k}", "prompt": f"p{k}"}


def _rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS line in /proc/self/status; this test needs Linux /proc")


def soak_child() -> None:
    """The application under soak; run in a fresh interpreter by the test below."""
    args = json.loads(os.environ[CHILD_ENV])
    seconds: float = args["seconds"]
    os.environ[n.ENV_OTEL_TRACES_ENDPOINT] = args["traces_url"]
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    chainsight.configure(
        service="soak",
        exporter="otlp:http",
        registry=registry,
        metrics_port=args["metrics_port"],
        release=_release(0),
        budgets=[chainsight.Budget("soak", args["budget_usd"], "1h", hard=True)],
        budget_store=chainsight.RedisBudgetStore(
            args["redis_url"], key_prefix=f"soak:{os.getpid()}:", timeout=0.05, cooldown=0.5
        ),
    )
    # If anything hangs, the stacks of every thread land in stderr before the test gives up.
    faulthandler.dump_traceback_later(seconds + 45, exit=False)
    print("started", flush=True)
    stop = threading.Event()
    tallies: list[Tally] = []
    configures = [0]
    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()

    def sync_worker(seed: int) -> None:
        rng, tally = random.Random(seed), Tally()
        tallies.append(tally)
        while not stop.is_set():
            sync_chain(rng, tally)

    def async_worker(seed: int) -> None:
        tally = Tally()
        tallies.append(tally)

        async def task(rng: random.Random) -> None:
            while not stop.is_set():
                await async_chain(rng, tally)

        async def main() -> None:
            await asyncio.gather(*(task(random.Random(seed * 100 + i)) for i in range(12)))

        asyncio.run(main())

    def reconfigure() -> None:
        rng = random.Random(7)
        k = 0
        try:
            while not stop.wait(rng.uniform(0.1, 0.4)):
                k += 1
                chainsight.configure(
                    release=_release(k % RELEASES),
                    capture_content=k % 3 == 0,
                    sample_ratio=rng.choice((1.0, 1.0, 0.5)),
                )
                configures[0] += 1
        except BaseException:
            failed = Tally()
            failed.unexpected.append("configure(): " + traceback.format_exc())
            tallies.append(failed)

    def sample_memory() -> None:
        while not stop.wait(0.5):
            samples.append((time.monotonic() - started, _rss_kb(), threading.active_count()))

    threads = [threading.Thread(target=sync_worker, args=(s,)) for s in range(6)]
    threads += [
        threading.Thread(target=async_worker, args=(99,)),
        threading.Thread(target=reconfigure),
        threading.Thread(target=sample_memory),
    ]
    for thread in threads:
        thread.daemon = True  # a stuck worker is reported below, and must not block the exit
        thread.start()
    stop.wait(seconds)
    stop.set()
    deadline = time.monotonic() + 30
    stuck: list[str] = []
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            frame = sys._current_frames().get(thread.ident or 0)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "?"
            stuck.append(f"{thread.name} did not stop within 30 s:\n{stack}")
    print("stopping", flush=True)
    t0 = time.monotonic()
    finished = chainsight.shutdown(timeout=SHUTDOWN_TIMEOUT_S)
    shutdown_s = time.monotonic() - t0
    total = Tally()
    for tally in tallies:
        total.requests += tally.requests
        total.produced += tally.produced
        total.user_errors += tally.user_errors
        total.budget_refusals += tally.budget_refusals
        total.unexpected += tally.unexpected
        total.traces += tally.traces
    total.unexpected += stuck
    result = {
        "requests": total.requests,
        "produced": total.produced,
        "user_errors": total.user_errors,
        "budget_refusals": total.budget_refusals,
        "unexpected": total.unexpected[:5],
        "unexpected_count": len(total.unexpected),
        "traces": total.traces,
        "counted": registry.get_sample_value(FAILURES, {n.L_SIGNAL: "traces"}) or 0.0,
        "configures": configures[0],
        "shutdown_finished": finished,
        "shutdown_seconds": shutdown_s,
        "memory": samples,
        "threads_alive_after": threading.active_count(),
        "release_at_end": _config.current().release_id,
    }
    result["written_at"] = time.time()
    Path(args["out"]).write_text(json.dumps(result), encoding="utf-8")
    # From here only the interpreter's exit (and chainsight's exit hook) remains; should that
    # hang, the stacks go to stderr and the process ends with an error.
    faulthandler.cancel_dump_traceback_later()
    faulthandler.dump_traceback_later(EXIT_BOUND_S * 4, exit=True)


# --- the world around it (this process) ------------------------------------------------------


class Drain:
    """Takes accepted export requests off the receiver as they come, keeping only span ids."""

    def __init__(self, receiver: OTLPReceiver) -> None:
        self.receiver = receiver
        self.span_ids: set[str] = set()
        self.trace_ids: set[str] = set()
        self.spans_received = 0  # before deduplication
        self.inconsistent: list[str] = []

    def __call__(self) -> None:
        requests = self.receiver.trace_requests
        # Appends go to the end; taking a prefix and deleting it loses no concurrent arrival.
        taken = requests[: len(requests)]
        del requests[: len(taken)]
        for request in taken:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans_received += 1
                        self.span_ids.add(span.span_id.hex())
                        self.trace_ids.add(span.trace_id.hex())
                        self._check(span)

    def _check(self, span: Any) -> None:
        attrs = {kv.key: kv.value.string_value for kv in span.attributes}
        release = attrs.get(n.CS_RELEASE_ID, "")
        k = release[1:]
        if (
            attrs.get(n.CS_RELEASE_PREFIX + "model") != f"m{k}"
            or attrs.get(n.CS_RELEASE_PREFIX + "prompt") != f"p{k}"
        ):
            self.inconsistent.append(f"{span.name}: {sorted(attrs.items())}")


def _inject_faults(
    receiver: OTLPReceiver, redis_server: RedisServer, until: float, stop: threading.Event
) -> list[tuple[float, str]]:
    events: list[tuple[str, Any]] = [
        ("otlp receiver stopped", receiver.stop),
        ("otlp receiver started", receiver.start),
        ("otlp slow 1 s", lambda: receiver.set_mode("slow", delay=1.0)),
        ("otlp ok", lambda: receiver.set_mode("ok")),
        ("otlp 503", lambda: receiver.set_mode("error", status=503)),
        ("redis SIGKILL", redis_server.kill),
        ("otlp ok", lambda: receiver.set_mode("ok")),
        ("redis restarted", redis_server.start),
        ("otlp 400", lambda: receiver.set_mode("error", status=400)),
        ("otlp receiver stopped", receiver.stop),
        ("redis SIGKILL", redis_server.kill),
        ("otlp receiver started", receiver.start),
        ("otlp ok", lambda: receiver.set_mode("ok")),
        ("redis restarted", redis_server.start),
    ]
    log: list[tuple[float, str]] = []
    start = time.monotonic()
    step = (until - start) / len(events)
    for i, (name, action) in enumerate(events):
        if stop.wait(max(0.0, start + (i + 1) * step - time.monotonic())):
            break
        action()
        log.append((round(time.monotonic() - start, 2), name))
    # Healthy for the rest of the run, whatever happened above.
    receiver.start()
    receiver.set_mode("ok")
    redis_server.start()
    return log


def _scrape(url: str, until: float, stop: threading.Event, outcome: dict[str, Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    while not stop.is_set() and time.monotonic() < until:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
                body = response.read().decode("utf-8")
            families = {f.name for f in text_string_to_metric_families(body)}
            outcome["ok"] += 1
            outcome["families"] = len(families)
        except (urllib.error.URLError, ConnectionError, ValueError) as exc:
            if outcome["ok"]:  # before the first success the child is still starting
                outcome["errors"].append(repr(exc))
        stop.wait(0.1)


def test_soak(otlp_receiver: OTLPReceiver, redis_server: RedisServer, tmp_path: Path) -> None:
    from tests.integration._servers import free_port

    seconds = soak_seconds()
    out = tmp_path / "soak.json"
    metrics_port = free_port()
    child_args = {
        "seconds": seconds,
        "traces_url": otlp_receiver.traces_url,
        "redis_url": redis_server.url,
        "metrics_port": metrics_port,
        # About two seconds of model calls: spent, refused, then reset by each Redis restart.
        "budget_usd": 0.1,
        "out": str(out),
    }
    env = {
        **os.environ,
        CHILD_ENV: json.dumps(child_args),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    drain = Drain(otlp_receiver)
    stop = threading.Event()
    scraped: dict[str, Any] = {"ok": 0, "errors": []}
    # The SDK logs every failed export to stderr: a file, not a pipe nobody reads during the run,
    # whose full buffer would block every thread that logs.
    stderr_path = tmp_path / "child.stderr"
    with (
        stderr_path.open("w", encoding="utf-8") as stderr_file,
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from tests.integration.test_soak import soak_child; soak_child()",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
        ) as proc,
    ):
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        if first != "started":
            proc.kill()
            proc.wait()
            tail = stderr_path.read_text(encoding="utf-8")[-3000:]
            pytest.fail(f"the soak child did not start: {first!r} {tail}")
        until = time.monotonic() + seconds
        faults: list[tuple[float, str]] = []
        injector = threading.Thread(
            target=lambda: faults.extend(
                _inject_faults(otlp_receiver, redis_server, until - 0.2 * seconds, stop)
            )
        )
        scraper = threading.Thread(
            target=_scrape,
            args=(f"http://127.0.0.1:{metrics_port}/metrics", until - 0.5, stop, scraped),
        )
        injector.start()
        scraper.start()
        try:
            while proc.poll() is None and time.monotonic() < until + 60:
                drain()
                time.sleep(0.1)
            exited_at = time.time()
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        finally:
            stop.set()
            injector.join(30)
            scraper.join(30)
    drain()
    stderr = stderr_path.read_text(encoding="utf-8")
    assert proc.returncode == 0, f"the soak child failed:\n{stderr[-5000:]}"
    result = json.loads(out.read_text(encoding="utf-8"))
    memory = result.pop("memory")
    traces = set(result.pop("traces"))
    first_quarter = [rss / 1024 for t, rss, _ in memory if t <= seconds / 4]
    last_tenth = sorted(rss / 1024 for t, rss, _ in memory if t >= seconds * 0.9)
    rss_peak_mb = max(rss / 1024 for _, rss, _ in memory)
    rss_end_mb = last_tenth[len(last_tenth) // 2] if last_tenth else float("nan")
    rss_growth_mb = rss_end_mb - max(first_quarter) if first_quarter else float("nan")
    counted = result["counted"]
    received = len(drain.span_ids)
    figures = {
        **{k: v for k, v in result.items() if k != "unexpected"},
        "seconds": seconds,
        "received_unique": received,
        "received_with_duplicates": drain.spans_received,
        "rss_first_quarter_max_mb": round(max(first_quarter), 1) if first_quarter else None,
        "rss_end_mb": round(rss_end_mb, 1),
        "rss_peak_mb": round(rss_peak_mb, 1),
        "rss_growth_mb": round(rss_growth_mb, 1),
        "threads_max": max(th for _, _, th in memory),
        "scrapes": scraped["ok"],
        "exit_seconds_after_shutdown": round(exited_at - result["written_at"], 2),
        "faults": faults,
        # The SDK logs what it drops on its own (queue full, already shut down): a lead when
        # the accounting below does not add up.
        "sdk_drop_logs": sorted(
            {line.strip()[:160] for line in stderr.splitlines() if "dropping" in line.lower()}
        ),
    }
    print("\nsoak figures:", json.dumps(figures, indent=1))

    assert result["unexpected_count"] == 0, "\n".join(result["unexpected"])
    assert result["user_errors"] > 0, "the application's own errors never happened"
    assert result["budget_refusals"] > 0, "the hard budget never refused a call"
    assert result["configures"] >= seconds, "configure() was not called repeatedly"
    assert len(faults) == 14, f"the fault schedule did not run to the end: {faults}"
    assert scraped["errors"] == [], scraped["errors"][:5]
    assert scraped["ok"] >= seconds, "/metrics was not scraped all along"
    assert drain.inconsistent == [], drain.inconsistent[:5]
    assert drain.trace_ids <= traces, "the receiver got spans of traces nobody produced"
    assert result["shutdown_finished"], "the final flush did not finish with a healthy backend"
    assert result["shutdown_seconds"] < SHUTDOWN_TIMEOUT_S + SHUTDOWN_SLACK_S
    exit_s = exited_at - result["written_at"]
    assert exit_s < EXIT_BOUND_S, f"the child took {exit_s:.1f} s to exit after shutdown()"
    assert first_quarter, "no memory samples"
    assert last_tenth, "no memory samples"
    assert rss_peak_mb < RSS_PEAK_BOUND_MB, f"RSS peaked at {rss_peak_mb:.1f} MB"
    assert rss_growth_mb < RSS_GROWTH_BOUND_MB, f"RSS grew {rss_growth_mb:.1f} MB"
    assert received + counted == result["produced"], (
        f"produced {result['produced']}, received {received}, counted {counted:.0f}: "
        f"{result['produced'] - received - counted:+.0f} spans unaccounted"
    )
