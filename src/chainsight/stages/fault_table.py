"""The built-in table: which client library's exception means which failure.

Exceptions are recognised by the module their class lives in and the class name, over the MRO,
so nothing here imports a client library and a subclass (an SDK's own, or the application's) is
recognised like its base. A lookup is one dict probe per class in the MRO: classification runs
only on errors, but a retry storm makes many.

A :class:`Hit` says *where* a failure belongs relative to the stage (``remote``: the stage's
remote component; ``app``; ``model``; ``output``: the model's, but only in a stage that reads
model output) and the error type. ``faults`` turns ``remote`` into a fault domain. The table is
documented row by row in ``docs/faults.md``: change both together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

from chainsight import _names as n

__all__ = ["APP", "MODEL", "OUTPUT", "OWNERS", "REMOTE", "Hit", "lookup", "module_root"]

REMOTE: Final = "remote"  # the stage's remote component failed us: timeout, 429, 5xx, connection
APP: Final = "app"  # the remote side refused what we sent: 4xx, auth, context length
MODEL: Final = "model"  # the model answered, but unusably: content filter
OUTPUT: Final = "output"  # the model's output did not parse, where reading it is the stage's work

# Stage kinds whose own work is reading the model's output: a parse error there is the model's.
OUTPUT_KINDS: Final = frozenset({"model", "validation"})
# How deep a handler may look into an exception it wraps (``source``, ``reason``, retries).
_INNER_DEPTH: Final = 3
# How many members of an exception group are looked at.
_GROUP_MEMBERS: Final = 8


class Hit(NamedTuple):
    """A recognised failure: where it belongs, its error type, and the library's own domain."""

    where: str
    error_type: str
    owner: str | None = None


Verdict = tuple[str, str]
Handler = Callable[[BaseException, str, int], "Hit | None"]

TIMEOUT: Final[Verdict] = (REMOTE, n.ERR_TIMEOUT)
CONNECTION: Final[Verdict] = (REMOTE, n.ERR_CONNECTION)
RATE_LIMITED: Final[Verdict] = (REMOTE, n.ERR_RATE_LIMITED)
SERVER_ERROR: Final[Verdict] = (REMOTE, n.ERR_SERVER_ERROR)
BAD_REQUEST: Final[Verdict] = (APP, n.ERR_BAD_REQUEST)
AUTH: Final[Verdict] = (APP, n.ERR_AUTH)
NOT_FOUND: Final[Verdict] = (APP, n.ERR_NOT_FOUND)
CONTEXT_LENGTH: Final[Verdict] = (APP, n.ERR_CONTEXT_LENGTH)
BUDGET: Final[Verdict] = (APP, n.ERR_BUDGET_EXCEEDED)
CONTENT_FILTER: Final[Verdict] = (MODEL, n.ERR_CONTENT_FILTER)
LENGTH: Final[Verdict] = (MODEL, n.ERR_CONTEXT_LENGTH)
MALFORMED: Final[Verdict] = (OUTPUT, n.ERR_MALFORMED_OUTPUT)
INVALID: Final[Verdict] = (OUTPUT, n.ERR_VALIDATION_FAILED)

#: The fault domain a library's *remote* failures belong to whatever stage it runs in; libraries
#: not listed (transports, databases that are not only vector stores) take the stage's.
OWNERS: Final[Mapping[str, str]] = {
    "openai": n.FAULT_PROVIDER,
    "anthropic": n.FAULT_PROVIDER,
    "google.genai": n.FAULT_PROVIDER,
    "cohere": n.FAULT_PROVIDER,
    "mistralai": n.FAULT_PROVIDER,
    "litellm": n.FAULT_PROVIDER,
    "qdrant_client": n.FAULT_VECTOR_STORE,
    "chromadb": n.FAULT_VECTOR_STORE,
    "pinecone": n.FAULT_VECTOR_STORE,
    "weaviate": n.FAULT_VECTOR_STORE,
    "pymilvus": n.FAULT_VECTOR_STORE,
}


