"""Attribute hygiene: legal types, capped strings, secrets never recorded."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainsight.stages.attrs import (
    MAX_ATTRIBUTE_LENGTH,
    clean_attributes,
    coerce,
    is_secret_name,
    safe_attribute,
)
from chainsight.stages.redact import Redactor


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("x", "x"),
        (True, True),
        (3, 3),
        (2**70, str(2**70)),
        (1.5, 1.5),
        (Colour.RED, "red"),
        ([1, 2], (1, 2)),
        ([1, "a"], ("1", "a")),
        ([], None),
        (None, None),
        (object(), None),
        ({"a": 1}, None),
        (b"bytes", None),
    ],
)
def test_coerce(value: object, expected: object) -> None:
    assert coerce(value) == expected


def test_long_strings_are_redacted_whole_then_capped() -> None:
    # coerce keeps the whole text: a cut before redaction could leave half a secret behind.
    assert coerce("x" * 100_000) == "x" * 100_000
    tail = "w " * 2046 + "dana.kim@example.com and more"
    kept = safe_attribute(Redactor(), tail)
    assert isinstance(kept, str)
    assert len(kept.encode()) <= MAX_ATTRIBUTE_LENGTH
    assert "dana" not in kept


@pytest.mark.parametrize(
    "name",
    ["api_key", "API-KEY", "authorization", "password", "token", "openai_api_key",
     "http.request.header.authorization", "client_secret", "db_password"],
)  # fmt: skip
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["input_tokens", "token_type", "model", "tokens", "author"])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_clean_attributes_skips_secrets() -> None:
    assert dict(clean_attributes({"api_key": "sk-1", "region": "eu"})) == {"region": "eu"}


@given(st.from_type(object) | st.lists(st.integers() | st.text()) | st.text())
def test_coerce_is_total(value: Any) -> None:
    result = coerce(value)
    assert result is None or isinstance(result, (str, bool, int, float, tuple))
