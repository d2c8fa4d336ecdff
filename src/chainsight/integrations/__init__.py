"""Opt-in integrations: the SDK calls of client libraries become stages by themselves.

``chainsight.instrument("openai", "anthropic", "qdrant", "chromadb")`` turns them on, the way an
OpenTelemetry instrumentor's ``instrument()`` does: on the libraries' classes, for every client
the process makes. ``chainsight.uninstrument(...)`` puts the original methods back. Nothing is
imported or patched until then: each library is imported by its own module here, when its
integration is turned on. See ``docs/integrations.md``.
"""

from __future__ import annotations

import importlib
import logging
from typing import Final

from chainsight.errors import ConfigurationError
from chainsight.integrations._patching import Integration

__all__ = ["AVAILABLE", "instrument", "uninstrument"]

logger = logging.getLogger("chainsight")

# The name users pass -> the module of chainsight that holds its integration.
AVAILABLE: Final = {
    "openai": "chainsight.integrations.openai",
    "anthropic": "chainsight.integrations.anthropic",
    "qdrant": "chainsight.integrations.qdrant",
    "chromadb": "chainsight.integrations.chromadb",
}


def _integration(name: object) -> Integration:
    if not isinstance(name, str) or name not in AVAILABLE:
        raise ConfigurationError(
            f"chainsight has no integration called {name!r}; "
            f"use one of {', '.join(sorted(AVAILABLE))}"
        )
    found: Integration = importlib.import_module(AVAILABLE[name]).INTEGRATION
    return found


def instrument(*names: str) -> tuple[str, ...]:
    """Turn integrations on: ``chainsight.instrument("openai", "qdrant")``; with no name, every
    integration whose library is installed. Returns the names that are on after the call.

    An unknown name raises :class:`ConfigurationError`. A named library that is not installed
    is skipped with a warning on the ``chainsight`` logger (an optional dependency missing in
    one deployment does not stop the app). Calling it again is harmless.
    """
    explicit = bool(names)
    chosen = [_integration(name) for name in names] if explicit else _all()
    for integration in chosen:
        try:
            integration.instrument()
        except ImportError as exc:
            if explicit:
                logger.warning(
                    "chainsight.instrument(%r): %s is not installed (%s); that integration "
                    "stays off. Install it, or drop the name.",
                    integration.name,
                    integration.module,
                    exc,
                )
    return tuple(i.name for i in _all() if i.on)


def uninstrument(*names: str) -> None:
    """Turn integrations off and put the libraries' original methods back; with no name, all.

    An unknown name raises :class:`ConfigurationError`; one that is off is left alone.
    """
    for integration in [_integration(name) for name in names] if names else _all():
        integration.uninstrument()


def _all() -> list[Integration]:
    return [_integration(name) for name in AVAILABLE]
