"""``chainsight prices``: the table, one model's resolution, overrides, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chainsight.cost.prices import PriceTable
from chainsight.tools.cli import main

ACME = """
[aliases]
"prod-chat" = "acme-chat-1"

[[price]]
provider = "acme"
model = "acme-chat-1"
unit = "1M_tokens"
input = 1.5
output = 6.0
source = "https://acme.example/pricing"
checked = 2026-11-01

[[price]]
provider = "openai"
model = "gpt-4o"
unit = "1M_tokens"
input = 2.0
output = 8.0
"""


@pytest.fixture
def acme_prices(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(ACME, encoding="utf-8")
    return path


def test_table_lists_every_row_with_source_and_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["provider", "model", "unit"]
    for column in ("input", "output", "cache", "read", "write", "source", "checked"):
        assert column in header
    rows = [line for line in lines[1:] if line.startswith(("openai ", "anthropic ", "gcp."))]
    assert len(rows) >= 20
    gpt4o = next(line.split() for line in lines if line.split()[:2] == ["openai", "gpt-4o"])
    assert gpt4o[2:6] == ["1M_tokens", "2.5", "10", "1.25"]
    assert gpt4o[-2].startswith("https://")
    assert gpt4o[-1] == "2026-11-24"
    rerank = next(line.split() for line in lines if "rerank-v4.0-pro" in line)
    assert rerank[2:4] == ["1K_searches", "2.5"]


def test_table_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(PriceTable.bundled())
    claude = next(r for r in rows if r["model"] == "claude-haiku-4-5")
    assert claude == {
        "provider": "anthropic",
        "model": "claude-haiku-4-5",
        "unit": "1M_tokens",
        "input": 1.0,
        "output": 5.0,
        "cache_read": 0.1,
        "cache_write": 1.25,
        "cache_write_1h": 2.0,
        "per_unit": None,
        "aliases": [],
        "source": "https://platform.claude.com/docs/en/about-claude/pricing",
        "checked": "2026-12-05",
    }


def test_model_shows_how_the_name_resolved(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "anthropic.claude-3-5-sonnet-20241022-v2:0"]) == 0
    out = capsys.readouterr().out
    assert "Bedrock prefix 'anthropic.' removed" in out
    assert "version suffix '-v2:0' removed" in out
    assert "date suffix '-20241022' removed): row anthropic/claude-3-5-sonnet" in out
    row = next(line.split() for line in out.splitlines() if line.startswith("anthropic "))
    assert row[:7] == ["anthropic", "claude-3-5-sonnet", "1M_tokens", "3", "15", "0.3", "3.75"]


def test_unpriced_model_exits_1_and_says_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "my-private-model"]) == 1
    captured = capsys.readouterr()
    assert "'my-private-model' (as given): no row" in captured.out
    assert "no price for model 'my-private-model'" in captured.err
    assert "--prices PATH" in captured.err


def test_unpriced_model_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "my-private-model", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["price"] is None
    assert doc["query"] == "my-private-model"


def test_prices_file_rows_and_aliases_win(
    acme_prices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prices", "prod-chat", "--prices", str(acme_prices), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["price"]["model"] == "acme-chat-1"
    assert doc["price"]["input"] == 1.5
    assert doc["steps"][0] == "'prod-chat' (as given) is a user alias of 'acme-chat-1'"

    assert main(["prices", "gpt-4o-2024-08-06", "--prices", str(acme_prices), "--json"]) == 0
    mine = json.loads(capsys.readouterr().out)["price"]
    assert (mine["input"], mine["output"], mine["cache_read"], mine["source"]) == (
        2.0,
        8.0,
        None,
        "",
    )

    assert main(["prices", "--prices", str(acme_prices)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["acme", "acme-chat-1"]
    assert sum(1 for line in lines if line.split()[:2] == ["openai", "gpt-4o"]) == 1


def test_provider_option_breaks_ties(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[[price]]\nprovider = "azure.ai.openai"\nmodel = "gpt-4o"\nunit = "1M_tokens"\n'
        "input = 2.75\noutput = 11.0\n",
        encoding="utf-8",
    )
    assert main(["prices", "gpt-4o", "--prices", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["price"]["provider"] == "azure.ai.openai"
    assert main(["prices", "gpt-4o", "--prices", str(path), "--provider", "openai", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["price"]["input"] == 2.5


def test_bad_prices_file_exits_2_naming_row_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[price]]\nprovider = "acme"\nmodel = "m1"\nunit = "1M_tokens"\ninput = -1\n',
        encoding="utf-8",
    )
    assert main(["prices", "--prices", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chainsight prices: ")
    assert "price row 'acme/m1'" in err
    assert "'input' is -1" in err

    assert main(["prices", "--prices", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read price file" in capsys.readouterr().err
