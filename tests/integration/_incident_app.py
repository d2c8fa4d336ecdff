"""A RAG support app written against chainsight's public API, and the world it talks to.

The acceptance tests of ``chainsight triage`` (tests/integration/test_triage_incidents.py) run it
as an on-call engineer would meet it: a process serving steady traffic, healthy at first, then
an incident. The app uses the real ``openai`` (``AsyncOpenAI``) and ``qdrant-client``
(``AsyncQdrantClient``) clients against a local HTTP server on 127.0.0.1 that speaks their wire
protocols (OpenAI chat completions, Qdrant's ``points/query``) and injects the incident:

- ``healthy``: nothing happens (rare app bugs and validation failures, as in life);
- ``release``: at the onset the app switches to prompt release ``answer@8``, whose answers
  fail validation 25 % of the time (0.4 % on ``answer@7``);
- ``retries``: the provider answers 503 to 8 % of calls; the app retries once (marked
  ``attempt=2``) and half of the retries fail again;
- ``long``: the vector store slows down five-fold for two thirds of the run;
- ``fallback``: the provider answers 503 to 30 % of calls and the app serves a canned answer
  through a request-level ``fallback()``;
- ``slow``: the provider slows down 2.4-fold.

Run: ``python -m tests.integration._incident_app SCENARIO --spans F --port-file P --go-file G
--truth T --healthy S --fault S --rps R``. The truth file holds what users really got.

The world answers slowly (a model call 1.0-1.4 s, a search 250-400 ms) so that the event loop's
lag on a busy machine, which every span's duration includes, stays small beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
from qdrant_client import AsyncQdrantClient

import chainsight

SCENARIOS = ("healthy", "release", "retries", "long", "fallback", "slow")
CANNED = "Sorry, I cannot answer right now; a human will follow up."


@dataclass
class Plan:
    """What the world does; ``active`` turns the scenario's incident on."""

    scenario: str
    seed: int
    active: bool = False
    sticky: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def roll(self) -> float:
        with self.lock:
            return self.rng.random()

    def provider_delay(self) -> float:
        slow = 2.4 if self.active and self.scenario == "slow" else 1.0
        return (1.0 + 0.4 * self.roll()) * slow

    def vector_delay(self) -> float:
        slow = 5.0 if self.active and self.scenario == "long" else 1.0
        return (0.25 + 0.15 * self.roll()) * slow

    def provider_fails(self, user: str) -> bool:
        """503 or not; in ``retries`` a user whose call failed fails again half of the time."""
        if not self.active:
            return False
        if self.scenario == "fallback":
            return self.roll() < 0.30
        if self.scenario != "retries":
            return False
        with self.lock:
            if user in self.sticky:
                self.sticky.discard(user)
                return self.rng.random() < 0.5
            if self.rng.random() < 0.08:
                self.sticky.add(user)
                return True
        return False

    def bad_answer(self, prompt: str) -> bool:
        return self.roll() < (0.25 if "answer@8" in prompt else 0.004)


def _chat(content: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{random.getrandbits(48):x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 420, "completion_tokens": 60, "total_tokens": 480},
    }


POINTS = {
    "result": {"points": [{"id": i, "version": 1, "score": 0.9 - i / 10} for i in range(3)]},
    "status": "ok",
    "time": 0.001,
}


