"""Price files: reading the TOML format of ``prices.toml`` and the mapping forms of overrides.

Every error is a :class:`~chainsight.ConfigurationError` naming the file, the row and the field.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Final

from chainsight.cost.price_row import _TOKEN_PRICE_FIELDS, Price
from chainsight.errors import ConfigurationError

__all__: list[str] = []

_ROW_FIELDS: Final = frozenset(
    {"provider", "model", "unit", *_TOKEN_PRICE_FIELDS, "per_unit", "source", "checked", "aliases"}
)
_FILE_KEYS: Final = frozenset({"schema", "price", "aliases"})


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
    provider, model, row = _row_identity(raw, named, label, origin)
    checked = _checked_date(raw.get("checked"), row, origin)
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
            cache_write_1h=raw.get("cache_write_1h"),
            per_unit=raw.get("per_unit"),
            source=source,
            checked=checked,
            aliases=tuple(aliases),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"{origin}: {exc}") from None


def _row_identity(
    raw: Mapping[Any, Any], named: tuple[str, str] | None, label: str, origin: str
) -> tuple[Any, Any, str]:
    """The row's provider, model and name for messages, once its field names are checked."""
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
    return provider, model, row


def _checked_date(checked: object, row: str, origin: str) -> _dt.date | None:
    """The row's ``checked`` field as a date (TOML dates come parsed, mappings may give text)."""
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
    return checked
