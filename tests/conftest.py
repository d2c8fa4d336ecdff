"""Shared test setup: chainsight's own bugs are raised, not swallowed, and state is reset."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Our own suite wants internal errors raised so bugs show (users get them counted and logged).
os.environ.setdefault("CHAINSIGHT_RAISE_INTERNAL_ERRORS", "1")

import chainsight


@pytest.fixture(autouse=True)
def _reset_chainsight() -> Iterator[None]:
    chainsight.reset()
    yield
    chainsight.reset()
