"""The fingerprint of a third-party function's source, for the tests that hold chainsight's
short ways to the code they reproduce or rely on (the OTel SDK, prometheus-client)."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["fingerprint"]


def fingerprint(func: Callable[..., Any]) -> str:
    """The first 16 hex digits of the sha256 of ``func``'s source."""
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()[:16]
