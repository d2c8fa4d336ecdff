"""One row of the price table: :class:`Price`, validated when it is built."""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from chainsight.errors import ConfigurationError

__all__ = ["Price"]

_SCALES: Final[Mapping[str, float]] = {"1": 1.0, "1K": 1_000.0, "1M": 1_000_000.0}
_UNIT_RE: Final = re.compile(r"^(1|1K|1M)_([a-z][a-z_]*)$")
_TOKEN_PRICE_FIELDS: Final = ("input", "output", "cache_read", "cache_write", "cache_write_1h")


@dataclass(frozen=True, slots=True)
class Price:
    """One row of the price table: what a provider charges for one model.

    ``unit`` is ``"1M_tokens"`` (token prices are USD per million tokens) or, for rows not billed
    by tokens, ``"<1|1K|1M>_<thing>"`` such as ``"1K_searches"`` with ``per_unit`` the USD price
    of that many units. ``cache_read`` and ``cache_write`` may be ``None``: the provider bills
    those tokens at the input price. ``cache_write_1h`` prices writes to a one-hour cache
    (Anthropic's ``ttl: "1h"``); ``None`` bills them like the other cache writes.
    Construction validates every value and raises :class:`~chainsight.ConfigurationError`
    naming the row.
    """

    provider: str
    model: str
    unit: str
    input: float = 0.0
    output: float = 0.0
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    per_unit: float | None = None
    source: str = ""
    checked: _dt.date | None = None
    aliases: tuple[str, ...] = ()
    _scale: float = field(init=False, repr=False, compare=False, default=1.0)

    def __post_init__(self) -> None:
        row = f"price row '{self.provider}/{self.model}'"
        for name in ("provider", "model"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(
                    f"{row}: field {name!r} is {value!r}; expected a non-empty string"
                )
        match = _UNIT_RE.match(self.unit) if isinstance(self.unit, str) else None
        if match is None:
            raise ConfigurationError(
                f"{row}: field 'unit' is {self.unit!r}; expected '1M_tokens' or "
                "'<1|1K|1M>_<thing>' such as '1K_searches'"
            )
        object.__setattr__(self, "_scale", _SCALES[match.group(1)])
        for name in (*_TOKEN_PRICE_FIELDS, "per_unit"):
            value = getattr(self, name)
            if value is None and name in (
                "cache_read",
                "cache_write",
                "cache_write_1h",
                "per_unit",
            ):
                continue
            object.__setattr__(self, name, _usd(row, name, value))
        if match.group(2) == "tokens":
            if self.per_unit is not None:
                raise ConfigurationError(
                    f"{row}: field 'per_unit' is set but the unit is {self.unit!r}; token rows "
                    "take input/output/cache_read/cache_write/cache_write_1h prices, per_unit "
                    "is for rows billed by searches or other units"
                )
        else:
            if self.per_unit is None:
                raise ConfigurationError(
                    f"{row}: unit {self.unit!r} is not tokens, so field 'per_unit' (USD per "
                    f"{self.unit}) is required"
                )
            priced = [n for n in _TOKEN_PRICE_FIELDS if getattr(self, n)]
            if priced:
                raise ConfigurationError(
                    f"{row}: unit {self.unit!r} is billed per unit, but token prices "
                    f"{priced} are set; give only per_unit, or use unit '1M_tokens'"
                )
        if not isinstance(self.aliases, tuple) or not all(
            isinstance(a, str) and a.strip() for a in self.aliases
        ):
            raise ConfigurationError(
                f"{row}: field 'aliases' is {self.aliases!r}; expected a tuple of non-empty "
                "names (a list in price files)"
            )

    @property
    def billed_by_tokens(self) -> bool:
        """True when this row prices tokens, False when it prices searches or other units."""
        return self.unit.endswith("_tokens")


def _usd(row: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"{row}: field {name!r} is {value!r}; expected a number of USD per unit, "
            "e.g. 2.5 (not a string)"
        )
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ConfigurationError(
            f"{row}: field {name!r} is {value!r}; prices must be finite and zero or more"
        )
    return number
