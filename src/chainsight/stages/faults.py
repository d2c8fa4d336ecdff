"""Outcome and fault-domain classification.

The table is small and duck-typed: exception class names (over the whole MRO, so SDK subclasses
match) and HTTP status codes read from ``status_code``, ``status``, ``http_status`` or
``response.status_code``. Nothing here imports httpx, openai or anthropic.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Final, NamedTuple

from chainsight import _names as n

__all__ = ["Classification", "Classifier", "Origin", "classify"]


class Classification(NamedTuple):
    """Where an error belongs: the fault domain and a low-cardinality error type."""

    fault: str
    error_type: str


class Origin(NamedTuple):
    """Where an error started: the stage name, its fault and error type."""

    stage: str
    fault: str
    error_type: str


#: A user rule: ``(exception, stage kind) -> Classification | (fault, error_type) | None``.
Classifier = Callable[[BaseException, str], "Classification | tuple[str, str] | None"]

# Transport/availability failures: the remote side (provider or vector store) failed us.
_REMOTE_NAMES: Final[dict[str, str]] = {
    "TimeoutError": n.ERR_TIMEOUT,
    "ReadTimeout": n.ERR_TIMEOUT,
    "ConnectTimeout": n.ERR_TIMEOUT,
    "WriteTimeout": n.ERR_TIMEOUT,
    "PoolTimeout": n.ERR_TIMEOUT,
    "TimeoutException": n.ERR_TIMEOUT,
    "APITimeoutError": n.ERR_TIMEOUT,
    "DeadlineExceeded": n.ERR_TIMEOUT,
    "RateLimitError": n.ERR_RATE_LIMITED,
    "TooManyRequests": n.ERR_RATE_LIMITED,
    "ResourceExhausted": n.ERR_RATE_LIMITED,
    "ThrottlingException": n.ERR_RATE_LIMITED,
    "ConnectionError": n.ERR_CONNECTION,
    "ConnectError": n.ERR_CONNECTION,
    "APIConnectionError": n.ERR_CONNECTION,
    "RemoteProtocolError": n.ERR_CONNECTION,
    "ServiceUnavailable": n.ERR_SERVER_ERROR,
    "ServiceUnavailableError": n.ERR_SERVER_ERROR,
    "InternalServerError": n.ERR_SERVER_ERROR,
    "OverloadedError": n.ERR_SERVER_ERROR,
    "APIStatusError": n.ERR_SERVER_ERROR,
}
# The provider rejected what we sent: our (the app's) fault.
_APP_NAMES: Final[dict[str, str]] = {
    "BadRequestError": n.ERR_BAD_REQUEST,
    "UnprocessableEntityError": n.ERR_BAD_REQUEST,
    "NotFoundError": n.ERR_NOT_FOUND,
    "AuthenticationError": n.ERR_AUTH,
    "PermissionDeniedError": n.ERR_AUTH,
    "ContextWindowExceededError": n.ERR_CONTEXT_LENGTH,
    "ContextLengthExceededError": n.ERR_CONTEXT_LENGTH,
}
# The model answered, but unusably.
_MODEL_NAMES: Final[dict[str, str]] = {
    "ContentFilterFinishReasonError": n.ERR_CONTENT_FILTER,
    "ContentPolicyViolationError": n.ERR_CONTENT_FILTER,
    "LengthFinishReasonError": n.ERR_CONTEXT_LENGTH,
    "OutputParserException": n.ERR_MALFORMED_OUTPUT,
    "ValidationError": n.ERR_VALIDATION_FAILED,
}
# A schema/parse error is the model's only where the model's output is being read.
_OUTPUT_ONLY_NAMES: Final = frozenset({"ValidationError", "OutputParserException"})
# Stage kinds whose own work is reading the model's output: a parse error there is the model's.
_OUTPUT_KINDS: Final = frozenset({"model", "validation"})


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status_code", "status", "http_status"):
        value = getattr(exc, attr, None)
        if type(value) is int and 100 <= value <= 599:
            return value
    response = getattr(exc, "response", None)
    if response is not None:
        value = getattr(response, "status_code", None)
        if type(value) is int and 100 <= value <= 599:
            return value
    return None


def _by_status(status: int, remote: str) -> Classification | None:
    if status == 429:
        return Classification(remote, n.ERR_RATE_LIMITED)
    if status in (408, 504):
        return Classification(remote, n.ERR_TIMEOUT)
    if status >= 500:
        return Classification(remote, n.ERR_SERVER_ERROR)
    if status in (401, 403):
        return Classification(n.FAULT_APP, n.ERR_AUTH)
    if status == 404:
        return Classification(n.FAULT_APP, n.ERR_NOT_FOUND)
    if status == 413:
        return Classification(n.FAULT_APP, n.ERR_CONTEXT_LENGTH)
    if 400 <= status < 500:
        return Classification(n.FAULT_APP, n.ERR_BAD_REQUEST)
    return None


def error_type_name(exc: BaseException) -> str:
    """The exception's qualified class name, without ``builtins.``."""
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def classify(exc: BaseException, kind: str, remote: str) -> Classification:
    """Classify ``exc`` raised in a stage of ``kind`` whose remote component is ``remote``.

    ``remote`` is the fault domain that transport failures belong to: ``provider`` or
    ``vector_store`` for stages that call out, ``app`` for local work.
    """
    if isinstance(exc, json.JSONDecodeError) and kind in _OUTPUT_KINDS:
        return Classification(n.FAULT_MODEL, n.ERR_MALFORMED_OUTPUT)
    # Context-length errors arrive as 400s: the more specific name wins over the status.
    for cls in type(exc).__mro__:
        name = cls.__name__
        found = _APP_NAMES.get(name)
        if found is not None and found != n.ERR_BAD_REQUEST:
            return Classification(n.FAULT_APP, found)
    code = getattr(exc, "code", None)
    if code == "context_length_exceeded":
        return Classification(n.FAULT_APP, n.ERR_CONTEXT_LENGTH)
    status = _status_of(exc)
    if status is not None:
        by_status = _by_status(status, remote)
        if by_status is not None:
            return by_status
    for cls in type(exc).__mro__:
        name = cls.__name__
        found = _MODEL_NAMES.get(name)
        if found is not None and (kind in _OUTPUT_KINDS or name not in _OUTPUT_ONLY_NAMES):
            return Classification(n.FAULT_MODEL, found)
        found = _REMOTE_NAMES.get(name)
        if found is not None:
            return Classification(remote, found)
        found = _APP_NAMES.get(name)
        if found is not None:
            return Classification(n.FAULT_APP, found)
        if "Timeout" in name:
            return Classification(remote, n.ERR_TIMEOUT)
    if isinstance(exc, asyncio.TimeoutError):  # distinct from TimeoutError before Python 3.11
        return Classification(remote, n.ERR_TIMEOUT)
    return Classification(n.FAULT_APP, error_type_name(exc))


def is_cancellation(exc: BaseException) -> bool:
    """True for asyncio cancellation and a generator closed early: outcome ``cancelled``."""
    return isinstance(exc, (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt))