class World:
    """The provider and the vector store, on one local HTTP server."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        world = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, {"title": "qdrant", "version": "1.12.0"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                status, payload, delay = world.answer(self.path, body)
                time.sleep(delay)
                self._send(status, payload)

            def _send(self, status: int, payload: object) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the clients open their pools at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, object, float]:
        plan = self.plan
        if path.startswith("/collections/"):
            return 200, POINTS, plan.vector_delay()
        delay = plan.provider_delay()
        if plan.provider_fails(str(body.get("user", ""))):
            error = {"message": "The server is overloaded", "type": "server_error", "code": None}
            return 503, {"error": error}, delay / 4
        prompt = json.dumps(body.get("messages", []))
        if plan.bad_answer(prompt):
            return 200, _chat("I think the answer is somewhere in the docs."), delay
        return 200, _chat(json.dumps({"answer": "Reset it under Settings > Security."})), delay


@dataclass
class Truth:
    """What users got, counted by the app itself."""

    served: int = 0
    failed: int = 0
    fell_back: int = 0
    served_fault: int = 0
    failed_fault: int = 0
    fell_back_fault: int = 0


class SupportApp:
    """The app: retrieve, assemble the prompt, generate (with a retry), validate."""

    def __init__(self, world_url: str, plan: Plan) -> None:
        self.qdrant = AsyncQdrantClient(url=world_url, timeout=10, check_compatibility=False)
        self.llm = openai.AsyncOpenAI(
            api_key="sk-test", base_url=f"{world_url}/v1", max_retries=0, timeout=10
        )
        self.plan = plan
        self.prompt = "answer@7"
        self.truth = Truth()

    @chainsight.traced_stage("retrieval", name="search_kb", system="qdrant", collection="kb")
    async def retrieve(self, question: str) -> list[Any]:
        result = await self.qdrant.query_points("kb", query=[0.1, 0.2, 0.3], limit=3)
        chainsight.current_stage().record_documents(
            count=len(result.points), scores=[p.score for p in result.points]
        )
        return list(result.points)

    def assemble(self, question: str, points: list[Any], user: str) -> list[dict[str, str]]:
        with chainsight.stage("prompt", name="assemble_prompt", prompt_version=self.prompt):
            if user.endswith("7") and self.plan.roll() < 0.03:
                # A real app's rare bug (0.3 % of requests): healthy traffic has it too.
                raise TypeError("can only concatenate str (not 'NoneType') to str")
            system = f"You are a support assistant. Prompt release {self.prompt}. Answer in JSON."
            context = " ".join(str(p.id) for p in points)
            return [
                {"role": "system", "content": system},
                {"role": "user", "content": f"{question}\n\nContext: {context}"},
            ]

    async def generate(self, messages: list[dict[str, str]], user: str) -> str:
        """One model call, retried once on a provider error; the retry says ``attempt=2``."""
        for attempt in (1, 2):
            try:
                async with chainsight.stage(
                    "model", name="generate", provider="openai", model="gpt-4o", attempt=attempt
                ) as stage:
                    resp = await self.llm.chat.completions.create(
                        model="gpt-4o",
                        messages=messages,  # type: ignore[arg-type]
                        user=user,
                    )
                    stage.record_response(resp)
                    return resp.choices[0].message.content or ""
            except openai.APIStatusError:
                if attempt == 2 or self.plan.scenario != "retries":
                    raise
        raise AssertionError("unreachable")

    def validate(self, answer: str) -> bool:
        with chainsight.stage("validation", name="validate_answer", validator="json") as v:
            try:
                passed = "answer" in json.loads(answer)
            except ValueError:
                passed = False
            v.record_validation(passed=passed, reason="no 'answer' field")
            return passed

    async def handle(self, number: int, in_fault: bool) -> None:
        user = f"user-{number}"
        outcome = "failed"
        try:
            async with chainsight.request("answer_ticket", tenant="acme", feature="support") as req:
                points = await self.retrieve("How do I reset my password?")
                messages = self.assemble("How do I reset my password?", points, user)
                try:
                    answer = await self.generate(messages, user)
                except openai.APIError:
                    if self.plan.scenario != "fallback":
                        raise
                    req.fallback(to="canned_answer", reason="provider unavailable")
                    answer, outcome = CANNED, "fell_back"
                if outcome != "fell_back":
                    outcome = "served" if self.validate(answer) else "failed"
        except Exception:
            outcome = "failed"
        self._count(outcome, in_fault)

    def _count(self, outcome: str, in_fault: bool) -> None:
        truth = self.truth
        setattr(truth, outcome, getattr(truth, outcome) + 1)
        if in_fault:
            setattr(truth, f"{outcome}_fault", getattr(truth, f"{outcome}_fault") + 1)


async def warm_up(app: SupportApp) -> None:
    """Open the clients' connections and import what their first call imports, outside any
    stage: a cold start's slow first calls are not what the test is about."""
    for _ in range(2):
        await asyncio.gather(
            *(app.qdrant.query_points("kb", query=[0.1, 0.2, 0.3], limit=3) for _ in range(8)),
            *(
                app.llm.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
                )
                for _ in range(8)
            ),
            return_exceptions=True,  # a slow first call must not end the run
        )


async def serve(app: SupportApp, args: argparse.Namespace) -> dict[str, Any]:
    """Steady traffic at ``args.rps``: healthy, then the incident; returns the truth."""
    await warm_up(app)
    started = time.time()
    fault_at = started + args.healthy
    end = fault_at + args.fault
    tasks: set[asyncio.Task[None]] = set()
    number = 0
    while True:
        due = started + number / args.rps
        if due >= end:
            break
        await asyncio.sleep(max(0.0, due - time.time()))
        in_fault = due >= fault_at
        if in_fault and not app.plan.active:
            app.plan.active = True
            if app.plan.scenario == "release":
                app.prompt = "answer@8"
                chainsight.configure(release={"model": "gpt-4o", "prompt": "answer@8"})
        task = asyncio.create_task(app.handle(number, in_fault))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        number += 1
    await asyncio.gather(*tasks)
    return {
        "scenario": app.plan.scenario,
        "started": started,
        "fault_at": fault_at,
        "finished": time.time(),
        **app.truth.__dict__,
    }


def _wait_for_file(path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--spans", required=True)
    parser.add_argument("--truth", required=True)
    parser.add_argument("--port-file", required=True, help="where the /metrics port is written")
    parser.add_argument("--go-file", required=True, help="traffic starts once this file exists")
    parser.add_argument("--healthy", type=float, default=24.0)
    parser.add_argument("--fault", type=float, default=12.0)
    parser.add_argument("--rps", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    plan = Plan(args.scenario, args.seed)
    world = World(plan)
    world.thread.start()
    chainsight.configure(
        service="incident-bot",
        release={"model": "gpt-4o", "prompt": "answer@7"},
        exporter=f"jsonl:{args.spans}",
        # Port 0: a port chosen in advance can be taken by an outgoing connection of another
        # app before this one binds it. The test reads the port and starts Prometheus on it.
        metrics_port=0,
    )
    address = chainsight.metrics_address()
    assert address is not None
    with open(args.port_file + ".tmp", "w") as handle:
        handle.write(str(address[1]))
    os.replace(args.port_file + ".tmp", args.port_file)
    _wait_for_file(args.go_file, timeout=120.0)
    app = SupportApp(world.url, plan)
    truth = asyncio.run(serve(app, args))
    chainsight.shutdown(timeout=10)
    world.server.shutdown()
    with open(args.truth, "w") as handle:
        json.dump(truth, handle)


if __name__ == "__main__":
    main()
