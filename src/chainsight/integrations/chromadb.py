"""The Chroma integration: ``Collection.query`` (and ``AsyncCollection.query``) of ``chromadb``.

``chainsight.instrument("chromadb")`` makes each query a ``retrieval`` stage named
``chroma.query`` (or enriches the user's open ``retrieval`` stage) with ``system=chroma``, the
collection, ``top_k`` (``n_results``) and, via ``record_documents``, the number of results and
their ids. Chroma answers *distances* (lower is closer), not scores: for the ``cosine`` and
``ip`` spaces the score recorded is ``1 - distance`` (the cosine similarity, the inner
product); for ``l2`` no score is recorded, since a distance is not a similarity. A batch of
several query embeddings counts every result; its ids are not checked for duplicates (the same
document may rightly answer two queries). ``chromadb`` is imported only here, and only when the
integration is turned on.
"""

from __future__ import annotations

import math
from typing import Any

from chainsight.integrations._calls import Site, async_method, sync_method
from chainsight.integrations._patching import Integration, Plan
from chainsight.stages.stage import Stage

__all__ = ["INTEGRATION", "instrument", "uninstrument"]

# Chroma spaces whose distance is 1 - similarity.
_SIMILARITY_SPACES = frozenset({"cosine", "ip"})


def _attributes(collection: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {"system": "chroma", "db_operation": "query"}
    name = getattr(collection, "name", None)
    if isinstance(name, str):
        attrs["collection"] = name
    n_results = kwargs.get("n_results", 10)  # the SDK's default
    if type(n_results) is int:
        attrs["top_k"] = n_results
    return attrs


def _space(collection: Any) -> str | None:
    """The collection's distance space, from its configuration or its legacy metadata."""
    config = getattr(collection, "configuration_json", None) or {}
    for index in ("hnsw", "spann"):
        found = (config.get(index) or {}).get("space") if isinstance(config, dict) else None
        if isinstance(found, str):
            return found
    metadata = getattr(collection, "metadata", None) or {}
    found = metadata.get("hnsw:space") if isinstance(metadata, dict) else None
    return found if isinstance(found, str) else None


def _record(stage: Stage, collection: Any, result: Any) -> None:
    ids_per_query = result.get("ids") if isinstance(result, dict) else None
    if not isinstance(ids_per_query, list):
        return
    count = sum(len(ids) for ids in ids_per_query if isinstance(ids, list))
    ids = ids_per_query[0] if len(ids_per_query) == 1 else None
    scores: list[float] | None = None
    distances = result.get("distances")
    if isinstance(distances, list) and _space(collection) in _SIMILARITY_SPACES:
        scores = [
            1.0 - float(d)
            for per_query in distances
            if isinstance(per_query, list)
            for d in per_query
            if isinstance(d, (int, float)) and math.isfinite(d)  # numpy floats are floats
        ]
    stage.record_documents(count=count, scores=scores, ids=ids)


QUERY = Site(
    "retrieval",
    "chroma.query",
    _attributes,
    _record,
    lambda stage, chunk: None,  # queries do not stream
    "integration:chromadb",
)


def _plan() -> Plan:
    # chromadb is imported here, when the integration is turned on, never at chainsight import.
    from chromadb.api.models.AsyncCollection import AsyncCollection  # noqa: PLC0415
    from chromadb.api.models.Collection import Collection  # noqa: PLC0415

    return Plan(
        [
            (Collection, "query", sync_method(QUERY)),
            (AsyncCollection, "query", async_method(QUERY)),
        ]
    )


INTEGRATION = Integration("chromadb", "chromadb", _plan)


def instrument() -> None:
    """Turn the Chroma integration on (idempotent); ``chainsight.instrument("chromadb")``."""
    INTEGRATION.instrument()


def uninstrument() -> None:
    """Put the original ``query`` methods back; ``chainsight.uninstrument("chromadb")``."""
    INTEGRATION.uninstrument()
