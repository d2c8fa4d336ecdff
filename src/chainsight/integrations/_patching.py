"""Turning one integration on and off: replace SDK methods, and put the originals back exactly.

Each integration describes what it replaces as a *plan*, a function that imports its library
(only then: nothing is imported while the integration is off) and returns the
``(class, method name, replacement maker)`` triples and the stream types to observe. On
``instrument`` each original is read from the class's own ``__dict__`` and remembered; on
``uninstrument`` it is put back as it was (or the attribute removed, if the class had only
inherited it), so the class is left exactly as it was found.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from chainsight.integrations._streams import register, unregister

__all__ = ["Integration", "Plan", "after_fork_in_child"]

_MISSING: Final = object()
# One lock for turning any integration on or off (rare, at start-up). Made anew in a forked
# child: a thread of the parent holding it at fork() would otherwise hold it for ever there.
_LOCK = threading.Lock()
_fork_hook_installed = False


def after_fork_in_child() -> None:
    """Renew the lock in a forked child (registered at the first ``instrument()``)."""
    global _LOCK
    _LOCK = threading.Lock()


def _install_fork_hook() -> None:
    # At the first instrument(), never at import: nothing happens at import.
    global _fork_hook_installed
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=after_fork_in_child)
        _fork_hook_installed = True


Replacement = Callable[[Callable[..., Any]], Callable[..., Any]]


class Plan(NamedTuple):
    """What an integration replaces, and which of its results are streams."""

    patches: list[tuple[type, str, Replacement]]
    stream_types: tuple[type, ...] = ()


class Integration:
    """One library's integration: ``instrument()``/``uninstrument()``, idempotent, thread-safe."""

    def __init__(self, name: str, module: str, plan: Callable[[], Plan]) -> None:
        """``module`` is the library's import name; ``plan`` imports it and says what to patch."""
        self.name = name
        self.module = module
        self._plan = plan
        self._saved: list[tuple[type, str, object]] = []
        self._stream_types: tuple[type, ...] = ()
        self.on = False

    def instrument(self) -> None:
        """Replace the library's methods (a no-op if already on). Raises ImportError if the
        library is not installed, leaving nothing half-done."""
        _install_fork_hook()
        with _LOCK:
            if self.on:
                return
            plan = self._plan()
            saved: list[tuple[type, str, object]] = []
            try:
                for owner, attr, make in plan.patches:
                    original = owner.__dict__.get(attr, _MISSING)
                    replacement = make(getattr(owner, attr))
                    setattr(owner, attr, replacement)
                    saved.append((owner, attr, original))
            except BaseException:
                _restore(saved)
                raise
            self._saved = saved
            self._stream_types = plan.stream_types
            register(*plan.stream_types)
            self.on = True

    def uninstrument(self) -> None:
        """Put every original back (a no-op if off)."""
        with _LOCK:
            if not self.on:
                return
            _restore(self._saved)
            unregister(*self._stream_types)
            self._saved, self._stream_types = [], ()
            self.on = False


def _restore(saved: list[tuple[type, str, object]]) -> None:
    for owner, attr, original in reversed(saved):
        if original is _MISSING:
            delattr(owner, attr)
        else:
            setattr(owner, attr, original)
