"""Small readers shared by the integrations: stage keywords out of an SDK call."""

from __future__ import annotations

from typing import Any

from chainsight.stages.stage import Stage

__all__ = ["model_attributes", "record_chunk", "record_response", "server_of"]


def server_of(client: Any, attrs: dict[str, Any]) -> None:
    """Add ``server_address``/``server_port`` from an SDK client's ``base_url``, if it has one."""
    url = getattr(client, "base_url", None)
    host = getattr(url, "host", None)
    if isinstance(host, str) and host:
        attrs["server_address"] = host
        port = getattr(url, "port", None)
        if type(port) is int:
            attrs["server_port"] = port


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
    if hasattr(result, "http_response") and hasattr(result, "parse"):
        return
    stage.record_response(result)


def record_chunk(stage: Stage, chunk: Any) -> None:
    """Record one chunk (event) of a stream; the stage adds them up when it ends."""
    stage.record_response(chunk)