def module_root(module: str) -> str:
    """The distribution a module belongs to: its top package (two levels for ``google``)."""
    root, _, rest = module.partition(".")
    if root == "google" and rest:
        return f"google.{rest.partition('.')[0]}"
    return root


# --- HTTP and gRPC status ----------------------------------------------------------------------
def status_of(exc: BaseException) -> int | None:
    """An HTTP status on ``exc``: ``status_code``, ``status``, ``http_status`` or
    ``response.status_code`` (ints from 100 to 599 only)."""
    for attr in ("status_code", "status", "http_status"):
        try:
            value = getattr(exc, attr, None)
        except Exception:  # a property that raises (elasticsearch without meta) is no status
            value = None
        if type(value) is int and 100 <= value <= 599:
            return value
    response = getattr(exc, "response", None)
    if response is not None:
        value = getattr(response, "status_code", None)
        if type(value) is int and 100 <= value <= 599:
            return value
    return None


def by_status(status: int) -> Verdict | None:
    """What an HTTP status says: 429, 408/504, 5xx are remote; other 4xx are the app's."""
    if status == 429:
        return RATE_LIMITED
    if status in (408, 504):
        return TIMEOUT
    if status >= 500:
        return SERVER_ERROR
    if status in (401, 403):
        return AUTH
    if status == 404:
        return NOT_FOUND
    if status == 413:
        return CONTEXT_LENGTH
    if 400 <= status < 500:
        return BAD_REQUEST
    return None


GRPC_CODES: Final[Mapping[str, Verdict]] = {
    "UNAVAILABLE": CONNECTION,
    "DEADLINE_EXCEEDED": TIMEOUT,
    "RESOURCE_EXHAUSTED": RATE_LIMITED,
    "INTERNAL": SERVER_ERROR,
    "UNKNOWN": SERVER_ERROR,
    "DATA_LOSS": SERVER_ERROR,
    "ABORTED": SERVER_ERROR,
    "CANCELLED": CONNECTION,
    "INVALID_ARGUMENT": BAD_REQUEST,
    "FAILED_PRECONDITION": BAD_REQUEST,
    "OUT_OF_RANGE": BAD_REQUEST,
    "ALREADY_EXISTS": BAD_REQUEST,
    "UNIMPLEMENTED": BAD_REQUEST,
    "UNAUTHENTICATED": AUTH,
    "PERMISSION_DENIED": AUTH,
    "NOT_FOUND": NOT_FOUND,
}

# botocore ClientError codes (Bedrock, SageMaker, OpenSearch Serverless, S3 ...); others go by
# the HTTP status in ResponseMetadata.
BOTO_CODES: Final[Mapping[str, Verdict]] = {
    "ThrottlingException": RATE_LIMITED,
    "Throttling": RATE_LIMITED,
    "TooManyRequestsException": RATE_LIMITED,
    "ServiceQuotaExceededException": RATE_LIMITED,
    "ProvisionedThroughputExceededException": RATE_LIMITED,
    "RequestLimitExceeded": RATE_LIMITED,
    "SlowDown": RATE_LIMITED,
    "ModelTimeoutException": TIMEOUT,
    "RequestTimeout": TIMEOUT,
    "RequestTimeoutException": TIMEOUT,
    "ServiceUnavailable": SERVER_ERROR,
    "ServiceUnavailableException": SERVER_ERROR,
    "InternalServerException": SERVER_ERROR,
    "InternalFailure": SERVER_ERROR,
    "InternalError": SERVER_ERROR,
    "ModelErrorException": SERVER_ERROR,
    "ModelNotReadyException": SERVER_ERROR,
    "ModelStreamErrorException": SERVER_ERROR,
    "ValidationException": BAD_REQUEST,
    "AccessDeniedException": AUTH,
    "UnrecognizedClientException": AUTH,
    "ExpiredTokenException": AUTH,
    "InvalidSignatureException": AUTH,
    "UnauthorizedException": AUTH,
    "ResourceNotFoundException": NOT_FOUND,
}


