"""The price table and the cost of one model call.

Prices come from ``prices.toml`` (bundled, every row with its source page and the day it was
checked) and from the user's overrides, whose rows win. The table is parsed once, lazily, on the
first call to :meth:`PriceTable.bundled`; after that nothing here does I/O. Name resolution is
memoised per table because it runs on every model call.

Token counts follow the OpenTelemetry GenAI convention: ``input_tokens`` counts *all* input
tokens, cache reads and cache writes included, and ``output_tokens`` includes reasoning tokens.
Anthropic reports input without its cache reads and writes: convert with
:func:`normalize_anthropic` before calling :func:`cost_usd`.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.resources
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final, NamedTuple

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

_SCALES: Final[Mapping[str, float]] = {"1": 1.0, "1K": 1_000.0, "1M": 1_000_000.0}
_UNIT_RE: Final = re.compile(r"^(1|1K|1M)_([a-z][a-z_]*)$")
_TOKEN_PRICE_FIELDS: Final = ("input", "output", "cache_read", "cache_write")
_ROW_FIELDS: Final = frozenset(
    {"provider", "model", "unit", *_TOKEN_PRICE_FIELDS, "per_unit", "source", "checked", "aliases"}
)
_FILE_KEYS: Final = frozenset({"schema", "price", "aliases"})

# Other spellings of the OpenTelemetry ``gen_ai.provider.name`` values used in the table, as
# they appear in provider arguments and in prefixes such as LiteLLM's ``gemini/...``.
_PROVIDER_SYNONYMS: Final[Mapping[str, str]] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "claude": "anthropic",
    "gcp.gemini": "gcp.gemini",
    "gcp.gen_ai": "gcp.gemini",
    "gcp.vertex_ai": "gcp.gemini",
    "gemini": "gcp.gemini",
    "google": "gcp.gemini",
    "vertex_ai": "gcp.gemini",
    "mistral_ai": "mistral_ai",
    "mistral": "mistral_ai",
    "mistralai": "mistral_ai",
    "cohere": "cohere",
    "voyage_ai": "voyage_ai",
    "voyage": "voyage_ai",
    "voyageai": "voyage_ai",
}

# Bedrock model ids: optional cross-region prefix, then ``vendor.model``.
_BEDROCK_RE: Final = re.compile(
    r"^(?:(?:us|eu|apac|global|us-gov|jp|au|ca)\.)?(anthropic|cohere|mistral|amazon|meta|ai21)\.(.+)$"
)

# Snapshot and version suffixes, tried from the end of the name, one at a time, until none is
# left. Each removal is a fallback: a row named exactly (e.g. ``mistral-large-2411``, priced
# differently from ``mistral-large``) is found before its suffix is ever removed.
_SUFFIXES: Final = (
    (re.compile(r"@[^@]+$"), "version tag"),  # Vertex AI: claude-sonnet-4-5@20250929
    (re.compile(r"-v\d+(?::\d+)?$"), "version suffix"),  # Bedrock: ...-v2:0
    (re.compile(r"-latest$"), "'-latest' suffix"),
    (re.compile(r"-\d{4}-\d{2}-\d{2}$"), "date suffix"),  # OpenAI: gpt-4o-2024-08-06
    (re.compile(r"-\d{8}$"), "date suffix"),  # Anthropic: claude-3-5-sonnet-20241022
    (re.compile(r"-\d{2}-\d{4}$"), "date suffix"),  # Cohere: command-a-03-2025
    (re.compile(r"-\d{4}$"), "snapshot suffix"),  # Mistral: mistral-small-2506
    (re.compile(r"-\d{3}$"), "snapshot suffix"),  # Gemini: gemini-2.0-flash-001
    (re.compile(r"-preview(?:-\d{2}-\d{2})?$"), "preview suffix"),
)


@dataclass(frozen=True, slots=True)
class Price:
    """One row of the price table: what a provider charges for one model.

    ``unit`` is ``"1M_tokens"`` (token prices are USD per million tokens) or, for rows not billed
    by tokens, ``"<1|1K|1M>_<thing>"`` such as ``"1K_searches"`` with ``per_unit`` the USD price
    of that many units. ``cache_read`` and ``cache_write`` may be ``None``: the provider bills
    those tokens at the input price. Construction validates every value and raises
    :class:`~chainsight.ConfigurationError` naming the row.
    """

    provider: str
    model: str
    unit: str
    input: float = 0.0
    output: float = 0.0
    cache_read: float | None = None
    cache_write: float | None = None
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
            if value is None and name in ("cache_read", "cache_write", "per_unit"):
                continue
            object.__setattr__(self, name, _usd(row, name, value))
        if match.group(2) == "tokens":
            if self.per_unit is not None:
                raise ConfigurationError(
                    f"{row}: field 'per_unit' is set but the unit is {self.unit!r}; token rows "
                    "take input/output/cache_read/cache_write prices, per_unit is for rows "
                    "billed by searches or other units"
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


def cost_usd(
    price: Price,
    *,
    input_tokens: int,
    output_tokens: int = 0,
    cached_input_tokens: int = 0,
    cache_write_input_tokens: int = 0,
    units: float = 0,
) -> float:
    """Return the USD cost of one call at ``price``.

    ``input_tokens`` counts all input tokens, cache reads and writes included (OpenTelemetry
    convention); the uncached part is ``input - cache_read - cache_write``. ``output_tokens``
    includes reasoning tokens. ``units`` counts searches (or whatever the row's unit counts)
    for rows billed per unit.

    Never negative, never raises for odd counts: negative counts are taken as 0, and when the
    cache counters add up to more than ``input_tokens`` the counters are trusted and the input
    is taken as their sum (no uncached input), since they are the more specific numbers.
    """
    cache_read = cached_input_tokens if cached_input_tokens > 0 else 0
    cache_write = cache_write_input_tokens if cache_write_input_tokens > 0 else 0
    cached = cache_read + cache_write
    uncached = input_tokens - cached if input_tokens > cached else 0
    output = output_tokens if output_tokens > 0 else 0
    rate = price.input
    read_rate = rate if price.cache_read is None else price.cache_read
    write_rate = rate if price.cache_write is None else price.cache_write
    total = (
        uncached * rate + cache_read * read_rate + cache_write * write_rate + output * price.output
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


def _provider(provider: str | None) -> str | None:
    if not provider:
        return None
    key = provider.strip().lower()
    return _PROVIDER_SYNONYMS.get(key, key)


def _candidates(model: str) -> tuple[list[tuple[str, str]], str | None]:
    """The names to try for ``model``, most specific first, and a provider named by a prefix."""
    name = model.strip().lower() if isinstance(model, str) else ""
    if not name:
        return [], None
    out = [(name, "as given")]
    hint: str | None = None
    if "/" in name:
        *prefixes, last = name.split("/")
        for part in reversed(prefixes):
            if part in _PROVIDER_SYNONYMS:
                hint = _PROVIDER_SYNONYMS[part]
                break
        if not last:
            return out, hint
        name = last
        out.append((name, f"prefix '{'/'.join(prefixes)}/' removed"))
    bedrock = _BEDROCK_RE.match(name)
    if bedrock is not None:
        hint = hint or _PROVIDER_SYNONYMS.get(bedrock.group(1))
        name = bedrock.group(2)
        out.append((name, f"Bedrock prefix '{bedrock.group(1)}.' removed"))
    while True:
        for pattern, label in _SUFFIXES:
            shorter = pattern.sub("", name, count=1)
            if shorter != name and shorter:
                out.append((shorter, f"{label} {name[len(shorter) :]!r} removed"))
                name = shorter
                break
        else:
            return out, hint


def _check_aliases(aliases: object, where: str) -> dict[str, str]:
    if not isinstance(aliases, Mapping):
        raise ConfigurationError(
            f"{where} is {type(aliases).__name__}; expected a mapping of alias name to model name"
        )
    out: dict[str, str] = {}
    for name, target in aliases.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"{where}: alias name {name!r} must be a non-empty string")
        if not isinstance(target, str) or not target.strip():
            raise ConfigurationError(
                f"{where}: alias {name!r} points to {target!r}; expected a model name such as "
                "'gpt-4o' or 'openai/gpt-4o'"
            )
        out[name.strip().lower()] = target.strip()
    return out


def _toml() -> ModuleType:
    # tomllib is in the standard library from Python 3.11; 3.10 needs the tomli package.
    name = "tomllib" if sys.version_info >= (3, 11) else "tomli"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:  # pragma: no cover - only on Python 3.10 without tomli
        raise ConfigurationError(
            "reading price tables on Python 3.10 needs the 'tomli' package; "
            "install it with: pip install tomli"
        ) from exc


def _parse_toml(text: str, origin: str) -> Mapping[str, Any]:
    toml = _toml()
    try:
        data: Mapping[str, Any] = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise ConfigurationError(f"price file {origin!r} is not valid TOML: {exc}") from exc
    return data


def _parse_prices(data: Mapping[str, Any], origin: str) -> tuple[list[Price], dict[str, str]]:
    """Rows and aliases from the file structure or the ``{"provider/model": {...}}`` short form."""
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{origin}: expected a mapping, got {type(data).__name__}")
    if "price" in data or "schema" in data:
        unknown = sorted(set(data) - _FILE_KEYS)
        if unknown:
            raise ConfigurationError(
                f"{origin}: unknown top-level keys {unknown}; a price file has 'schema', "
                "'price' (the rows) and 'aliases'"
            )
        schema = data.get("schema", 1)
        if schema != 1:
            raise ConfigurationError(
                f"{origin}: schema is {schema!r}; this chainsight reads schema 1"
            )
        raw_rows = data.get("price", [])
        if not isinstance(raw_rows, list):
            raise ConfigurationError(
                f"{origin}: 'price' is {type(raw_rows).__name__}; expected a list of rows "
                "([[price]] tables in TOML)"
            )
        rows = [_parse_row(raw, None, f"row {i + 1}", origin) for i, raw in enumerate(raw_rows)]
    else:
        rows = []
        for key, raw in data.items():
            if key == "aliases":
                continue
            if not isinstance(key, str) or "/" not in key.strip("/"):
                raise ConfigurationError(
                    f"{origin}: key {key!r} is not 'provider/model'; use e.g. 'openai/gpt-4o', "
                    "or give the file structure {'price': [...]}"
                )
            provider, model = key.split("/", 1)
            rows.append(_parse_row(raw, (provider, model), key, origin))
    aliases = _check_aliases(data.get("aliases", {}), f"{origin}: aliases")
    seen: set[tuple[str, str]] = set()
    for row in rows:
        key2 = (row.provider.lower(), row.model.lower())
        if key2 in seen:
            raise ConfigurationError(
                f"{origin}: price row '{row.provider}/{row.model}' is given twice; keep one"
            )
        seen.add(key2)
    return rows, aliases


def _parse_row(raw: object, named: tuple[str, str] | None, label: str, origin: str) -> Price:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(
            f"{origin}: price row {label!r} is {type(raw).__name__}; expected a table of fields"
        )
    # Any: the values are checked by Price itself, which names the row in its errors.
    provider: Any
    model: Any
    if named is None:
        provider, model = raw.get("provider"), raw.get("model")
        row = f"price row '{provider}/{model}'" if provider and model else f"price {label}"
        allowed = _ROW_FIELDS
    else:
        provider, model = named
        row = f"price row '{provider}/{model}'"
        allowed = _ROW_FIELDS - {"provider", "model"}
    unknown = sorted(str(k) for k in set(raw) - allowed)
    if unknown:
        raise ConfigurationError(
            f"{origin}: {row}: unknown field(s) {unknown}; allowed fields are {sorted(allowed)}"
        )
    for name, value in (("provider", provider), ("model", model), ("unit", raw.get("unit"))):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ConfigurationError(
                f"{origin}: {row}: field {name!r} is missing or empty; every row needs "
                'provider, model and unit (e.g. unit = "1M_tokens")'
            )
    checked = raw.get("checked")
    if isinstance(checked, str):
        try:
            checked = _dt.date.fromisoformat(checked)
        except ValueError:
            raise ConfigurationError(
                f"{origin}: {row}: field 'checked' is {checked!r}; expected a date like 2026-11-24"
            ) from None
    if checked is not None and (
        not isinstance(checked, _dt.date) or isinstance(checked, _dt.datetime)
    ):
        raise ConfigurationError(
            f"{origin}: {row}: field 'checked' is {checked!r}; expected a date like 2026-11-24"
        )
    source = raw.get("source", "")
    if not isinstance(source, str):
        raise ConfigurationError(
            f"{origin}: {row}: field 'source' is {source!r}; expected the pricing page address"
        )
    aliases = raw.get("aliases", ())
    if isinstance(aliases, str) or not isinstance(aliases, (list, tuple)):
        raise ConfigurationError(
            f"{origin}: {row}: field 'aliases' is {aliases!r}; expected a list of names"
        )
    unit = raw["unit"]
    if isinstance(unit, str) and unit.endswith("_tokens") and "input" not in raw:
        raise ConfigurationError(
            f"{origin}: {row}: field 'input' is missing; a {unit!r} row needs the input price "
            "(USD per unit), even if it is 0"
        )
    try:
        return Price(
            provider=provider,
            model=model,
            unit=unit,
            input=raw.get("input", 0.0),
            output=raw.get("output", 0.0),
            cache_read=raw.get("cache_read"),
            cache_write=raw.get("cache_write"),
            per_unit=raw.get("per_unit"),
            source=source,
            checked=checked,
            aliases=tuple(aliases),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"{origin}: {exc}") from None


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
