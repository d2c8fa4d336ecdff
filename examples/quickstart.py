"""The README quickstart: a small RAG chain instrumented with chainsight.

Run it with ``.venv/bin/python examples/quickstart.py`` (``make demo`` runs the bigger demo). It
needs no collector: spans go to ``quickstart-spans.jsonl`` in the temporary directory and the
metrics are printed from the Prometheus registry at the end.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

import chainsight


class ProviderTimeout(TimeoutError):
    """What a provider SDK raises when the model call times out."""


DOCS = {
    "refunds": "Refunds are issued within 5 business days.",
    "shipping": "Orders ship within 24 hours from our EU warehouse.",
    "returns": "Items can be returned within 30 days.",
}


@chainsight.traced_stage("retrieval", system="memory", collection="kb")
def retrieve(question: str) -> list[str]:
    """Find the documents whose key appears in the question."""
    hits = [text for key, text in DOCS.items() if key in question]
    chainsight.current_stage().record_documents(
        count=len(hits), scores=[0.9] * len(hits), ids=list(DOCS)
    )
    return hits


@chainsight.traced_stage("model", provider="openai", model="gpt-4o")
async def generate(prompt: str, *, fail: bool) -> str:
    """A stand-in for the provider call: usage as the OpenAI API reports it."""
    await asyncio.sleep(random.uniform(0.01, 0.03))
    if fail:
        raise ProviderTimeout("the provider did not answer in 30 s")
    chainsight.current_stage().record_response(
        {
            "id": "chatcmpl-demo",
            "object": "chat.completion",
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "..."}}],
            "usage": {"prompt_tokens": len(prompt) // 4 + 200, "completion_tokens": 60},
        }
    )
    return json.dumps({"answer": "Refunds take 5 business days."})


async def answer_ticket(question: str, *, fail: bool = False) -> str:
    """One request: retrieve, build the prompt, call the model, validate the answer."""
    async with chainsight.request("answer_ticket", tenant="acme", feature="support"):
        docs = retrieve(question)
        with chainsight.stage("prompt", prompt_name="answer", prompt_version="7"):
            prompt = "\n".join(docs) + "\n\nQ: " + question
        answer = await generate(prompt, fail=fail)
        with chainsight.stage("validation", validator="json_schema") as check:
            check.record_validation(passed="answer" in json.loads(answer))
        return answer


async def main() -> None:
    """Run a few requests, one of which hits a provider timeout, and show what was recorded."""
    spans = Path(tempfile.gettempdir()) / "quickstart-spans.jsonl"
    spans.unlink(missing_ok=True)
    registry = CollectorRegistry()
    chainsight.configure(
        service="support-bot",
        release={"model": "gpt-4o-2024-08-06", "prompt": "answer@7"},
        exporter=f"jsonl:{spans}",
        registry=registry,
    )
    for i in range(5):
        try:
            await answer_ticket("how long do refunds take?", fail=i == 3)
        except ProviderTimeout:
            print("request 4 failed: the provider timed out (the app sees its own exception)")
    chainsight.shutdown()

    print(f"\nspans written to {spans}:")
    for line in spans.read_text().splitlines():
        span = json.loads(line)
        attrs = span["attributes"]
        fault = f" fault={attrs['chainsight.fault']}" if "chainsight.fault" in attrs else ""
        print(f"  {span['name']:<32} {attrs['chainsight.outcome']:<6}{fault}")
    print("\nrequests by outcome and fault domain (Prometheus):")
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(("chainsight_requests_total", "chainsight_cost_usd_total")):
            print("  " + line)


if __name__ == "__main__":
    asyncio.run(main())