def _hit(verdict: Verdict | None) -> Hit | None:
    return None if verdict is None else Hit(*verdict)


def _by_status_attr(exc: BaseException, kind: str, depth: int) -> Hit | None:
    status = status_of(exc)
    return None if status is None else _hit(by_status(status))


def _openai_status(exc: BaseException, kind: str, depth: int) -> Hit | None:
    # OpenAI (and LiteLLM, Azure) say context_length_exceeded in the error code of a 400.
    if getattr(exc, "code", None) == "context_length_exceeded":
        return Hit(*CONTEXT_LENGTH)
    return _by_status_attr(exc, kind, depth)


def _grpc(exc: BaseException, kind: str, depth: int) -> Hit | None:
    # Only grpc.RpcError subclasses get here; code() is the call's status (grpc.StatusCode).
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    try:
        name = getattr(code(), "name", None)
    except Exception:  # a bare RpcError() has no status: not recognised
        return None
    return _hit(GRPC_CODES.get(name)) if isinstance(name, str) else None


def _google_genai(exc: BaseException, kind: str, depth: int) -> Hit | None:
    code = getattr(exc, "code", None)  # the HTTP status, as an int
    if type(code) is int and 100 <= code <= 599:
        return _hit(by_status(code))
    status = getattr(exc, "status", None)  # e.g. "RESOURCE_EXHAUSTED"
    return _hit(GRPC_CODES.get(status)) if isinstance(status, str) else None


def _botocore(exc: BaseException, kind: str, depth: int) -> Hit | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error")
    code = error.get("Code") if isinstance(error, dict) else None
    if isinstance(code, str) and code in BOTO_CODES:
        return Hit(*BOTO_CODES[code])
    meta = response.get("ResponseMetadata")
    status = meta.get("HTTPStatusCode") if isinstance(meta, dict) else None
    if type(status) is int:
        return _hit(by_status(status))
    return None


def _wrapping(attr: str, otherwise: Verdict) -> Handler:
    """A wrapper that keeps the real error in ``attr``: recognise that, else ``otherwise``."""

    def handler(exc: BaseException, kind: str, depth: int) -> Hit | None:
        inner = getattr(exc, attr, None)
        if isinstance(inner, BaseException) and inner is not exc and depth < _INNER_DEPTH:
            found = lookup(inner, kind, depth + 1)[0]
            if found is not None and found.where != OUTPUT:
                return found
        return Hit(*otherwise)

    return handler


def _tenacity_retry(exc: BaseException, kind: str, depth: int) -> Hit | None:
    # RetryError keeps the last attempt's exception in a future, not in __cause__.
    attempt = getattr(exc, "last_attempt", None)
    getter = getattr(attempt, "exception", None)
    if not callable(getter) or depth >= _INNER_DEPTH:
        return None
    try:
        inner = getter(timeout=0)
    except Exception:
        return None
    if isinstance(inner, BaseException):
        return lookup(inner, kind, depth + 1)[0]
    return None


def _group(exc: BaseException, kind: str, depth: int) -> Hit | None:
    # asyncio.TaskGroup and trio raise a group of what failed: the first member recognised.
    members = getattr(exc, "exceptions", None)
    if not isinstance(members, tuple) or depth >= _INNER_DEPTH:
        return None
    for member in members[:_GROUP_MEMBERS]:
        if isinstance(member, BaseException):
            found = lookup(member, kind, depth + 1)[0]
            if found is not None:
                return found
    return None


