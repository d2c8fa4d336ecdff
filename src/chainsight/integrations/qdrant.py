"""The Qdrant integration: ``query_points`` (and ``search``, on versions that still have it) of
``qdrant_client.QdrantClient`` and ``AsyncQdrantClient``.

``chainsight.instrument("qdrant")`` makes each query a ``retrieval`` stage named
``qdrant.query_points`` (or enriches the user's open ``retrieval`` stage) with ``system=qdrant``,
the collection, ``top_k`` (the ``limit`` asked for) and, via ``record_documents``, the number
of points returned, their top score and duplicate ids. It works the same for every mode of the
client (embedded ``":memory:"``/path, REST, gRPC): it wraps the client's public methods.
``qdrant_client`` is imported only here, and only when the integration is turned on.
"""

from __future__ import annotations

from typing import Any

from chainsight.integrations._calls import Site, async_method, sync_method
from chainsight.integrations._patching import Integration, Plan
from chainsight.integrations._retrieval import record_hits
from chainsight.stages.stage import Stage

__all__ = ["INTEGRATION", "instrument", "uninstrument"]

_METHODS = ("query_points", "search")


def _attributes(operation: str) -> Any:
    def attributes(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        attrs: dict[str, Any] = {"system": "qdrant", "db_operation": operation}
        collection = args[0] if args else kwargs.get("collection_name")
        if isinstance(collection, str):
            attrs["collection"] = collection
        limit = kwargs.get("limit", 10)  # the SDK's default
        if type(limit) is int:
            attrs["top_k"] = limit
        return attrs

    return attributes


def _record(stage: Stage, client: Any, result: Any) -> None:
    # query_points answers a QueryResponse; the older search() a list of ScoredPoint.
    points = getattr(result, "points", result)
    if isinstance(points, list):
        record_hits(stage, points)


def _site(operation: str) -> Site:
    return Site(
        "retrieval",
        f"qdrant.{operation}",
        _attributes(operation),
        _record,
        lambda stage, chunk: None,  # queries do not stream
        "integration:qdrant",
    )


def _plan() -> Plan:
    # The client is imported here, when the integration is turned on, never at chainsight import.
    from qdrant_client import AsyncQdrantClient, QdrantClient  # noqa: PLC0415

    patches: list[tuple[type, str, Any]] = []
    for operation in _METHODS:
        if operation in QdrantClient.__dict__:
            patches.append((QdrantClient, operation, sync_method(_site(operation))))
        if operation in AsyncQdrantClient.__dict__:
            patches.append((AsyncQdrantClient, operation, async_method(_site(operation))))
    return Plan(patches)


INTEGRATION = Integration("qdrant", "qdrant_client", _plan)


def instrument() -> None:
    """Turn the Qdrant integration on (idempotent); ``chainsight.instrument("qdrant")``."""
    INTEGRATION.instrument()


def uninstrument() -> None:
    """Put the client's original methods back; ``chainsight.uninstrument("qdrant")``."""
    INTEGRATION.uninstrument()
