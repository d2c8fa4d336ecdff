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
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from chainsight._names import (
    L_FEATURE,
    L_MODEL,
    L_PROVIDER,
    L_REQUEST,
    L_STAGE,
    L_TEAM,
    L_TENANT,
)
from chainsight.errors import (
    BudgetExceeded,
    BudgetStoreUnavailable,
    ChainsightError,
    ConfigurationError,
)

if TYPE_CHECKING:
    import redis

__all__ = [
    "Admission",
    "Budget",
    "BudgetCharge",
    "BudgetSet",
    "BudgetSlot",
    "BudgetState",
    "BudgetStore",
    "BudgetStoreUnavailable",
    "InProcessBudgetStore",
    "RedisBudgetStore",
]

logger = logging.getLogger("chainsight")
_T = TypeVar("_T")

#: Label keys a budget may match on: the ones the request path hands to the budget set.
MATCH_KEYS: Final = frozenset(
    {L_FEATURE, L_TENANT, L_TEAM, L_REQUEST, L_PROVIDER, L_MODEL, L_STAGE}
)

_HOUR: Final = 3600.0
_DAY: Final = 86400.0
_WEEK: Final = 7 * _DAY
# 1970-01-01 was a Thursday: shifting by 3 days puts Monday at the start of a 7-day block.
_EPOCH_WEEKDAY: Final = 3

#: Accepted window spellings → canonical name. All windows are calendar-aligned in UTC.
_WINDOWS: Final[Mapping[str, str]] = {
    "1h": "1h",
    "1d": "1d",
    "1w": "1w",
    "7d": "1w",
    "1mo": "1mo",
}
_WINDOW_HELP: Final = (
    "'1h' (clock hour), '1d' (UTC day), '1w' or '7d' (ISO week from Monday 00:00 UTC) or "
    "'1mo' (calendar month)"
)

#: Kept past the end of a window so a straggling settle still lands in a key that exists.
_KEY_GRACE_SECONDS: Final = 60.0
ADMISSION_SPENT: Final = "spent"
ADMISSION_STORE_UNAVAILABLE: Final = "store_unavailable"


def _window_bounds(window: str, now: float) -> tuple[str, float, float]:
    """Return (period id, start, end) of the calendar window ``window`` holding ``now``."""
    if window == "1h":
        start = math.floor(now / _HOUR) * _HOUR
        dt = datetime.fromtimestamp(start, tz=timezone.utc)
        return dt.strftime("%Y-%m-%dT%H"), start, start + _HOUR
    if window == "1d":
        start = math.floor(now / _DAY) * _DAY
        dt = datetime.fromtimestamp(start, tz=timezone.utc)
        return dt.strftime("%Y-%m-%d"), start, start + _DAY
    if window == "1w":
        day = math.floor(now / _DAY)
        start = (day - (day + _EPOCH_WEEKDAY) % 7) * _DAY
        iso = datetime.fromtimestamp(start, tz=timezone.utc).isocalendar()
        return f"{iso[0]:04d}-W{iso[1]:02d}", start, start + _WEEK
    # "1mo": the only window whose length varies, so it goes through the calendar.
    dt = datetime.fromtimestamp(now, tz=timezone.utc)
    first = datetime(dt.year, dt.month, 1, tzinfo=timezone.utc)
    nxt = (first + timedelta(days=32)).replace(day=1)
    return first.strftime("%Y-%m"), first.timestamp(), nxt.timestamp()


