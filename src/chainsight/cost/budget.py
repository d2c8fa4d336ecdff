"""Budgets: a spend limit in USD per calendar window, with an in-process or a Redis store.

A :class:`Budget` says how much the calls matching a scope may spend per window. A
:class:`BudgetSet` (one per ``configure()``) holds the budgets and a :class:`BudgetStore`:

* :meth:`BudgetSet.admit` runs before a ``model`` stage calls its provider. It refuses when a hard
  budget is spent, and otherwise *reserves* one call's worth of the budget until
  :meth:`Admission.settle` adds the real cost. The reservation is what keeps concurrent callers
  (threads, processes, hosts) from all passing the check at ``limit - ε``: a call is admitted
  only while ``spent + in_flight * largest_call_cost < limit``, so the total stops within one
  call's cost of the limit.
* :meth:`BudgetSet.spend` adds a cost that was not admitted (an embedding call, say).
* :meth:`BudgetSet.states` feeds the gauges from memory, never from the network.

Nothing here raises into the application on the request path: a store that fails makes the
budget fail open (counted in ``store_errors``, logged once per outage), or refuse for a budget
with ``fail_closed=True``.

The budget definitions live in :mod:`chainsight.cost.budget_defs`, the stores in
:mod:`chainsight.cost.budget_store` (protocol, in-process) and :mod:`chainsight.cost.budget_redis`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Final, TypeVar

from chainsight.cost.budget_defs import Budget, BudgetState, _is_number
from chainsight.cost.budget_redis import RedisBudgetStore
from chainsight.cost.budget_store import BudgetCharge, BudgetSlot, BudgetStore, InProcessBudgetStore
from chainsight.errors import (
    BudgetExceeded,
    BudgetStoreUnavailable,
    ChainsightError,
    ConfigurationError,
)

# Budget and RedisBudgetStore are re-exported: the package and configure() import them from here.
__all__ = ["Admission", "Budget", "BudgetSet", "RedisBudgetStore"]

logger = logging.getLogger("chainsight")
_T = TypeVar("_T")

ADMISSION_SPENT: Final = "spent"
ADMISSION_STORE_UNAVAILABLE: Final = "store_unavailable"


def _expect(values: list[_T], n: int) -> list[_T]:
    # A store answering with the wrong number of values is broken: treat it as unreachable
    # rather than mis-attribute spend between budgets.
    if len(values) != n:
        raise BudgetStoreUnavailable(f"budget store answered {len(values)} values for {n} keys")
    return values


class Admission:
    """The answer of :meth:`BudgetSet.admit`: refused, or admitted with a reservation.

    ``refused`` is the budget that refused the call (None when admitted), ``spent_usd`` its
    last known spend, ``reason`` ``"spent"`` or ``"store_unavailable"`` (a ``fail_closed``
    budget whose store is down). An admitted call must be settled exactly once with its cost
    (0.0 when the call failed or its cost is unknown) so the reservation is released.
    """

    __slots__ = ("_budgets", "_owner", "_settled", "_token", "reason", "refused", "spent_usd")

    def __init__(
        self,
        owner: BudgetSet | None,
        budgets: tuple[Budget, ...],
        token: str | None,
        *,
        refused: Budget | None = None,
        spent_usd: float = 0.0,
        reason: str | None = None,
    ) -> None:
        self._owner = owner
        self._budgets = budgets
        self._token = token
        self._settled = refused is not None or owner is None
        self.refused = refused
        self.spent_usd = spent_usd
        self.reason = reason

    @property
    def covers(self) -> tuple[Budget, ...]:
        """The budgets this admission charges when it is settled."""
        return self._budgets

    def __repr__(self) -> str:
        who = self.refused.name if self.refused is not None else None
        return f"Admission(refused={who!r}, spent_usd={self.spent_usd!r}, reason={self.reason!r})"

    def error(self) -> BudgetExceeded:
        """The :class:`BudgetExceeded` to raise for a refused admission."""
        if self.refused is None:
            raise ChainsightError("Admission.error() called on an admitted call; check .refused")
        budget = self.refused
        return BudgetExceeded(budget.name, self.spent_usd, budget.limit_usd, budget.window)

    def settle(self, usd: float) -> None:
        """Add the call's cost to every matching budget and release the reservation.

        Only the first call counts; later ones (and settling a refused admission) do nothing.
        """
        if self._settled or self._owner is None:
            return
        self._settled = True
        self._owner._charge(self._budgets, usd, self._token)


_NOTHING_MATCHED: Final = Admission(None, (), None)


class BudgetSet:
    """The configured budgets and their store; what the request path asks before and after a
    model call.

    ``reservation_timeout``: how long an admitted call's reservation holds if it is never
    settled (a crashed process), in seconds.
    """

    def __init__(
        self,
        budgets: Sequence[Budget],
        store: BudgetStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
        reservation_timeout: float = 300.0,
    ) -> None:
        seen: set[str] = set()
        for budget in budgets:
            if not isinstance(budget, Budget):
                raise ConfigurationError(
                    f"budgets must be chainsight.Budget objects; got {budget!r}. "
                    f"Example: Budget('copilot-daily', 25.0, '1d', match={{'feature': 'copilot'}})."
                )
            if budget.name in seen:
                raise ConfigurationError(
                    f"two budgets are named {budget.name!r}; budget names must be unique "
                    f"(they are the `budget` metric label and the store key)."
                )
            seen.add(budget.name)
        if (
            not _is_number(reservation_timeout)
            or not math.isfinite(reservation_timeout)
            or reservation_timeout <= 0
        ):
            raise ConfigurationError(
                f"reservation_timeout must be a finite number of seconds > 0; got "
                f"{reservation_timeout!r}."
            )
        self.budgets: tuple[Budget, ...] = tuple(budgets)
        self.store: BudgetStore = store if store is not None else InProcessBudgetStore()
        self.store_errors = 0
        self.last_error: BaseException | None = None
        self._clock = clock
        self._hold = float(reservation_timeout)
        self._lock = threading.Lock()
        self._charge_lock = threading.Lock()
        self._known: dict[str, tuple[str, float]] = {}  # budget name → (period, spent)
        self._pending: dict[str, tuple[Budget, str, float]] = {}  # key → (budget, period, usd)
        self._logged: set[tuple[str, str, str]] = set()  # (budget, period, what)
        self._store_ok = True

    def after_fork_in_child(self) -> None:
        """In a forked child: fresh locks, here and in the store (chainsight's fork hook).

        A request thread of the parent may have held one at fork time; it would stay held for
        ever in the child. A store of the app's own making renews itself if it has this method.
        """
        self._lock = threading.Lock()
        self._charge_lock = threading.Lock()
        renew = getattr(self.store, "after_fork_in_child", None)
        if callable(renew):
            renew()

    # --- store outcomes -------------------------------------------------------------------

    def _store_failed(self, exc: BaseException, during: str) -> None:
        with self._lock:
            self.store_errors += 1
            self.last_error = exc
            first = self._store_ok
            self._store_ok = False
        if first:
            closed = [b.name for b in self.budgets if b.fail_closed]
            logger.warning(
                "chainsight budget store unreachable during %s: %s. Spending is allowed and "
                "kept in memory until the store is back (fail-open)%s.",
                during,
                exc,
                f"; fail_closed budgets {closed} refuse meanwhile" if closed else "",
            )

    def _store_answered(self) -> None:
        if not self._store_ok:
            with self._lock:
                back = not self._store_ok
                self._store_ok = True
            if back:
                logger.info("chainsight budget store reachable again; budgets enforced again")

    def _remember(self, budget: Budget, period: str, spent: float) -> None:
        # Caller holds the lock.
        self._known[budget.name] = (period, spent)

    # --- the request path -----------------------------------------------------------------

    def check(self, labels: Mapping[str, str]) -> Budget | None:
        """Return the first matching hard budget that is spent (or that is ``fail_closed``
        while the store is down), else None. Reads only; never raises."""
        hard = [b for b in self.budgets if b.hard and b.matches(labels)]
        if not hard:
            return None
        now = self._clock()
        windows = [b.window_key(now)[0] for b in hard]
        try:
            keys = [b.store_key(p) for b, p in zip(hard, windows, strict=True)]
            spent = _expect(self.store.spent(keys, now), len(keys))
        except Exception as exc:
            self._store_failed(exc, "check")
            return next((b for b in hard if b.fail_closed), None)
        self._store_answered()
        with self._lock:
            for budget, period, value in zip(hard, windows, spent, strict=True):
                self._remember(budget, period, value)
        return next((b for b, s in zip(hard, spent, strict=True) if s >= b.limit_usd), None)

    def admit(self, labels: Mapping[str, str]) -> Admission:
        """Admit or refuse a call about to be made with ``labels``; never raises.

        Refused when a matching hard budget is spent, or would be by the calls already in
        flight; otherwise one call's worth of every matching hard budget is reserved until
        :meth:`Admission.settle`.
        """
        matching = tuple(b for b in self.budgets if b.matches(labels))
        if not matching:
            return _NOTHING_MATCHED
        hard = [b for b in matching if b.hard]
        if not hard:
            return Admission(self, matching, None)
        now = self._clock()
        windows = [b.window_key(now) for b in hard]
        slots = [
            BudgetSlot(b.store_key(period), b.limit_usd, ttl)
            for b, (period, ttl) in zip(hard, windows, strict=True)
        ]
        token = uuid.uuid4().hex
        try:
            refused, spent = self.store.reserve(slots, token, now, self._hold)
            _expect(spent, len(slots))
            if refused is not None and (type(refused) is not int or not 0 <= refused < len(slots)):
                raise BudgetStoreUnavailable(f"budget store refused slot {refused} of {len(slots)}")
        except Exception as exc:
            self._store_failed(exc, "admit")
            closed = next((b for b in hard if b.fail_closed), None)
            if closed is not None:
                with self._lock:
                    last = self._last_known(closed, now)
                return Admission(
                    self,
                    matching,
                    None,
                    refused=closed,
                    spent_usd=last,
                    reason=ADMISSION_STORE_UNAVAILABLE,
                )
            return Admission(self, matching, None)
        self._store_answered()
        with self._lock:
            for budget, (period, _ttl), value in zip(hard, windows, spent, strict=True):
                self._remember(budget, period, value)
        if refused is not None:
            return Admission(
                self,
                matching,
                None,
                refused=hard[refused],
                spent_usd=spent[refused],
                reason=ADMISSION_SPENT,
            )
        return Admission(self, matching, token)

    def spend_on(self, budgets: Sequence[Budget], usd: float) -> None:
        """Add ``usd`` to exactly these budgets (the caller matched them). Never raises."""
        if budgets:
            self._charge(tuple(budgets), usd, None)

    def spend(self, labels: Mapping[str, str], usd: float) -> None:
        """Add ``usd`` to every budget matching ``labels`` (a cost that was not admitted, such
        as an embedding call). Never raises."""
        matching = tuple(b for b in self.budgets if b.matches(labels))
        if matching:
            self._charge(matching, usd, None)

    def _charge(self, budgets: tuple[Budget, ...], usd: float, token: str | None) -> None:
        if not _is_number(usd) or not math.isfinite(usd) or usd < 0:
            logger.warning(
                "chainsight budget: ignored a cost of %r USD (expected a finite number >= 0)", usd
            )
            usd = 0.0
        if usd == 0 and token is None:
            return
        now = self._clock()
        current: dict[str, tuple[Budget, str, float, float]] = {}
        for budget in budgets:
            period, ttl = budget.window_key(now)
            current[budget.store_key(period)] = (budget, period, usd, ttl)
        with self._lock:
            pending, self._pending = self._pending, {}
        for key, (budget, period, amount) in pending.items():
            now_period, ttl = budget.window_key(now)
            if now_period != period:
                continue  # that window is over: its spend no longer matters
            if key in current:
                _b, _p, mine, _t = current[key]
                current[key] = (budget, period, mine + amount, ttl)
            else:
                current[key] = (budget, period, amount, ttl)
        charges = [BudgetCharge(key, c[2], c[3]) for key, c in current.items()]
        if isinstance(self.store, InProcessBudgetStore):
            # No network: adding and remembering in one step keeps the gauge from moving
            # backwards when threads' answers come back out of order.
            with self._charge_lock:
                self._charge_in_store(current, charges, budgets, usd, token, now)
        else:
            self._charge_in_store(current, charges, budgets, usd, token, now)

    def _charge_in_store(
        self,
        current: dict[str, tuple[Budget, str, float, float]],
        charges: list[BudgetCharge],
        budgets: tuple[Budget, ...],
        usd: float,
        token: str | None,
        now: float,
    ) -> None:
        try:
            results = _expect(self.store.add(charges, token, now), len(charges))
        except Exception as exc:
            self._store_failed(exc, "spend")
            with self._lock:
                for key, (budget, period, amount, _ttl) in current.items():
                    if amount > 0:
                        _b, _p, queued = self._pending.get(key, (budget, period, 0.0))
                        self._pending[key] = (budget, period, queued + amount)
                if usd > 0:
                    # Keep the gauge moving while the store is down; replays are already in it.
                    for budget in budgets:
                        before = self._last_known(budget, now)
                        period = budget.window_key(now)[0]
                        self._remember(budget, period, before + usd)
                        self._log_crossings(budget, period, before, before + usd)
            return
        self._store_answered()
        with self._lock:
            for (budget, period, _amount, _ttl), (before, after) in zip(
                current.values(), results, strict=True
            ):
                self._remember(budget, period, after)
                self._log_crossings(budget, period, before, after)

    def _last_known(self, budget: Budget, now: float) -> float:
        period = budget.window_key(now)[0]
        known = self._known.get(budget.name)
        return known[1] if known is not None and known[0] == period else 0.0

    def _log_crossings(self, budget: Budget, period: str, before: float, after: float) -> None:
        # Caller holds the lock. The store's increments are atomic, so exactly one charge sees
        # a threshold go from below to above: with a shared store, one replica logs.
        for what, threshold in (
            ("soft", budget.soft_ratio * budget.limit_usd),
            ("limit", budget.limit_usd),
        ):
            if not before < threshold <= after:
                continue
            mark = (budget.name, period, what)
            if mark in self._logged:
                continue
            self._logged = {m for m in self._logged if m[1] == period or m[0] != budget.name}
            self._logged.add(mark)
            if what == "soft":
                logger.warning(
                    "chainsight budget %r passed its soft threshold: %.6f of %.6f USD (%.0f%%) "
                    "in the %s window %s (soft_ratio %g)%s",
                    budget.name,
                    after,
                    budget.limit_usd,
                    100 * after / budget.limit_usd,
                    budget.window,
                    period,
                    budget.soft_ratio,
                    "; matching model stages will be refused at the limit" if budget.hard else "",
                )
            else:
                logger.warning(
                    "chainsight budget %r is spent: %.6f of %.6f USD in the %s window %s%s",
                    budget.name,
                    after,
                    budget.limit_usd,
                    budget.window,
                    period,
                    "; matching model stages are refused until the window ends"
                    if budget.hard
                    else " (soft budget: nothing is refused)",
                )

    # --- reporting ------------------------------------------------------------------------

    def states(self) -> list[BudgetState]:
        """The last known spend of every budget's current window, from memory (no I/O)."""
        now = self._clock()
        with self._lock:
            return [
                BudgetState(
                    name=b.name,
                    limit_usd=b.limit_usd,
                    spent_usd=self._last_known(b, now),
                    soft_ratio=b.soft_ratio,
                    window=b.window,
                    hard=b.hard,
                )
                for b in self.budgets
            ]

    def refresh(self) -> None:
        """Read every budget's spend from the store (one round trip) so :meth:`states` shows
        what other replicas spent too. Never raises; a failure counts in ``store_errors``."""
        if not self.budgets:
            return
        now = self._clock()
        periods = [b.window_key(now)[0] for b in self.budgets]
        try:
            keys = [b.store_key(p) for b, p in zip(self.budgets, periods, strict=True)]
            spent = _expect(self.store.spent(keys, now), len(keys))
        except Exception as exc:
            self._store_failed(exc, "refresh")
            return
        self._store_answered()
        with self._lock:
            for budget, period, value in zip(self.budgets, periods, spent, strict=True):
                self._remember(budget, period, value)
