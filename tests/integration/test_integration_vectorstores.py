"""The Qdrant and Chroma integrations, with the real clients: qdrant-client in its embedded
local mode and against a closed port and a stalled server (REST and gRPC), chromadb embedded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import chromadb
import pytest
from chromadb.config import Settings
from qdrant_client import AsyncQdrantClient, QdrantClient, models

import chainsight
from chainsight.testing import Capture
from tests.integration._facts import facts
from tests.integration._providers import SilentServer
from tests.integration._servers import free_port

pytestmark = pytest.mark.integration

VECTORS = {1: [1.0, 0.0, 0.0], 2: [0.9, 0.1, 0.0], 3: [0.0, 1.0, 0.0], 4: [0.0, 0.0, 1.0]}
QUERY = [1.0, 0.05, 0.0]


@pytest.fixture
def qdrant() -> Iterator[QdrantClient]:
    """An embedded (in-memory) Qdrant with a small cosine collection ``kb``."""
    client = QdrantClient(":memory:")
    client.create_collection(
        "kb", vectors_config=models.VectorParams(size=3, distance=models.Distance.COSINE)
    )
    client.upsert(
        "kb",
        points=[models.PointStruct(id=i, vector=v, payload={"n": i}) for i, v in VECTORS.items()],
    )
    yield client
    client.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    """A server that accepts connections and never answers."""
    server = SilentServer().start()
    yield server
    server.stop()


def test_query_points_records_what_a_hand_written_stage_records(
    qdrant: QdrantClient, chainsight_capture: Capture, instrumented: None
) -> None:
    result = qdrant.query_points("kb", query=QUERY, limit=3)
    auto = chainsight_capture.stage(name="qdrant.query_points")
    attrs = auto.attributes
    assert auto.kind == "retrieval"
    assert attrs["db.system.name"] == "qdrant"
    assert attrs["db.collection.name"] == "kb"
    assert attrs["chainsight.retrieval.document_count"] == 3
    assert attrs["chainsight.retrieval.top_score"] == pytest.approx(result.points[0].score)
    assert chainsight_capture.metric("chainsight_retrieval_documents_count") == 1

    chainsight.uninstrument("qdrant")
    chainsight_capture.clear()
    with chainsight.stage(
        "retrieval",
        name="qdrant.query_points",
        system="qdrant",
        collection="kb",
        top_k=3,
        db_operation="query_points",
    ) as stage:
        points = qdrant.query_points("kb", query=QUERY, limit=3).points
        stage.record_documents(
            count=len(points), scores=[p.score for p in points], ids=[p.id for p in points]
        )
    assert facts(chainsight_capture.stage(name="qdrant.query_points")) == facts(auto)
    assert chainsight_capture.metric("chainsight_retrieval_documents_count") == 2


def test_an_empty_answer_is_counted(
    qdrant: QdrantClient, chainsight_capture: Capture, instrumented: None
) -> None:
    qdrant.query_points(
        collection_name="kb",
        query=QUERY,
        limit=3,
        query_filter=models.Filter(
            must=[models.FieldCondition(key="n", match=models.MatchValue(value=99))]
        ),
    )
    assert (
        chainsight_capture.stage(name="qdrant.query_points").attributes[
            "chainsight.retrieval.document_count"
        ]
        == 0
    )
    assert chainsight_capture.metric("chainsight_retrieval_empty_total") == 1


def test_nested_in_a_users_retrieval_stage_it_enriches_that_stage(
    qdrant: QdrantClient, chainsight_capture: Capture, instrumented: None
) -> None:
    @chainsight.traced_stage("retrieval", name="retrieve", system="qdrant", collection="kb")
    def retrieve() -> int:
        return len(qdrant.query_points("kb", query=QUERY, limit=2).points)

    assert retrieve() == 2
    assert chainsight_capture.find(name="qdrant.query_points") == []
    attrs = chainsight_capture.stage(name="retrieve").attributes
    assert attrs["chainsight.retrieval.document_count"] == 2


def test_async_qdrant_is_a_stage(chainsight_capture: Capture, instrumented: None) -> None:
    async def main() -> int:
        client = AsyncQdrantClient(":memory:")
        await client.create_collection(
            "kb", vectors_config=models.VectorParams(size=3, distance=models.Distance.DOT)
        )
        await client.upsert(
            "kb", points=[models.PointStruct(id=i, vector=v) for i, v in VECTORS.items()]
        )
        found = await client.query_points("kb", query=QUERY, limit=4)
        await client.close()
        return len(found.points)

    assert asyncio.run(main()) == 4
    stage = chainsight_capture.stage(name="qdrant.query_points")
    assert stage.attributes["chainsight.retrieval.document_count"] == 4


def _unreachable_query(silent: SilentServer, grpc: bool, server: str) -> BaseException:
    """Query a Qdrant that is not there (closed port) or never answers (stalled); the error."""
    port = free_port() if server == "closed_port" else silent.port
    where: dict[str, Any] = {"grpc_port": port} if grpc else {"port": port}
    client = QdrantClient(
        host="127.0.0.1", prefer_grpc=grpc, timeout=1, check_compatibility=False, **where
    )
    try:
        client.query_points("kb", query=QUERY, limit=3)
    except Exception as exc:
        return exc
    finally:
        client.close()
    raise AssertionError("the query should have failed")


UNREACHABLE = pytest.mark.parametrize(
    ("grpc", "server"),
    [(False, "closed_port"), (False, "stalled"), (True, "closed_port"), (True, "stalled")],
    ids=["rest-closed", "rest-stalled", "grpc-closed", "grpc-stalled"],
)


@UNREACHABLE
def test_an_unreachable_qdrant_ends_the_stage_with_the_clients_own_error(
    chainsight_capture: Capture,
    instrumented: None,
    silent: SilentServer,
    grpc: bool,
    server: str,
) -> None:
    raised = _unreachable_query(silent, grpc, server)
    # The client's own exception class reaches the app, not a chainsight wrapper.
    assert type(raised).__module__.split(".")[0] in ("qdrant_client", "grpc")
    stage = chainsight_capture.stage(name="qdrant.query_points")
    assert stage.outcome == "error"
    assert stage.error_type is not None


@UNREACHABLE
def test_an_unreachable_qdrant_is_a_vector_store_fault(
    chainsight_capture: Capture,
    instrumented: None,
    silent: SilentServer,
    grpc: bool,
    server: str,
) -> None:
    _unreachable_query(silent, grpc, server)
    assert chainsight_capture.stage(name="qdrant.query_points").fault == "vector_store"


def _chroma(space: str) -> Any:
    client = chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))
    name = f"kb_{space}"
    with contextlib.suppress(Exception):  # the embedded client is shared within the process
        client.delete_collection(name)
    collection = client.create_collection(
        name, metadata={"hnsw:space": space}, embedding_function=None
    )
    collection.add(
        ids=[f"doc{i}" for i in VECTORS],
        embeddings=list(VECTORS.values()),
        documents=[f"document {i}" for i in VECTORS],
    )
    return collection


def test_chroma_query_is_a_retrieval_stage(chainsight_capture: Capture, instrumented: None) -> None:
    collection = _chroma("cosine")
    result = collection.query(query_embeddings=[QUERY], n_results=3)
    stage = chainsight_capture.stage(name="chroma.query")
    attrs = stage.attributes
    assert stage.kind == "retrieval"
    assert attrs["db.system.name"] == "chroma"
    assert attrs["db.collection.name"] == "kb_cosine"
    assert attrs["chainsight.retrieval.document_count"] == 3
    nearest = result["distances"][0][0]
    assert attrs["chainsight.retrieval.top_score"] == pytest.approx(1 - nearest)


def test_chroma_l2_distances_are_not_scores(
    chainsight_capture: Capture, instrumented: None
) -> None:
    _chroma("l2").query(query_embeddings=[QUERY], n_results=2)
    attrs = chainsight_capture.stage(name="chroma.query").attributes
    assert attrs["chainsight.retrieval.document_count"] == 2
    assert "chainsight.retrieval.top_score" not in attrs


def test_chroma_errors_pass_through_unchanged(
    chainsight_capture: Capture, instrumented: None
) -> None:
    collection = _chroma("cosine")
    with pytest.raises(Exception, match="dimension") as raised:
        collection.query(query_embeddings=[[1.0, 0.0]], n_results=2)
    assert raised.type.__module__.startswith("chromadb")
    assert chainsight_capture.stage(name="chroma.query").outcome == "error"


def test_uninstrument_restores_the_vector_store_clients() -> None:
    from chromadb.api.models.Collection import Collection

    before = (QdrantClient.__dict__["query_points"], Collection.__dict__["query"])
    chainsight.instrument("qdrant", "chromadb")
    assert QdrantClient.__dict__["query_points"] is not before[0]
    chainsight.uninstrument("qdrant", "chromadb")
    assert (QdrantClient.__dict__["query_points"], Collection.__dict__["query"]) == before