def _expect(values: list[_T], n: int) -> list[_T]:
    # A store answering with the wrong number of values is broken: treat it as unreachable
    # rather than mis-attribute spend between budgets.
    if len(values) != n:
        raise BudgetStoreUnavailable(f"budget store answered {len(values)} values for {n} keys")
    return values


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Budget:
    """A spend limit in USD per calendar window (UTC) for the calls whose labels match.

    ``window``: ``"1h"`` (clock hour), ``"1d"`` (UTC day), ``"1w"`` or its alias ``"7d"`` (ISO
    week, Monday 00:00 UTC) or ``"1mo"`` (calendar month). Windows reset by themselves.
    ``match``: label → value; every pair must equal the call's label (keys among ``feature``,
    ``tenant``, ``team``, ``request``, ``provider``, ``model``, ``stage``); empty matches all.
    ``soft_ratio``: the fraction of the limit at which a warning is logged once per window.
    ``hard``: refuse matching ``model`` stages once the limit is spent (else only report).
    ``fail_closed``: refuse while the store is unreachable instead of allowing the spend.
    """

    __slots__ = (
        "_match_items",
        "fail_closed",
        "hard",
        "limit_usd",
        "match",
        "name",
        "soft_ratio",
        "window",
    )

    def __init__(
        self,
        name: str,
        limit_usd: float,
        window: str = "1d",
        *,
        match: Mapping[str, str] | None = None,
        soft_ratio: float = 0.8,
        hard: bool = True,
        fail_closed: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ConfigurationError(
                f"Budget name must be a non-empty string without surrounding spaces; got "
                f"{name!r}. Give a short stable name such as 'copilot-daily': it is the "
                f"`budget` label on the metrics and part of the store key."
            )
        if not _is_number(limit_usd) or not math.isfinite(limit_usd) or limit_usd <= 0:
            raise ConfigurationError(
                f"Budget {name!r}: limit_usd must be a finite number of USD greater than 0; got "
                f"{limit_usd!r}. Pass e.g. limit_usd=25.0."
            )
        if not isinstance(window, str) or window not in _WINDOWS:
            hint = (
                " A 30-day window is not calendar-aligned: use '1mo' for the calendar month."
                if window == "30d"
                else ""
            )
            raise ConfigurationError(
                f"Budget {name!r}: window must be {_WINDOW_HELP}; got {window!r}.{hint}"
            )
        if not _is_number(soft_ratio) or not 0 < soft_ratio <= 1:
            raise ConfigurationError(
                f"Budget {name!r}: soft_ratio must be a number in (0, 1], the fraction of the "
                f"limit at which to warn; got {soft_ratio!r}. Pass e.g. soft_ratio=0.8."
            )
        flags: tuple[tuple[str, object], ...] = (("hard", hard), ("fail_closed", fail_closed))
        for flag, value in flags:
            if not isinstance(value, bool):
                raise ConfigurationError(
                    f"Budget {name!r}: {flag} must be True or False; got {value!r}."
                )
        items: dict[str, str] = {}
        if match is not None:
            if not isinstance(match, Mapping):
                raise ConfigurationError(
                    f"Budget {name!r}: match must be a mapping of label to value, e.g. "
                    f"{{'feature': 'copilot'}}; got {match!r}."
                )
            for key, value in match.items():
                if key not in MATCH_KEYS:
                    raise ConfigurationError(
                        f"Budget {name!r}: cannot match on label {key!r}; use one of "
                        f"{', '.join(sorted(MATCH_KEYS))}."
                    )
                if not isinstance(value, str) or not value:
                    raise ConfigurationError(
                        f"Budget {name!r}: match value for {key!r} must be a non-empty string; "
                        f"got {value!r}."
                    )
                items[key] = value
        self.name = name
        self.limit_usd = float(limit_usd)
        self.window = _WINDOWS[window]
        self.match: Mapping[str, str] = items
        self.soft_ratio = float(soft_ratio)
        self.hard = hard
        self.fail_closed = fail_closed
        self._match_items = tuple(items.items())

    def __repr__(self) -> str:
        return (
            f"Budget({self.name!r}, limit_usd={self.limit_usd!r}, window={self.window!r}, "
            f"match={dict(self.match)!r}, soft_ratio={self.soft_ratio!r}, hard={self.hard!r}, "
            f"fail_closed={self.fail_closed!r})"
        )

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every ``match`` pair equals the corresponding label in ``labels``."""
        return all(labels.get(key) == value for key, value in self._match_items)

    def window_key(self, now: float) -> tuple[str, float]:
        """Return the id of the window holding ``now`` (e.g. ``"2024-05-01"``) and the seconds
        until that window ends."""
        period, _start, end = _window_bounds(self.window, now)
        return period, end - now

    def store_key(self, period: str) -> str:
        """The store key of this budget's window ``period``: ``"<name>:<window>:<period>"``."""
        return f"{self.name}:{self.window}:{period}"


@dataclass(frozen=True)
class BudgetState:
    """What the budget gauges show: the last known spend of the current window."""

    name: str
    limit_usd: float
    spent_usd: float
    soft_ratio: float
    window: str
    hard: bool


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


# KEYS: hash1, zset1, hash2, zset2, ...  ARGV: now, hold_until, token, then limit_i, ttl_ms_i.
# Returns {index of the first refusing slot or 0, spent_1, spent_2, ...}; spends as strings
# because Redis truncates Lua numbers to integers in replies.
_RESERVE_LUA: Final = """
local n = #KEYS / 2
local refused = 0
local out = {0}
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('ZREMRANGEBYSCORE', z, '-inf', ARGV[1])
  local spent = redis.call('HGET', h, 'spent') or '0'
  local largest = tonumber(redis.call('HGET', h, 'largest') or '0')
  local held = redis.call('ZCARD', z) * largest
  out[i + 1] = spent
  if refused == 0 and tonumber(spent) + held >= tonumber(ARGV[2 + 2 * i]) then
    refused = i
  end
end
if refused == 0 then
  for i = 1, n do
    local z = KEYS[2 * i]
    redis.call('ZADD', z, ARGV[2], ARGV[3])
    redis.call('PEXPIRE', z, ARGV[3 + 2 * i])
  end
end
out[1] = refused
return out
"""

# KEYS: hash1, zset1, ...  ARGV: token ('' for none), then usd_i, ttl_ms_i.
# Returns {before_1, after_1, before_2, after_2, ...} as strings.
_ADD_LUA: Final = """
local out = {}
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local usd = ARGV[2 * i]
  if ARGV[1] ~= '' then
    redis.call('ZREM', z, ARGV[1])
  end
  out[2 * i - 1] = redis.call('HGET', h, 'spent') or '0'
  out[2 * i] = redis.call('HINCRBYFLOAT', h, 'spent', usd)
  if tonumber(usd) > tonumber(redis.call('HGET', h, 'largest') or '0') then
    redis.call('HSET', h, 'largest', usd)
  end
  redis.call('PEXPIRE', h, ARGV[2 * i + 1])
end
return out
"""


def _without_password(url: str) -> str:
    # The URL goes into log lines and error messages: never the password with it.
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


def _ttl_ms(ttl: float) -> str:
    return str(math.ceil((ttl + _KEY_GRACE_SECONDS) * 1000))


class RedisBudgetStore:
    """Budget spend shared by every process and host using the same Redis.

    Updates are Lua scripts, atomic across all budgets of a call; keys expire shortly after
    their window ends. Each round trip is bounded by ``timeout`` seconds (no retries); after a
    failure the store is not tried again for ``cooldown`` seconds, during which every call fails
    fast (the budget set then fails open, or refuses ``fail_closed`` budgets). A process forked
    after the store connected opens its own connection. Keys are
    ``<key_prefix><budget>:<window>:<period>`` (a hash with ``spent`` and ``largest``) and the
    same with ``:r`` (a sorted set of in-flight reservations).
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "chainsight:budget:",
        timeout: float = 0.05,
        cooldown: float = 5.0,
    ) -> None:
        try:
            import redis as redis_module  # noqa: PLC0415 - optional dependency, imported on use
        except ImportError as exc:
            raise ConfigurationError(
                "RedisBudgetStore needs the `redis` client package, which is not installed. "
                "Install it with: pip install 'chainsight[redis]'"
            ) from exc
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"RedisBudgetStore: url must start with redis://, rediss:// or unix://; got "
                f"{url!r}. Example: 'redis://redis.internal:6379/0'."
            )
        if not isinstance(key_prefix, str):
            raise ConfigurationError(
                f"RedisBudgetStore: key_prefix must be a string; got {key_prefix!r}."
            )
        for name, value in (("timeout", timeout), ("cooldown", cooldown)):
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ConfigurationError(
                    f"RedisBudgetStore: {name} must be a finite number of seconds >= 0; got "
                    f"{value!r}."
                )
        if timeout == 0:
            raise ConfigurationError(
                "RedisBudgetStore: timeout must be greater than 0 seconds; got 0. It bounds "
                "how long a request may wait for Redis (default 0.05)."
            )
        self.url = url
        self._shown_url = _without_password(url)
        self.key_prefix = key_prefix
        self.timeout = float(timeout)
        self.cooldown = float(cooldown)
        self._redis = redis_module
        self._lock = threading.Lock()
        self._pid = -1
        self._client: redis.Redis | None = None
        self._reserve_script: Any = None
        self._add_script: Any = None
        self._down_until = -math.inf
        self._down_reason: BaseException | None = None
        # Parse now so a malformed URL is a configuration error, not a run-time outage.
        try:
            self._connect()
        except ValueError as exc:
            raise ConfigurationError(
                f"RedisBudgetStore: cannot parse url {_without_password(url)!r}: {exc}. "
                f"Example: 'redis://redis.internal:6379/0'."
            ) from exc

    def _connect(self) -> redis.Redis:
        # No I/O here: redis-py connects on the first command.
        from redis.backoff import NoBackoff  # noqa: PLC0415 - optional dependency
        from redis.retry import Retry  # noqa: PLC0415

        client = self._redis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # redis-py retries 10 times by default: that would block a request far past timeout.
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._client = client
        self._reserve_script = client.register_script(_RESERVE_LUA)
        self._add_script = client.register_script(_ADD_LUA)
        self._pid = os.getpid()
        return client

    def _run(self, call: Callable[[redis.Redis], Any]) -> Any:
        if time.monotonic() < self._down_until:
            raise BudgetStoreUnavailable(
                f"Redis at {self._shown_url} failed {self.cooldown:g}s ago or less "
                f"({self._down_reason!r}); not retrying until the cooldown ends"
            )
        with self._lock:
            client = self._client
            if client is None or self._pid != os.getpid():
                # A socket inherited over fork() is shared with the parent: never reuse it, and
                # never close it either, since that would cut the parent's connection.
                client = self._connect()
        try:
            return call(client)
        except Exception as exc:
            self._down_until = time.monotonic() + self.cooldown
            self._down_reason = exc
            raise BudgetStoreUnavailable(f"Redis at {self._shown_url} failed: {exc!r}") from exc

    def _keys(self, keys: Sequence[str]) -> list[str]:
        out = []
        for key in keys:
            out.append(self.key_prefix + key)
            out.append(self.key_prefix + key + ":r")
        return out

    def reserve(
        self, slots: Sequence[BudgetSlot], token: str, now: float, hold: float
    ) -> tuple[int | None, list[float]]:
        """Admit or refuse one call against every slot at once (see :class:`BudgetStore`)."""
        args: list[str] = [repr(now), repr(now + hold), token]
        for slot in slots:
            args += [repr(slot.limit_usd), _ttl_ms(slot.ttl)]
        keys = self._keys([slot.key for slot in slots])
        reply = self._run(lambda c: self._reserve_script(keys=keys, args=args, client=c))
        refused = int(reply[0])
        return (refused - 1 if refused else None), [float(v) for v in reply[1:]]

    def add(
        self, charges: Sequence[BudgetCharge], token: str | None, now: float
    ) -> list[tuple[float, float]]:
        """Release ``token`` and add each charge atomically (see :class:`BudgetStore`)."""
        args: list[str] = [token or ""]
        for charge in charges:
            args += [repr(charge.usd), _ttl_ms(charge.ttl)]
        keys = self._keys([charge.key for charge in charges])
        reply = self._run(lambda c: self._add_script(keys=keys, args=args, client=c))
        return [(float(reply[i]), float(reply[i + 1])) for i in range(0, len(reply), 2)]

    def spent(self, keys: Sequence[str], now: float) -> list[float]:
        """The current spend of each key, in one round trip."""

        def read(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hget(self.key_prefix + key, "spent")
            return pipe.execute()

        return [float(v) if v is not None else 0.0 for v in self._run(read)]


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
