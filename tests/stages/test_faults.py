"""Fault-domain classification: the table, and that it is total."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import chainsight
from chainsight.stages.faults import classify, is_cancellation
from chainsight.testing import Capture


def named(name: str, base: type[BaseException] = Exception, **attrs: object) -> BaseException:
    cls = type(name, (base,), {})
    exc = cls("x")
    for key, value in attrs.items():
        setattr(exc, key, value)
    return exc


@pytest.mark.parametrize(
    ("exc", "kind", "remote", "expected"),
    [
        (named("APITimeoutError"), "model", "provider", ("provider", "timeout")),
        (named("RateLimitError", status_code=429), "model", "provider", ("provider", "rate_limited")),
        (named("InternalServerError", status_code=500), "model", "provider", ("provider", "server_error")),
        (named("BadRequestError", status_code=400), "model", "provider", ("app", "bad_request")),
        (named("BadRequestError", status_code=400, code="context_length_exceeded"), "model",
         "provider", ("app", "context_length")),
        (named("ContextWindowExceededError", status_code=400), "model", "provider",
         ("app", "context_length")),
        (named("AuthenticationError", status_code=401), "model", "provider", ("app", "auth")),
        (named("NotFoundError", status_code=404), "model", "provider", ("app", "not_found")),
        (named("OverloadedError", status_code=529), "model", "provider", ("provider", "server_error")),
        (named("UnexpectedResponse", status_code=503), "retrieval", "vector_store",
         ("vector_store", "server_error")),
        (named("ReadTimeout"), "retrieval", "vector_store", ("vector_store", "timeout")),
        (json.JSONDecodeError("bad", "{", 0), "validation", "model", ("model", "malformed_output")),
        (json.JSONDecodeError("bad", "{", 0), "prompt", "app",
         ("app", "json.decoder.JSONDecodeError")),
        (named("ValidationError"), "validation", "model", ("model", "validation_failed")),
        (named("ValidationError"), "prompt", "app", ("app", "tests.stages.test_faults.ValidationError")),
        (named("ContentFilterFinishReasonError"), "model", "provider", ("model", "content_filter")),
        (KeyError("k"), "prompt", "app", ("app", "KeyError")),
    ],
)  # fmt: skip
def test_table(exc: BaseException, kind: str, remote: str, expected: tuple[str, str]) -> None:
    assert tuple(classify(exc, kind, remote)) == expected


def test_origin_is_kept_by_the_stages_not_on_the_exception(chainsight_capture: Capture) -> None:
    exc = TimeoutError("slow")  # a built-in: takes no weak reference and no new attribute
    mine = ValueError("mine")

    def answer() -> None:
        with chainsight.request("answer"), chainsight.stage("retrieval", name="outer"):
            try:
                with chainsight.stage("retrieval", name="inner", system="qdrant"):
                    raise exc
            except TimeoutError as caught:
                # A sibling fails and is handled in between: the first error keeps its origin.
                with contextlib.suppress(ValueError), chainsight.stage("tool", name="side"):
                    raise mine from None
                raise caught from None

    with pytest.raises(TimeoutError) as raised:
        answer()
    assert raised.value is exc
    assert vars(mine) == {}
    by_name = {s.name: s for s in chainsight_capture.stages}
    for name in ("outer", "answer"):
        assert by_name[name].attributes["chainsight.error.origin"] == "inner"
        assert by_name[name].attributes["chainsight.fault"] == "vector_store"
    assert by_name["side"].attributes["chainsight.error.origin"] == "side"


def test_cancellation() -> None:
    import asyncio

    assert is_cancellation(asyncio.CancelledError())
    assert is_cancellation(GeneratorExit())
    assert not is_cancellation(ValueError())


@given(
    name=st.text(min_size=1, max_size=30).filter(str.isidentifier),
    status=st.one_of(st.none(), st.integers(), st.text(max_size=3)),
    kind=st.sampled_from(["model", "retrieval", "prompt", "validation", "tool"]),
    remote=st.sampled_from(["app", "provider", "vector_store", "model"]),
)
def test_classify_is_total(name: str, status: object, kind: str, remote: str) -> None:
    exc = named(name, status_code=status)
    fault, error_type = classify(exc, kind, remote)
    assert fault in ("app", "model", "vector_store", "provider")
    assert error_type
