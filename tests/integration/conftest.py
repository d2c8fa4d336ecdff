"""Real-server fixtures for every test under tests/integration/.

Each fixture starts its server on 127.0.0.1 on a free port, in a temporary directory, and stops
it at teardown, whatever the test did to it. The classes are in ``_servers.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import chainsight
from tests.integration._providers import FakeProvider
from tests.integration._servers import (
    OTLPGrpcReceiver,
    OTLPReceiver,
    PrometheusServer,
    RedisServer,
)

PrometheusFactory = Callable[..., PrometheusServer]


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """A started OTLP/HTTP receiver; ``.traces_url`` goes to ``OTLPSpanExporter(endpoint=)``."""
    receiver = OTLPReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(params=["chainsight", "sdk"])
def span_encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test once with chainsight's OTLP span encoder and once with the SDK's.

    Request it before the test configures chainsight (CHAINSIGHT_OTLP_ENCODER is read then).
    """
    encoder = str(request.param)
    monkeypatch.setenv("CHAINSIGHT_OTLP_ENCODER", encoder)
    return encoder


@pytest.fixture
def otlp_grpc_receiver() -> Iterator[OTLPGrpcReceiver]:
    """A started OTLP/gRPC receiver; ``.endpoint`` is ``http://127.0.0.1:PORT`` (insecure)."""
    receiver = OTLPGrpcReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusFactory]:
    """A factory ``start(targets, *, job=, scrape_interval=, rule_files=, extra_args=)``.

    Every Prometheus it started is stopped at teardown. Skips (fails under CI) without the
    ``prometheus`` binary.
    """
    started: list[PrometheusServer] = []

    def start(
        targets: Sequence[str],
        *,
        job: str = "chainsight",
        scrape_interval: str = "1s",
        rule_files: Sequence[str | Path] = (),
        extra_args: Sequence[str] = (),
        metrics_path: str = "/metrics",
        storage_path: Path | None = None,
    ) -> PrometheusServer:
        server = PrometheusServer(
            targets,
            workdir=tmp_path_factory.mktemp("prometheus"),
            job=job,
            scrape_interval=scrape_interval,
            rule_files=rule_files,
            extra_args=extra_args,
            metrics_path=metrics_path,
            storage_path=storage_path,
        )
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A started redis-server (no persistence); ``.kill()`` and ``.start()`` reuse the port."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    """A started local OpenAI/Anthropic provider (``_providers.py``); stopped at teardown."""
    server = FakeProvider().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def instrumented() -> Iterator[None]:
    """Every integration on for the test, and off (the originals back) afterwards."""
    chainsight.instrument("openai", "anthropic", "qdrant", "chromadb")
    try:
        yield
    finally:
        chainsight.uninstrument()
