"""The price table and the cost of one model call.

Prices come from ``prices.toml`` (bundled, every row with its source page and the day it was
checked) and from the user's overrides, whose rows win. The table is parsed once, lazily, on the
first call to :meth:`PriceTable.bundled`; after that nothing here does I/O. Name resolution is
memoised per table because it runs on every model call.

Token counts follow the OpenTelemetry GenAI convention: ``input_tokens`` counts *all* input
tokens, cache reads and cache writes included, and ``output_tokens`` includes reasoning tokens.
Anthropic reports input without its cache reads and writes: convert with
:func:`normalize_anthropic` before calling :func:`cost_usd`.

A row is a :class:`~chainsight.cost.price_row.Price`; price files are read by
:mod:`chainsight.cost.price_files` and model names matched by the rules in
:mod:`chainsight.cost.price_names`.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

from chainsight.cost.price_files import _check_aliases, _parse_prices, _parse_toml
from chainsight.cost.price_names import _candidates, _provider
from chainsight.cost.price_row import Price
from chainsight.errors import ConfigurationError

__all__ = [
    "Price",
    "PriceTable",
    "Resolution",
    "cost_usd",
    "normalize_anthropic",
]

#: Lookups remembered per table; a service uses a handful of model names, so this never fills
#: in practice, and when it does the memo starts over instead of growing without bound.
MEMO_SIZE: Final = 4096


def cost_usd(
    price: Price,
    *,
    input_tokens: int,
    output_tokens: int = 0,
    cached_input_tokens: int = 0,
    cache_write_input_tokens: int = 0,
    units: float = 0,
    cache_write_1h_input_tokens: int = 0,
) -> float:
    """Return the USD cost of one call at ``price``.

    ``input_tokens`` counts all input tokens, cache reads and writes included (OpenTelemetry
    convention); the uncached part is ``input - cache_read - cache_write``. ``output_tokens``
    includes reasoning tokens. ``cache_write_1h_input_tokens`` is the part of the cache writes
    that went to a one-hour cache (Anthropic), billed at the row's ``cache_write_1h`` price; the
    rest of the writes are billed at ``cache_write``. ``units`` counts searches (or whatever the
    row's unit counts) for rows billed per unit.

    Never negative, never raises for odd counts: negative counts are taken as 0, and when a
    part is larger than its whole (cache counters above ``input_tokens``, one-hour writes above
    all writes) the part is trusted and the whole taken as at least its parts, since the parts
    are the more specific numbers.
    """
    cache_read = cached_input_tokens if cached_input_tokens > 0 else 0
    write_1h = cache_write_1h_input_tokens if cache_write_1h_input_tokens > 0 else 0
    cache_write = cache_write_input_tokens if cache_write_input_tokens > write_1h else write_1h
    cached = cache_read + cache_write
    uncached = input_tokens - cached if input_tokens > cached else 0
    output = output_tokens if output_tokens > 0 else 0
    rate = price.input
    read_rate = rate if price.cache_read is None else price.cache_read
    write_rate = rate if price.cache_write is None else price.cache_write
    write_1h_rate = write_rate if price.cache_write_1h is None else price.cache_write_1h
    total = (
        uncached * rate
        + cache_read * read_rate
        + (cache_write - write_1h) * write_rate
        + write_1h * write_1h_rate
        + output * price.output
    )
    if price.per_unit is not None and units > 0:
        total += units * price.per_unit
    return total / price._scale


def normalize_anthropic(input_tokens: int, cache_read: int, cache_write: int) -> int:
    """Turn Anthropic's ``input_tokens`` (which excludes cache reads and writes) into the total.

    Anthropic's usage reports ``input_tokens``, ``cache_read_input_tokens`` and
    ``cache_creation_input_tokens`` as disjoint parts; OpenTelemetry's
    ``gen_ai.usage.input_tokens`` (and :func:`cost_usd`) wants their sum. Negative or missing
    parts count as 0.
    """
    return max(input_tokens, 0) + max(cache_read, 0) + max(cache_write, 0)


class Resolution(NamedTuple):
    """How a model name resolved: the row found (or ``None``) and each name tried, in order."""

    query: str
    provider: str | None
    price: Price | None
    steps: tuple[str, ...]


class PriceTable:
    """Prices by provider and model, with robust name resolution.

    Build one with :meth:`bundled`, then :meth:`with_overrides` / :meth:`with_aliases`; each
    returns a new table and leaves the old one unchanged. Rows given earlier win: overrides are
    placed before the rows they override.
    """

    __slots__ = ("_aliases", "_index", "_memo", "_rows")

    def __init__(
        self, rows: Iterable[Price] = (), aliases: Mapping[str, str] | None = None
    ) -> None:
        """Index ``rows`` (the first row with a name wins) and the user's ``aliases``."""
        self._rows: tuple[Price, ...] = tuple(rows)
        seen: dict[tuple[str, str], Price] = {}
        index: dict[str, list[Price]] = {}
        for row in self._rows:
            key = (row.provider.lower(), row.model.lower())
            if key in seen:
                raise ConfigurationError(
                    f"price row '{row.provider}/{row.model}' appears twice; keep one row per "
                    "provider and model"
                )
            seen[key] = row
            for name in (row.model, *row.aliases):
                index.setdefault(name.strip().lower(), []).append(row)
        self._index: dict[str, tuple[Price, ...]] = {k: tuple(v) for k, v in index.items()}
        self._aliases: dict[str, str] = _check_aliases(aliases or {}, "aliases")
        self._memo: dict[tuple[str, str | None], Price | None] = {}

    @classmethod
    def bundled(cls) -> PriceTable:
        """Return the table shipped with chainsight (parsed on first use, then cached)."""
        return _bundled_table()

    def with_overrides(self, prices: str | os.PathLike[str] | Mapping[str, Any]) -> PriceTable:
        """Return a new table where the user's rows win over this table's rows.

        ``prices`` is a path to a TOML file in the format of the bundled ``prices.toml``
        (``[[price]]`` rows, optional ``[aliases]`` table), or a mapping: either that same
        structure (``{"price": [...], "aliases": {...}}``) or the short form
        ``{"provider/model": {"unit": "1M_tokens", "input": ..., "output": ...}}``. A user row
        replaces the row with the same provider and model as a whole. Bad rows raise
        :class:`~chainsight.ConfigurationError` naming the row and the field.
        """
        if isinstance(prices, (str, os.PathLike)):
            path = Path(prices)
            origin = str(path)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read price file {origin!r}: {exc.strerror or exc}; give the path "
                    "of a TOML file in the prices.toml format"
                ) from exc
            data = _parse_toml(text, origin)
        elif isinstance(prices, Mapping):
            origin = "the prices mapping"
            data = prices
        else:
            raise ConfigurationError(
                f"prices is {type(prices).__name__}; expected a path to a TOML file or a mapping"
            )
        rows, aliases = _parse_prices(data, origin)
        replaced = {(r.provider.lower(), r.model.lower()) for r in rows}
        kept = [r for r in self._rows if (r.provider.lower(), r.model.lower()) not in replaced]
        return PriceTable((*rows, *kept), {**self._aliases, **aliases})

    def with_aliases(self, aliases: Mapping[str, str]) -> PriceTable:
        """Return a new table where each alias name resolves as its target model name.

        For deployment names such as ``{"my-gpt4o-deployment": "gpt-4o"}``; a target may carry
        a provider prefix (``"openai/gpt-4o"``). Aliases are matched case-insensitively, also
        after a provider prefix is removed.
        """
        return PriceTable(self._rows, {**self._aliases, **_check_aliases(aliases, "aliases")})

    def rows(self) -> Iterator[Price]:
        """Iterate over the rows, winning rows first."""
        return iter(self._rows)

    def __len__(self) -> int:
        """Return the number of rows."""
        return len(self._rows)

    def lookup(self, model: str, provider: str | None = None) -> Price | None:
        """Return the row pricing ``model``, or ``None`` when it is unpriced.

        Resolution, first match wins: the user's aliases; the exact name (any case); then the
        name without a provider prefix (``openai/gpt-4o``, Bedrock ``anthropic.claude-...``);
        then without snapshot suffixes one at a time (``-2024-08-06``, ``-20241022``,
        ``@20241022``, ``-latest``, ``-v2:0``, ``-001``, ``-preview``). ``provider`` only breaks
        ties between providers that price the same name. Fine-tuned ids (``ft:gpt-4o:...``)
        keep their ``ft:`` prefix and so never match their base model, which costs less.
        """
        key = (model, provider)
        memo = self._memo
        try:
            return memo[key]
        except KeyError:
            pass
        found = self._resolve(model, provider, explain=False).price
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        memo[key] = found
        return found

    def explain(self, model: str, provider: str | None = None) -> Resolution:
        """Resolve ``model`` like :meth:`lookup`; say which names were tried and which matched."""
        return self._resolve(model, provider, explain=True)

    def _resolve(self, model: str, provider: str | None, *, explain: bool) -> Resolution:
        steps: list[str] = []
        hint = _provider(provider)
        candidates, prefix_hint = _candidates(model)
        hint = hint or prefix_hint
        for name, how in candidates:
            target = self._aliases.get(name)
            if target is not None:
                if explain:
                    steps.append(f"{name!r} ({how}) is a user alias of {target!r}")
                alias_candidates, alias_hint = _candidates(target)
                for alias_name, alias_how in alias_candidates:
                    row = self._pick(alias_name, hint or alias_hint)
                    if explain:
                        steps.append(_step(alias_name, alias_how, row))
                    if row is not None:
                        return Resolution(model, hint, row, tuple(steps))
                return Resolution(model, hint, None, tuple(steps))
            row = self._pick(name, hint)
            if explain:
                steps.append(_step(name, how, row))
            if row is not None:
                return Resolution(model, hint, row, tuple(steps))
        return Resolution(model, hint, None, tuple(steps))

    def _pick(self, name: str, provider: str | None) -> Price | None:
        rows = self._index.get(name)
        if not rows:
            return None
        if provider is not None:
            for row in rows:
                if row.provider.lower() == provider:
                    return row
        return rows[0]


def _step(name: str, how: str, row: Price | None) -> str:
    found = f"row {row.provider}/{row.model}" if row is not None else "no row"
    return f"{name!r} ({how}): {found}"


def _bundled_table() -> PriceTable:
    global _BUNDLED
    table = _BUNDLED
    if table is None:
        resource = importlib.resources.files("chainsight.cost").joinpath("prices.toml")
        text = resource.read_text(encoding="utf-8")
        rows, aliases = _parse_prices(_parse_toml(text, "prices.toml"), "bundled prices.toml")
        # Two threads may both parse on first use; both results are equal and either may win.
        table = _BUNDLED = PriceTable(rows, aliases)
    return table


_BUNDLED: PriceTable | None = None
