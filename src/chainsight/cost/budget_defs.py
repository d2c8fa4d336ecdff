"""Budget definitions: how much the calls matching a scope may spend per calendar window.

A :class:`Budget` is configuration only; the spend it limits lives in a store
(:mod:`chainsight.cost.budget_store`) and is enforced by :class:`~chainsight.cost.budget.BudgetSet`.
Windows are calendar-aligned in UTC and reset by themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final

from chainsight._names import (
    L_FEATURE,
    L_MODEL,
    L_PROVIDER,
    L_REQUEST,
    L_STAGE,
    L_TEAM,
    L_TENANT,
)
from chainsight.errors import ConfigurationError

__all__ = ["MATCH_KEYS", "Budget", "BudgetState"]

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
