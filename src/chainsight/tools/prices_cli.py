"""``chainsight prices [MODEL] [--provider P] [--prices PATH] [--json]``.

Without MODEL: print the price table, one row per model, with its source and checked date.
With MODEL: print how the name resolved (each name tried) and the row that prices it; exit 1
when the model is unpriced, so scripts and CI can check that every model they use is priced.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from chainsight.cost.prices import Price, PriceTable
from chainsight.errors import ConfigurationError

__all__ = ["add_arguments", "run"]

_COLUMNS = (
    "provider",
    "model",
    "unit",
    "input",
    "output",
    "cache read",
    "cache write",
    "write 1h",
    "source",
    "checked",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``prices`` arguments to ``parser``."""
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="resolve this model name (e.g. gpt-4o-2024-08-06) and show the row that prices it",
    )
    parser.add_argument(
        "--provider",
        metavar="NAME",
        help="provider name to prefer when several providers price the same model name",
    )
    parser.add_argument(
        "--prices",
        metavar="PATH",
        help="TOML file of price rows (prices.toml format) that win over the bundled table",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Run ``chainsight prices``; return 0, 1 (model unpriced) or 2 (bad price file)."""
    try:
        table = PriceTable.bundled()
        if args.prices:
            table = table.with_overrides(args.prices)
    except ConfigurationError as exc:
        print(f"chainsight prices: {exc}", file=sys.stderr)
        return 2
    if args.model is None:
        _print_table(list(table.rows()), as_json=args.json)
        return 0
    resolution = table.explain(args.model, args.provider)
    price = resolution.price
    if args.json:
        doc: dict[str, Any] = {
            "query": resolution.query,
            "provider": resolution.provider,
            "steps": list(resolution.steps),
            "price": _row_dict(price) if price is not None else None,
        }
        print(json.dumps(doc, indent=2))
    else:
        print(f"model {args.model!r}:")
        for step in resolution.steps:
            print(f"  tried {step}")
    if price is None:
        print(
            f"chainsight prices: no price for model {args.model!r}; its calls are counted in "
            "chainsight_unpriced_calls_total and carry no cost. Add a row (or an alias to a "
            "priced model) in a prices file and pass it with --prices PATH.",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        print()
        _print_table([price], as_json=False)
    return 0


def _row_dict(price: Price) -> dict[str, Any]:
    return {
        "provider": price.provider,
        "model": price.model,
        "unit": price.unit,
        "input": price.input,
        "output": price.output,
        "cache_read": price.cache_read,
        "cache_write": price.cache_write,
        "cache_write_1h": price.cache_write_1h,
        "per_unit": price.per_unit,
        "aliases": list(price.aliases),
        "source": price.source,
        "checked": price.checked.isoformat() if price.checked is not None else None,
    }


def _usd(value: float | None, *, same_as_input: bool = False, same_as: str = "-") -> str:
    if value is None:
        return "= input" if same_as_input else same_as
    return f"{value:.4f}".rstrip("0").rstrip(".") if value else "0"


def _cells(price: Price) -> tuple[str, ...]:
    if price.billed_by_tokens:
        prices = (
            _usd(price.input),
            _usd(price.output),
            _usd(price.cache_read, same_as_input=True),
            _usd(price.cache_write, same_as_input=True),
            _usd(price.cache_write_1h, same_as="= write"),
        )
    else:
        # Rows billed per search show their one price in the input column; the unit says per what.
        prices = (_usd(price.per_unit), "-", "-", "-", "-")
    checked = price.checked.isoformat() if price.checked is not None else "-"
    return (price.provider, price.model, price.unit, *prices, price.source or "-", checked)


def _print_table(rows: list[Price], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([_row_dict(r) for r in rows], indent=2))
        return
    body = [_cells(r) for r in rows]
    widths = [max(len(c) for c in col) for col in zip(_COLUMNS, *body, strict=True)]
    numeric = {3, 4, 5, 6, 7}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(_COLUMNS).rstrip())
    for cells in body:
        print(line(cells).rstrip())
    print(
        "\nUSD per unit; 'cache read'/'cache write' '= input' means billed at the input price, "
        "'write 1h' '= write' at the cache write price."
    )
