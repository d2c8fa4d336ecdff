"""Every built-in price-table row the tests, examples, benchmarks and the demo use is held to the
provider's published figures (``tests/data/published_prices.json``: each with its source URL,
the day it was read, and how).

Which rows are used is found, not listed by hand: every string literal in those files that the
bundled table resolves (a model name, a dated snapshot, ``provider/model``) names a row, so a new
test that prices a new model fails here until its published figures are added.
"""

from __future__ import annotations

import ast
import datetime
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from chainsight.cost.price_row import Price
from chainsight.cost.prices import PriceTable

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "published_prices.json"
FIELDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "per_unit")
HOW = {"official", "cited", "table"}


def _users() -> list[Path]:
    found = [
        p for d in ("tests", "examples", "benchmarks") for p in sorted((ROOT / d).rglob("*.py"))
    ]
    return found + sorted((ROOT / "src" / "chainsight" / "tools").glob("demo*.py"))


@cache
def _published() -> dict[tuple[str, str], dict[str, Any]]:
    rows = json.loads(DATA.read_text(encoding="utf-8"))["rows"]
    return {(r["provider"], r["model"]): r for r in rows}


@cache
def _used() -> dict[tuple[str, str], list[str]]:
    """(provider, model) of every bundled row a string literal resolves to -> where."""
    table = PriceTable.bundled()
    used: dict[tuple[str, str], list[str]] = {}
    for path in _users():
        if path == Path(__file__).resolve():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if not 1 < len(text) <= 80 or any(c.isspace() for c in text):
                    continue
                row = table.lookup(text)
                if row is not None:
                    where = f"{path.relative_to(ROOT)}:{node.lineno} {text!r}"
                    used.setdefault((row.provider, row.model), []).append(where)
    return used


def _row(provider: str, model: str) -> Price:
    for row in PriceTable.bundled().rows():
        if (row.provider, row.model) == (provider, model):
            return row
    raise AssertionError(f"no built-in row {provider}/{model}")


def test_the_scan_finds_the_rows_the_suite_is_known_to_use() -> None:
    used = _used()
    assert ("openai", "gpt-4o") in used
    assert ("anthropic", "claude-sonnet-4-5") in used
    assert len(used) >= 20, sorted(used)


def test_every_row_in_use_has_published_figures() -> None:
    missing = {row: where[:2] for row, where in _used().items() if row not in _published()}
    assert not missing, (
        "price-table rows used without their published figures in "
        f"{DATA.relative_to(ROOT)} (add provider, model, the figures, source, read): {missing}"
    )


@pytest.mark.parametrize(("provider", "model"), sorted(_published()))
def test_the_table_row_matches_the_published_figures(provider: str, model: str) -> None:
    published = _published()[(provider, model)]
    row = _row(provider, model)
    assert row.unit == published["unit"]
    for name in FIELDS:
        expected = published.get(name)
        actual = getattr(row, name)
        if expected is None:
            # Not published separately: the table leaves it unset (the input price applies)
            # or at zero (embeddings have no output, searches no tokens).
            assert actual in (None, 0.0), f"{provider}/{model} {name}: table {actual}, unpublished"
        else:
            assert actual == pytest.approx(expected, rel=1e-12), (
                f"{provider}/{model} {name}: table {actual}, published {expected} "
                f"({published['source']}, read {published['read']})"
            )


@pytest.mark.parametrize(("provider", "model"), sorted(_published()))
def test_each_published_entry_says_where_and_when(provider: str, model: str) -> None:
    published = _published()[(provider, model)]
    row = _row(provider, model)
    assert published["source"] == row.source  # the page the table cites
    assert published["how"] in HOW
    if published["how"] == "cited":
        assert published["via"].startswith("https://")
    read = datetime.date.fromisoformat(published["read"])
    assert read >= row.checked or published["how"] == "table"
