"""Retries and a request-level fallback, as ``chainsight triage`` reads them.

Run it with ``.venv/bin/python examples/retries_and_fallbacks.py``. A support bot calls a model
that starts timing out on a share of its calls halfway through. The bot retries once — each
attempt its own stage, marked ``attempt=`` — and when the retry fails too, serves a canned
answer through ``fallback()`` on the request. Triage then tells apart what users saw (requests
served by the fallback) from the failures the retry absorbed, puts both on the provider, and
says when it began.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry

import chainsight
from chainsight.tools.cli import main as cli

CANNED = "We could not answer right now; an agent will follow up."


async def call_model(question: str, *, failing: float) -> str:
    """A stand-in for the provider call; times out on ``failing`` of the calls."""
    await asyncio.sleep(random.uniform(0.002, 0.004))
    if random.random() < failing:
        raise TimeoutError("the provider did not answer in 30 s")
    return "Refunds take 5 business days."


async def generate(question: str, *, failing: float) -> str:
    """One model call, retried once: each attempt is a stage with its number."""
    for attempt in (1, 2):
        try:
            async with chainsight.stage(
                "model", name="generate", provider="openai", model="gpt-4o", attempt=attempt
            ) as stage:
                answer = await call_model(question, failing=failing)
                stage.record_usage(input_tokens=300, output_tokens=40)
                return answer
        except TimeoutError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def answer_ticket(question: str, *, failing: float) -> str:
    """One request; when the model fails twice, a canned answer serves the user."""
    async with chainsight.request("answer_ticket", feature="support") as request:
        try:
            return await generate(question, failing=failing)
        except TimeoutError:
            # Inside the except: the fallback records the provider's timeout as what it replaced.
            request.fallback(to="canned_answer", reason="provider timeout")
            return CANNED


async def serve() -> Path:
    """Healthy traffic, then 30 % of model calls time out; returns the span file."""
    spans = Path(tempfile.gettempdir()) / "retries-spans.jsonl"
    spans.unlink(missing_ok=True)
    chainsight.configure(
        service="support-bot",
        release={"model": "gpt-4o", "prompt": "answer@7"},
        exporter=f"jsonl:{spans}",
        registry=CollectorRegistry(),
    )
    random.seed(7)
    for i in range(600):
        await answer_ticket("How long do refunds take?", failing=0.3 if i >= 300 else 0.0)
        await asyncio.sleep(0.001)
    chainsight.shutdown()
    return spans


def main() -> int:
    """Serve, then run ``chainsight triage --spans FILE`` as the on-call would."""
    spans = asyncio.run(serve())
    return cli(["triage", "--spans", str(spans)])


if __name__ == "__main__":
    main()
