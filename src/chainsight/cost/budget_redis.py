"""The Redis budget store: spend shared by every process and host using the same Redis."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from chainsight.cost.budget_defs import _is_number
from chainsight.cost.budget_store import _KEY_GRACE_SECONDS, BudgetCharge, BudgetSlot
from chainsight.errors import BudgetStoreUnavailable, ConfigurationError

if TYPE_CHECKING:
    import redis

__all__ = ["RedisBudgetStore"]


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

    def after_fork_in_child(self) -> None:
        """A lock held by another thread at ``fork()`` would stay held forever in the child.

        The client is replaced on its first use in the child (see ``_run``), not here.
        """
        self._lock = threading.Lock()

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
