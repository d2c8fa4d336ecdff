"""Small readers shared by the integrations: stage keywords out of an SDK call."""

from __future__ import annotations

import weakref
from typing import Any, Final

from chainsight.stages.stage import Stage

__all__ = ["model_attributes", "record_chunk", "record_response", "server_of"]


# id(SDK client) -> (a weak reference to it, its stage keywords). Reading base_url off an SDK
# client costs about a microsecond a call, the integration's whole budget; the weak reference
# tells a live client from a new object that reuses a dead one's id, and keeps no client alive.
# A client whose base_url is reassigned keeps its first server until the cache is full.
_SERVERS: dict[int, tuple[weakref.ref[Any], dict[str, Any]]] = {}
_SERVERS_LIMIT: Final = 256
# The SDKs' raw-response wrappers (with_raw_response / with_streaming_response).
_RAW_RESPONSES: Final = frozenset({"LegacyAPIResponse", "APIResponse", "AsyncAPIResponse"})


def server_of(client: Any, attrs: dict[str, Any]) -> None:
    """Add ``server_address``/``server_port`` from an SDK client's ``base_url``, if it has one."""
    cached = _SERVERS.get(id(client))
    if cached is None or cached[0]() is not client:
        found: dict[str, Any] = {}
        url = getattr(client, "base_url", None)
        host = getattr(url, "host", None)
        if isinstance(host, str) and host:
            found["server_address"] = host
            port = getattr(url, "port", None)
            if type(port) is int:
                found["server_port"] = port
        try:
            ref = weakref.ref(client)
        except TypeError:  # not weak-referenceable: read it each time
            attrs.update(found)
            return
        if len(_SERVERS) >= _SERVERS_LIMIT:
            _SERVERS.clear()
        cached = _SERVERS[id(client)] = (ref, found)
    attrs.update(cached[1])


def model_attributes(
    resource: Any, kwargs: dict[str, Any], provider: str, operation: str
) -> dict[str, Any]:
    """The stage keywords of a model or embedding call: provider, operation, the requested
    model (when it is a string) and the server the SDK client talks to."""
    attrs: dict[str, Any] = {"provider": provider, "operation": operation}
    model = kwargs.get("model")
    if isinstance(model, str) and model:
        attrs["model"] = model
    server_of(getattr(resource, "_client", None), attrs)
    return attrs


def record_response(stage: Stage, resource: Any, result: Any) -> None:
    """Record an SDK response on the stage, as a hand-written stage would.

    A raw HTTP response (``with_raw_response``) carries no parsed body yet: it is left alone
    rather than parsed behind the app's back.
    """
    # By class name: hasattr() on a pydantic response costs more than the rest of the call.
    if type(result).__name__ in _RAW_RESPONSES:
        return
    stage.record_response(result)


def record_chunk(stage: Stage, chunk: Any) -> None:
    """Record one chunk (event) of a stream; the stage adds them up when it ends."""
    stage.record_response(chunk)
