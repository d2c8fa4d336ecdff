"""A small RAG chain instrumented by the integrations alone: no stage is written by hand.

``chainsight.instrument("openai", "qdrant")`` makes every embedding call, vector search and
chat completion of the real ``openai`` and ``qdrant-client`` libraries a stage, with tokens,
cost, time to first chunk and retrieval health. Run it with
``.venv/bin/python examples/rag_integrations.py`` (it needs the ``openai`` and ``qdrant-client``
packages). It needs no network and no API key: Qdrant runs embedded (``":memory:"``) and the
OpenAI client talks to a small local stand-in for the API on 127.0.0.1, which answers in the
OpenAI wire format (JSON, and Server-Sent Events for streams).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
from prometheus_client import CollectorRegistry, generate_latest
from qdrant_client import QdrantClient, models

import chainsight

DOCS = [
    "Refunds are issued within 5 business days.",
    "Orders ship within 24 hours from our EU warehouse.",
    "Items can be returned within 30 days.",
]
ANSWER = "Refunds take 5 business days."


def embed_text(text: str) -> list[float]:
    """A deterministic 8-dimension 'embedding' (the stand-in API's, not a real model's)."""
    digest = hashlib.sha256(text.lower().encode()).digest()
    return [b / 255 for b in digest[:8]]


class LocalOpenAI(BaseHTTPRequestHandler):
    """Answers /v1/embeddings and /v1/chat/completions as the OpenAI API does."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        usage = {"prompt_tokens": 180, "completion_tokens": 12, "total_tokens": 192}
        if self.path.endswith("/embeddings"):
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": embed_text(t)}
                for i, t in enumerate(texts)
            ]
            n = 6 * len(texts)
            self._json({"object": "list", "data": data, "model": body["model"],
                        "usage": {"prompt_tokens": n, "total_tokens": n}})  # fmt: skip
            return
        base = {"id": "chatcmpl-1", "created": 0, "model": "gpt-4o-mini-2024-07-18"}
        if not body.get("stream"):
            message = {"role": "assistant", "content": ANSWER}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            self._json({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
            return
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
            for w in ANSWER.split(" ")
        ]
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        chunks.append({"choices": [], "usage": usage})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for chunk in chunks:
            event = {**base, "object": "chat.completion.chunk", **chunk}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True

    def _json(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def answer(llm: openai.OpenAI, store: QdrantClient, question: str) -> str:
    """Embed, search, generate: three SDK calls, three stages, inside one request."""
    with chainsight.request("answer_ticket", tenant="acme", feature="support"):
        query = llm.embeddings.create(model="text-embedding-3-small", input=question)
        hits = store.query_points("kb", query=query.data[0].embedding, limit=2).points
        context = "\n".join(str(h.payload["text"]) for h in hits if h.payload)
        messages: list[Any] = [
            {"role": "system", "content": context},
            {"role": "user", "content": question},
        ]
        stream = llm.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},  # the last chunk carries the usage
        )
        return " ".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip()


def main() -> None:
    """Run one question through the chain and show what chainsight recorded."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), LocalOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    spans = Path(tempfile.mkdtemp()) / "rag-spans.jsonl"
    registry = CollectorRegistry()
    chainsight.configure(service="rag-example", exporter=f"jsonl:{spans}", registry=registry)
    chainsight.instrument("openai", "qdrant")  # the one line

    llm = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_port}/v1", api_key="local")
    store = QdrantClient(":memory:")
    store.create_collection(
        "kb", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE)
    )
    vectors = llm.embeddings.create(model="text-embedding-3-small", input=DOCS)  # a stage too
    store.upsert(
        "kb",
        points=[
            models.PointStruct(id=i, vector=v.embedding, payload={"text": DOCS[i]})
            for i, v in enumerate(vectors.data)
        ],
    )
    print("answer:", answer(llm, store, "How long do refunds take?"))

    chainsight.shutdown()
    chainsight.uninstrument()
    store.close()
    llm.close()
    server.shutdown()
    server.server_close()
    print("\nstages (from", spans.name + "):")
    for line in spans.read_text().splitlines():
        span = json.loads(line)
        attrs = span["attributes"]
        facts = {
            k: attrs[k]
            for k in (
                "gen_ai.usage.input_tokens",
                "gen_ai.usage.output_tokens",
                "chainsight.cost.usd",
                "gen_ai.response.time_to_first_chunk",
                "chainsight.retrieval.document_count",
                "chainsight.retrieval.top_score",
            )
            if k in attrs
        }
        print(f"  {attrs['chainsight.stage.name']:<20} {attrs['chainsight.outcome']:<4} {facts}")
    print("\nmetrics:")
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(("chainsight_tokens_total", "chainsight_cost_usd_total")):
            print(" ", line)


if __name__ == "__main__":
    main()
