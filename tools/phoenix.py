"""A real Arize Phoenix on loopback, and the chain we send it (tests and the screenshot script).

Phoenix is installed from PyPI into its own virtual environment, cached under
``~/.cache/chainsight-test/phoenix-venv-<version>`` (``CHAINSIGHT_TEST_CACHE`` moves the cache):
its dependencies (SQLAlchemy, strawberry, grpc, pandas, ...) are not ours and must not pin our
test environment. The environment is complete only once its ``.complete`` file exists, written
last; an interrupted install is removed and done again. A file lock keeps two test sessions on
one machine from installing at once.

``phoenix serve`` runs with a temporary working directory (its SQLite database), on free
loopback ports for HTTP and gRPC, with its telemetry off.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

PHOENIX_VERSION: Final = "20.26.1"
INSTALL_TIMEOUT_S: Final = 1800.0
START_TIMEOUT_S: Final = 240.0

# The chain a user would send: what it asks, what it retrieves and reranks, what it answers.
QUESTION: Final = "How long does a refund take for order 1234?"
SYSTEM: Final = "You answer support tickets from the knowledge base. Be brief."
DOCUMENTS: Final = [
    {"id": "kb-refunds", "score": 0.92, "text": "Refunds reach the card within 5 business days."},
    {"id": "kb-shipping", "score": 0.61, "text": "Orders ship within 24 hours."},
    {"id": "kb-returns", "score": 0.44, "text": "Returns are free for 30 days."},
]
ANSWER: Final = "Your refund for order 1234 reaches your card within 5 business days."
MODEL: Final = "claude-sonnet-4-5"
RESPONSE_MODEL: Final = "claude-sonnet-4-5-20250929"
# 1,200 fresh input tokens, 8,000 read from and 4,000 written to the prompt cache, 400 out.
USAGE: Final = {
    "input_tokens": 1200,
    "cache_read_input_tokens": 8000,
    "cache_creation_input_tokens": 4000,
    "output_tokens": 400,
}
TOTAL_INPUT_TOKENS: Final = 13200


class PhoenixUnavailable(RuntimeError):
    """Phoenix could not be installed or started here (the message says why)."""


def cache_dir() -> Path:
    """Where the Phoenix environment is cached."""
    root = os.environ.get("CHAINSIGHT_TEST_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "chainsight-test"
    return base / f"phoenix-venv-{PHOENIX_VERSION}"


def ensure_venv() -> tuple[Path, float | None]:
    """The Phoenix environment's python, and the seconds the install took (None: cached)."""
    venv = cache_dir()
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        lock = open(venv.parent / f"{venv.name}.lock", "w")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise PhoenixUnavailable(f"cannot use the cache {venv.parent}: {exc}") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session installing: wait for it
        return _install(venv)