Entry = Verdict | Handler
_HTTPX: Final[Mapping[str, Entry]] = {
    "TimeoutException": TIMEOUT,
    "NetworkError": CONNECTION,
    "RemoteProtocolError": CONNECTION,
    "ProxyError": CONNECTION,
    "HTTPStatusError": _by_status_attr,
    "UnsupportedProtocol": BAD_REQUEST,
    "LocalProtocolError": BAD_REQUEST,
    "InvalidURL": BAD_REQUEST,
}
_HTTPCORE: Final[Mapping[str, Entry]] = {
    "TimeoutException": TIMEOUT,
    "NetworkError": CONNECTION,
    "RemoteProtocolError": CONNECTION,
    "ProxyError": CONNECTION,
    "UnsupportedProtocol": BAD_REQUEST,
    "LocalProtocolError": BAD_REQUEST,
}
# The OpenAI SDK's classes; Anthropic's and LiteLLM's follow the same shape.
_OPENAI_LIKE: Final[Mapping[str, Entry]] = {
    "APITimeoutError": TIMEOUT,
    "APIConnectionError": CONNECTION,
    "RateLimitError": RATE_LIMITED,
    "InternalServerError": SERVER_ERROR,
    "APIResponseValidationError": SERVER_ERROR,
    "BadRequestError": _openai_status,
    "UnprocessableEntityError": BAD_REQUEST,
    "ConflictError": BAD_REQUEST,
    "AuthenticationError": AUTH,
    "PermissionDeniedError": AUTH,
    "NotFoundError": NOT_FOUND,
    "APIStatusError": _openai_status,
    "ContentFilterFinishReasonError": CONTENT_FILTER,
    "LengthFinishReasonError": LENGTH,
}
_ANTHROPIC_EXTRA: Final[Mapping[str, Entry]] = {
    "OverloadedError": SERVER_ERROR,
    "ServiceUnavailableError": SERVER_ERROR,
    "GatewayTimeoutError": TIMEOUT,
    "RequestTimeoutError": TIMEOUT,
    "ContentTooLargeError": CONTEXT_LENGTH,
    "CredentialsError": AUTH,
}
_LITELLM_EXTRA: Final[Mapping[str, Entry]] = {
    "Timeout": TIMEOUT,
    "ContextWindowExceededError": CONTEXT_LENGTH,
    "ContentPolicyViolationError": CONTENT_FILTER,
    "ServiceUnavailableError": SERVER_ERROR,
    "BadGatewayError": SERVER_ERROR,
    "BudgetExceededError": BUDGET,
}
_BUILTINS: Final[Mapping[str, Entry]] = {
    "TimeoutError": TIMEOUT,  # also socket.timeout, and asyncio's since Python 3.11
    "ConnectionError": CONNECTION,  # refused, reset, aborted, broken pipe
    "BaseExceptionGroup": _group,  # Python 3.11+
}


def _rows(root: str, rows: Mapping[str, Entry]) -> dict[tuple[str, str], Entry]:
    return {(root, name): entry for name, entry in rows.items()}


