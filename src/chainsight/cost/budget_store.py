"""Where budget spend lives: the :class:`BudgetStore` protocol and the default in-process store.

The shared store for several processes or hosts is
:class:`~chainsight.cost.budget_redis.RedisBudgetStore`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Final, NamedTuple, Protocol

__all__ = ["BudgetCharge", "BudgetSlot", "BudgetStore", "InProcessBudgetStore"]

#: Kept past the end of a window so a straggling settle still lands in a key that exists.
_KEY_GRACE_SECONDS: Final = 60.0


class BudgetSlot(NamedTuple):
    """One budget window to admit a call against."""

    key: str
    limit_usd: float
    ttl: float  # seconds until the window ends


class BudgetCharge(NamedTuple):
    """A cost to add to one budget window."""

    key: str
    usd: float
    ttl: float  # seconds until the window ends


class BudgetStore(Protocol):
    """Where budget spend lives. Every method is atomic across all the keys it is given.

    A key holds the window's spend, the largest single charge seen in it, and the in-flight
    reservations (token → expiry). Keys expire by themselves ``ttl`` seconds from the call.
    Implementations raise (any exception) when the store cannot answer.
    """

    def reserve(
        self, slots: Sequence[BudgetSlot], token: str, now: float, hold: float
    ) -> tuple[int | None, list[float]]:
        """Admit or refuse one call against every slot at once.

        Drop reservations that expired at ``now``; then if for some slot ``spent +
        in_flight * largest_charge >= limit`` return its index and reserve nothing; else
        reserve ``token`` until ``now + hold`` in every slot and return None. Also return the
        spend of every slot.
        """
        ...

    def add(
        self, charges: Sequence[BudgetCharge], token: str | None, now: float
    ) -> list[tuple[float, float]]:
        """Release ``token``'s reservation (if any) and add each charge; return (before, after)
        spend per charge."""
        ...

    def spent(self, keys: Sequence[str], now: float) -> list[float]:
        """The current spend of each key (0.0 for a key that does not exist)."""
        ...


class _Entry:
    __slots__ = ("expires", "largest", "reservations", "spent")

    def __init__(self) -> None:
        self.spent = 0.0
        self.largest = 0.0
        self.expires = 0.0
        self.reservations: dict[str, float] = {}


class InProcessBudgetStore:
    """The default store: spend held in this process's memory, guarded by one lock.

    Right for a single process; replicas each keep their own totals (use
    :class:`RedisBudgetStore` to share them).
    """

    _SWEEP_EVERY: Final = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._next_sweep = -math.inf

    def after_fork_in_child(self) -> None:
        """A lock held by another thread at ``fork()`` would stay held forever in the child."""
        self._lock = threading.Lock()

    def _entry(self, key: str, now: float, ttl: float | None) -> _Entry:
        # Caller holds the lock.
        if now >= self._next_sweep:
            self._next_sweep = now + self._SWEEP_EVERY
            for stale in [k for k, e in self._entries.items() if e.expires <= now]:
                del self._entries[stale]
        entry = self._entries.get(key)
        if entry is None or entry.expires <= now:
            entry = _Entry()
            self._entries[key] = entry
        if ttl is not None:
            entry.expires = now + ttl + _KEY_GRACE_SECONDS
        return entry

    def reserve(
        self, slots: Sequence[BudgetSlot], token: str, now: float, hold: float
    ) -> tuple[int | None, list[float]]:
        """Admit or refuse one call against every slot at once (see :class:`BudgetStore`)."""
        with self._lock:
            entries = [self._entry(slot.key, now, slot.ttl) for slot in slots]
            refused: int | None = None
            for i, (slot, entry) in enumerate(zip(slots, entries, strict=True)):
                for expired in [t for t, until in entry.reservations.items() if until <= now]:
                    del entry.reservations[expired]
                held = len(entry.reservations) * entry.largest
                if refused is None and entry.spent + held >= slot.limit_usd:
                    refused = i
            if refused is None:
                for entry in entries:
                    entry.reservations[token] = now + hold
            return refused, [entry.spent for entry in entries]

    def add(
        self, charges: Sequence[BudgetCharge], token: str | None, now: float
    ) -> list[tuple[float, float]]:
        """Release ``token`` and add each charge (see :class:`BudgetStore`)."""
        out: list[tuple[float, float]] = []
        with self._lock:
            for charge in charges:
                entry = self._entry(charge.key, now, charge.ttl)
                if token is not None:
                    entry.reservations.pop(token, None)
                before = entry.spent
                entry.spent += charge.usd
                entry.largest = max(entry.largest, charge.usd)
                out.append((before, entry.spent))
        return out

    def spent(self, keys: Sequence[str], now: float) -> list[float]:
        """The current spend of each key."""
        with self._lock:
            out = []
            for key in keys:
                entry = self._entries.get(key)
                out.append(entry.spent if entry is not None and entry.expires > now else 0.0)
            return out
