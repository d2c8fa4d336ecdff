"""A small WSGI app instrumented with chainsight, served by several gunicorn workers.

``GET /answer?q=...&tenant=...`` runs a retrieval and a model stage in one request and answers
with the worker's pid; ``GET /metrics`` is ``chainsight.metrics_app()``, which in multiprocess
mode sums every worker. Run it with ``examples/gunicorn.conf.py`` (see docs/deployment.md).
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import chainsight

chainsight.configure(
    service="wsgi-example",
    release={"model": "gpt-4o", "prompt": os.environ.get("PROMPT_VERSION", "answer@1")},
)

StartResponse = Callable[..., Any]

DOCUMENTS = ["Orders ship in two days.", "Returns are free for 30 days."]


@chainsight.traced_stage("retrieval", system="memory", collection="faq")
def retrieve(question: str) -> list[str]:
    """Find the documents that share a word with the question."""
    words = set(question.lower().split())
    found = [d for d in DOCUMENTS if words & set(d.lower().rstrip(".").split())]
    chainsight.current_stage().record_documents(count=len(found))
    return found


@chainsight.traced_stage("model", provider="openai", model="gpt-4o")
def generate(question: str, documents: list[str], delay: float) -> str:
    """Stand-in for a chat completion: waits ``delay`` seconds and reports token usage."""
    time.sleep(delay)
    prompt = " ".join([question, *documents])
    answer = documents[0] if documents else "I don't know."
    chainsight.current_stage().record_usage(
        input_tokens=len(prompt.split()), output_tokens=len(answer.split())
    )
    return answer


metrics = chainsight.metrics_app()


def _json(start_response: StartResponse, status: str, payload: object) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI entry point."""
    path = environ.get("PATH_INFO", "/")
    if path == "/metrics":
        result: Iterable[bytes] = metrics(environ, start_response)
        return result
    if path != "/answer":
        return _json(start_response, "404 Not Found", {"error": f"no route {path}"})
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    question = query.get("q", ["when do orders ship"])[0]
    tenant = query.get("tenant", ["default"])[0]
    delay = min(float(query.get("delay", ["0"])[0]), 5.0)
    with chainsight.request("answer", tenant=tenant, feature="faq"):
        documents = retrieve(question)
        answer = generate(question, documents, delay)
    return _json(start_response, "200 OK", {"answer": answer, "pid": os.getpid()})