TABLE: Final[dict[tuple[str, str], Entry]] = {
    **_rows("builtins", _BUILTINS),
    **_rows("asyncio", {"TimeoutError": TIMEOUT}),  # Python 3.10's distinct asyncio.TimeoutError
    **_rows("concurrent", {"TimeoutError": TIMEOUT}),
    **_rows("socket", {"gaierror": CONNECTION}),
    **_rows("json", {"JSONDecodeError": MALFORMED}),
    **_rows("pydantic_core", {"ValidationError": INVALID}),
    **_rows("pydantic", {"ValidationError": INVALID}),
    **_rows("langchain_core", {"OutputParserException": MALFORMED}),
    **_rows("tenacity", {"RetryError": _tenacity_retry}),
    **_rows("exceptiongroup", {"BaseExceptionGroup": _group}),  # the backport, Python 3.10
    # transports
    **_rows("httpx", _HTTPX),
    **_rows("httpx2", _HTTPX),
    **_rows("httpcore", _HTTPCORE),
    **_rows("httpcore2", _HTTPCORE),
    **_rows("requests", {
        "Timeout": TIMEOUT,  # ConnectTimeout is a Timeout first, then a ConnectionError
        "ConnectTimeout": TIMEOUT,
        "ConnectionError": CONNECTION,
        "ChunkedEncodingError": CONNECTION,
        "HTTPError": _by_status_attr,
        "InvalidURL": BAD_REQUEST,
        "MissingSchema": BAD_REQUEST,
        "InvalidSchema": BAD_REQUEST,
    }),
    **_rows("urllib3", {
        "NewConnectionError": CONNECTION,  # a subclass of ConnectTimeoutError, but a refusal
        "NameResolutionError": CONNECTION,
        "TimeoutError": TIMEOUT,
        "ProtocolError": CONNECTION,
        "SSLError": CONNECTION,
        "ProxyError": CONNECTION,
        "MaxRetryError": _wrapping("reason", CONNECTION),
    }),
    **_rows("aiohttp", {
        "ServerTimeoutError": TIMEOUT,
        "ClientConnectionError": CONNECTION,
        "ClientPayloadError": CONNECTION,
        "ClientResponseError": _by_status_attr,
        "InvalidURL": BAD_REQUEST,
    }),
    **_rows("grpc", {"RpcError": _grpc}),
    **_rows("botocore", {
        "ClientError": _botocore,
        "ConnectTimeoutError": TIMEOUT,
        "ReadTimeoutError": TIMEOUT,
        "ConnectionError": CONNECTION,
        "ConnectionClosedError": CONNECTION,
        "ResponseStreamingError": CONNECTION,
        "NoCredentialsError": AUTH,
        "PartialCredentialsError": AUTH,
        "ParamValidationError": BAD_REQUEST,
    }),
    # model providers
    **_rows("openai", _OPENAI_LIKE),
    **_rows("anthropic", {**_OPENAI_LIKE, **_ANTHROPIC_EXTRA}),
    **_rows("litellm", _LITELLM_EXTRA),  # the rest are subclasses of OpenAI's
    **_rows("google.genai", {"APIError": _google_genai}),
    **_rows("cohere", {"ApiError": _by_status_attr}),
    **_rows("mistralai", {
        "NoResponseError": CONNECTION,
        "ResponseValidationError": SERVER_ERROR,
        "MistralError": _by_status_attr,
    }),
    # vector stores and databases
    **_rows("qdrant_client", {
        "UnexpectedResponse": _by_status_attr,
        "ResponseHandlingException": _wrapping("source", CONNECTION),
    }),
    **_rows("chromadb", {
        "InternalError": SERVER_ERROR,
        "RateLimitError": RATE_LIMITED,
        "QuotaError": RATE_LIMITED,
        "NotFoundError": NOT_FOUND,
        "AuthorizationError": AUTH,
        "ChromaAuthError": AUTH,
        "InvalidArgumentError": BAD_REQUEST,
        "InvalidDimensionException": BAD_REQUEST,
        "DuplicateIDError": BAD_REQUEST,
        "IDAlreadyExistsError": BAD_REQUEST,
        "UniqueConstraintError": BAD_REQUEST,
        "BatchSizeExceededError": BAD_REQUEST,
        "InvalidUUIDError": BAD_REQUEST,
        "VersionMismatchError": BAD_REQUEST,
    }),
    **_rows("pinecone", {
        "ServiceError": SERVER_ERROR,
        "RateLimitError": RATE_LIMITED,
        "UnauthorizedError": AUTH,
        "ForbiddenError": AUTH,
        "NotFoundError": NOT_FOUND,
        "PineconeApiException": _by_status_attr,
        "ApiError": _by_status_attr,
    }),
    **_rows("weaviate", {
        "WeaviateStartUpError": CONNECTION,
        "WeaviateConnectionError": CONNECTION,
        "WeaviateTimeoutError": TIMEOUT,
        "AuthenticationFailedException": AUTH,
        "UnexpectedStatusCodeException": _by_status_attr,
        "UnexpectedStatusCodeError": _by_status_attr,
    }),
    **_rows("pymilvus", {
        "MilvusUnavailableException": CONNECTION,
        "ConnectError": CONNECTION,
        "ParamError": BAD_REQUEST,
        "DataTypeNotMatchException": BAD_REQUEST,
        "DataNotMatchException": BAD_REQUEST,
        "SchemaNotReadyException": BAD_REQUEST,
        "CollectionNotExistException": NOT_FOUND,
        "IndexNotExistException": NOT_FOUND,
    }),
    **_rows("psycopg", {
        "QueryCanceled": TIMEOUT,  # statement_timeout (and pg_cancel_backend)
        "ConnectionTimeout": TIMEOUT,
        "InvalidPassword": AUTH,
        "InvalidAuthorizationSpecification": AUTH,
        "InsufficientPrivilege": AUTH,
        "OperationalError": CONNECTION,
        "ProgrammingError": BAD_REQUEST,
        "DataError": BAD_REQUEST,
        "IntegrityError": BAD_REQUEST,
    }),
    **_rows("psycopg2", {
        "QueryCanceledError": TIMEOUT,
        "QueryCanceled": TIMEOUT,
        "InsufficientPrivilege": AUTH,
        "OperationalError": CONNECTION,
        "ProgrammingError": BAD_REQUEST,
        "DataError": BAD_REQUEST,
        "IntegrityError": BAD_REQUEST,
    }),
    **_rows("asyncpg", {
        "QueryCanceledError": TIMEOUT,
        "InvalidAuthorizationSpecificationError": AUTH,
        "InsufficientPrivilegeError": AUTH,
        "PostgresConnectionError": CONNECTION,
        "CannotConnectNowError": CONNECTION,
        "TooManyConnectionsError": CONNECTION,
        "AdminShutdownError": CONNECTION,
        "SyntaxOrAccessError": BAD_REQUEST,
        "DataError": BAD_REQUEST,
        "IntegrityConstraintViolationError": BAD_REQUEST,
    }),
    **_rows("redis", {
        "AuthenticationError": AUTH,  # a subclass of redis' ConnectionError
        "AuthorizationError": AUTH,
        "NoPermissionError": AUTH,
        "BusyLoadingError": SERVER_ERROR,
        "ClusterDownError": SERVER_ERROR,
        "TryAgainError": SERVER_ERROR,
        "OutOfMemoryError": SERVER_ERROR,
        "TimeoutError": TIMEOUT,
        "ConnectionError": CONNECTION,
        "ResponseError": BAD_REQUEST,
    }),
    **_rows("elastic_transport", {
        "ConnectionTimeout": TIMEOUT,
        "ConnectionError": CONNECTION,
        "ApiError": _by_status_attr,
    }),
    **_rows("elasticsearch", {
        "ConnectionTimeout": TIMEOUT,
        "ConnectionError": CONNECTION,
        "ApiError": _by_status_attr,
    }),
    **_rows("opensearchpy", {
        "ConnectionTimeout": TIMEOUT,
        "ConnectionError": CONNECTION,  # SSLError too
        "TransportError": _by_status_attr,
    }),
}  # fmt: skip


def lookup(exc: BaseException, kind: str, depth: int = 0) -> tuple[Hit | None, str | None]:
    """Recognise one exception (not its chain): the hit, and the domain of the library it is
    from (``None`` for transports). An ``output`` row counts only in an output stage kind."""
    owner: str | None = None
    for cls in type(exc).__mro__:
        module = cls.__module__
        root = module_root(module) if isinstance(module, str) else ""
        if owner is None:
            owner = OWNERS.get(root)
        entry = TABLE.get((root, cls.__name__))
        if entry is None:
            continue
        if isinstance(entry, tuple):
            hit: Hit | None = Hit(*entry)
        else:
            hit = entry(exc, kind, depth)
        if hit is None or (hit.where == OUTPUT and kind not in OUTPUT_KINDS):
            continue
        return hit if hit.owner is not None or owner is None else hit._replace(owner=owner), owner
    # An exception with an HTTP status from a library we do not list still says what happened.
    status = status_of(exc)
    verdict = None if status is None else by_status(status)
    return (None if verdict is None else Hit(*verdict, owner)), owner