def _install(venv: Path) -> tuple[Path, float | None]:
    """Install Phoenix into ``venv`` unless it is complete; the caller holds the lock file."""
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python, None
    shutil.rmtree(venv, ignore_errors=True)
    started = time.monotonic()
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", f"arize-phoenix=={PHOENIX_VERSION}"],
    ]
    for step in steps:
        try:
            done = subprocess.run(  # noqa: S603 - our interpreter, fixed arguments
                step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PhoenixUnavailable(f"{' '.join(step[:4])} failed: {exc}") from exc
        if done.returncode != 0:
            raise PhoenixUnavailable(
                f"{' '.join(step[:4])} ... exited {done.returncode}: "
                f"{(done.stderr or done.stdout)[-2000:]}"
            )
    seconds = time.monotonic() - started
    (venv / ".complete").write_text(f"installed in {seconds:.1f} s\n", encoding="utf-8")
    return python, seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Phoenix:
    """A running ``phoenix serve``: its base URL, gRPC port and log file."""

    url: str
    grpc_port: int
    log: Path
    process: subprocess.Popen[bytes]

    def get(self, path: str) -> Any:
        """GET ``path`` of the REST API as JSON."""
        with urllib.request.urlopen(self.url + path, timeout=30) as response:  # noqa: S310 - our loopback URL
            return json.load(response)

    def graphql(self, query: str, variables: Mapping[str, object]) -> Any:
        """Run a GraphQL query; raises on errors."""
        body = json.dumps({"query": query, "variables": dict(variables)}).encode()
        request = urllib.request.Request(  # noqa: S310 - our loopback URL
            self.url + "/graphql", body, {"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            data = json.load(response)
        if data.get("errors"):
            raise AssertionError(f"Phoenix GraphQL errors: {data['errors']}")
        return data["data"]

    def project_id(self, name: str) -> str | None:
        """The GraphQL id of project ``name``, or None while Phoenix has none by that name."""
        for project in self.get("/v1/projects")["data"]:
            if project["name"] == name:
                return str(project["id"])
        return None

    def spans(self, project: str) -> list[dict[str, Any]]:
        """Every span Phoenix holds for ``project`` (REST), newest first."""
        try:
            found: list[dict[str, Any]] = self.get(f"/v1/projects/{project}/spans?limit=500")[
                "data"
            ]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # no span has arrived yet
                return []
            raise
        return found

    def wait_for_spans(
        self, project: str, count: int, timeout: float = 90.0
    ) -> list[dict[str, Any]]:
        """Poll until ``project`` holds at least ``count`` spans; raises after ``timeout``."""
        deadline = time.monotonic() + timeout
        spans: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            spans = self.spans(project)
            if len(spans) >= count:
                return spans
            time.sleep(0.5)
        raise AssertionError(
            f"Phoenix holds {len(spans)} spans for project {project!r} after {timeout:.0f} s, "
            f"expected {count}; its log: {self.log}"
        )


@contextlib.contextmanager
def running(python: Path, workdir: Path) -> Iterator[Phoenix]:
    """Start ``phoenix serve`` on free loopback ports in ``workdir``; stop it afterwards."""
    port, grpc_port = _free_port(), _free_port()
    env = dict(os.environ)
    for key in [k for k in env if k.startswith(("OTEL_", "PHOENIX_"))]:
        del env[key]  # ours are for the test process, not for Phoenix's own tracing
    env.update(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_WORKING_DIR=str(workdir),
        PHOENIX_TELEMETRY_ENABLED="false",
    )
    log = workdir / "phoenix.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [str(python), "-m", "phoenix.server.main", "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    phoenix = Phoenix(f"http://127.0.0.1:{port}", grpc_port, log, process)
    try:
        _wait_ready(phoenix)
        yield phoenix
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def _wait_ready(phoenix: Phoenix) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if phoenix.process.poll() is not None:
            tail = phoenix.log.read_text(errors="replace")[-3000:]
            raise PhoenixUnavailable(f"phoenix serve exited {phoenix.process.returncode}: {tail}")
        try:
            health = phoenix.url + "/healthz"
            with urllib.request.urlopen(health, timeout=5) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)
    raise PhoenixUnavailable(
        f"phoenix serve not ready at {phoenix.url} after {START_TIMEOUT_S:.0f} s; "
        f"log: {phoenix.log}"
    )


def send_chain() -> None:
    """One support request through chainsight: retrieval with documents, rerank, prompt, an
    Anthropic call with cache reads and writes (a real SDK ``Message``), validation. Uses
    whatever ``chainsight.configure()`` set up."""
    import anthropic.types  # noqa: PLC0415 - a dev dependency, only where a chain is sent

    import chainsight  # noqa: PLC0415

    reply = anthropic.types.Message.model_validate(
        {
            "id": "msg_phoenix", "type": "message", "role": "assistant", "model": RESPONSE_MODEL,
            "content": [{"type": "text", "text": ANSWER}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": USAGE,
        }
    )  # fmt: skip
    messages = [{"role": "user", "content": QUESTION}]
    with chainsight.request("answer_ticket", tenant="acme", feature="support"):
        with chainsight.stage("retrieval", system="qdrant", collection="kb", top_k=3) as r:
            r.record_content(query=QUESTION, documents=DOCUMENTS)
            r.record_documents(
                count=len(DOCUMENTS),
                scores=[d["score"] for d in DOCUMENTS],
                ids=[d["id"] for d in DOCUMENTS],
            )
        with chainsight.stage("rerank", provider="cohere", model="rerank-v3.5", top_k=2) as rr:
            rr.record_content(query=QUESTION, documents=DOCUMENTS[:2])
        with chainsight.stage("prompt", prompt_name="answer", prompt_version="7") as p:
            p.record_content(system_instructions=SYSTEM, input_messages=messages)
        with chainsight.stage("model", provider="anthropic", model=MODEL) as m:
            m.record_content(system_instructions=SYSTEM, input_messages=messages)
            m.record_response(reply)
        with chainsight.stage("validation", validator="answer_cites_kb") as v:
            v.record_validation(passed=True)
