"""The price table, name resolution, overrides and the cost of one call."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainsight.cost.price_row import Price
from chainsight.cost.prices import (
    MEMO_SIZE,
    PriceTable,
    cost_usd,
    normalize_anthropic,
)
from chainsight.errors import ConfigurationError

BUNDLED = PriceTable.bundled()
TOKEN_ROWS = [r for r in BUNDLED.rows() if r.billed_by_tokens]

tokens = st.integers(min_value=0, max_value=10_000_000)
any_count = st.integers(min_value=-1_000_000, max_value=10_000_000)
usd = st.floats(min_value=0, max_value=500, allow_nan=False, allow_infinity=False)


@st.composite
def token_prices(draw: st.DrawFn, *, cheap_reads: bool = False) -> Price:
    """A token-billed row; with ``cheap_reads`` its cache reads cost no more than input."""
    rate = draw(usd)
    reads = st.floats(min_value=0, max_value=rate) if cheap_reads else usd
    read = draw(st.none() | reads)
    return Price(
        provider="p",
        model="m",
        unit=draw(st.sampled_from(["1M_tokens", "1K_tokens"])),
        input=rate,
        output=draw(usd),
        cache_read=read,
        cache_write=draw(st.none() | usd),
        cache_write_1h=draw(st.none() | usd),
    )


unit_prices = st.builds(
    Price,
    provider=st.just("p"),
    model=st.just("m"),
    unit=st.sampled_from(["1K_searches", "1_requests", "1M_pages"]),
    per_unit=usd,
)
prices = token_prices() | unit_prices | st.sampled_from(list(BUNDLED.rows()))
cheap_read_prices = token_prices(cheap_reads=True) | st.sampled_from(TOKEN_ROWS)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


# --- cost_usd: properties ---------------------------------------------------------------------


def usages(counts: st.SearchStrategy[int]) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments of cost_usd apart from the price."""
    return st.fixed_dictionaries(
        {
            "input_tokens": counts,
            "output_tokens": counts,
            "cached_input_tokens": counts,
            "cache_write_input_tokens": counts,
            "units": st.integers(-10, 1_000_000),
        }
    )


@given(prices, usages(any_count))
def test_cost_is_never_negative(price: Price, usage: dict[str, Any]) -> None:
    cost = cost_usd(price, **usage)
    assert cost >= 0
    assert math.isfinite(cost)


@given(prices, usages(tokens), tokens)
def test_adding_tokens_of_any_kind_never_lowers_the_cost(
    price: Price, usage: dict[str, Any], more: int
) -> None:
    # input_tokens counts cache reads and writes too, so adding k cached tokens adds k input.
    def cost(**extra: int) -> float:
        return cost_usd(price, **{k: v + extra.get(k, 0) for k, v in usage.items()})

    base = cost()
    slack = 1e-12 * max(1.0, base)
    assert cost(input_tokens=more) >= base - slack
    assert cost(output_tokens=more) >= base - slack
    assert cost(input_tokens=more, cached_input_tokens=more) >= base - slack
    assert cost(input_tokens=more, cache_write_input_tokens=more) >= base - slack
    assert cost(units=more) >= base - slack


@given(cheap_read_prices, tokens, st.data())
def test_cached_reads_never_cost_more_than_uncached_input(
    price: Price, inp: int, data: st.DataObject
) -> None:
    read = data.draw(st.integers(0, inp))
    uncached = cost_usd(price, input_tokens=inp)
    cached = cost_usd(price, input_tokens=inp, cached_input_tokens=read)
    assert cached <= uncached + 1e-12 * max(1.0, uncached)


@given(prices, tokens, tokens, tokens, tokens)
def test_openai_and_anthropic_shaped_usage_cost_the_same(
    price: Price, uncached: int, read: int, write: int, out: int
) -> None:
    # The same call reported two ways: OpenAI counts cached tokens inside prompt_tokens,
    # Anthropic reports input_tokens without its cache reads and writes.
    openai_usage = {"prompt_tokens": uncached + read + write, "completion_tokens": out}
    openai_cached = {"cached_tokens": read}  # usage.prompt_tokens_details
    anthropic_usage = {
        "input_tokens": uncached,
        "output_tokens": out,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
    }
    from_openai = cost_usd(
        price,
        input_tokens=openai_usage["prompt_tokens"],
        output_tokens=openai_usage["completion_tokens"],
        cached_input_tokens=openai_cached["cached_tokens"],
        cache_write_input_tokens=write,
    )
    total = normalize_anthropic(
        anthropic_usage["input_tokens"],
        anthropic_usage["cache_read_input_tokens"],
        anthropic_usage["cache_creation_input_tokens"],
    )
    assert total == uncached + read + write
    from_anthropic = cost_usd(
        price,
        input_tokens=total,
        output_tokens=anthropic_usage["output_tokens"],
        cached_input_tokens=anthropic_usage["cache_read_input_tokens"],
        cache_write_input_tokens=anthropic_usage["cache_creation_input_tokens"],
    )
    assert close(from_openai, from_anthropic)


@given(any_count, any_count, any_count)
def test_normalize_anthropic_counts_missing_or_negative_parts_as_zero(
    a: int, b: int, c: int
) -> None:
    assert normalize_anthropic(a, b, c) == max(a, 0) + max(b, 0) + max(c, 0)


# --- cost_usd: figures checked by hand --------------------------------------------------------


def test_gpt_4o_thousand_in_five_hundred_out() -> None:
    price = BUNDLED.lookup("gpt-4o")
    assert price is not None
    assert (price.input, price.output, price.cache_read) == (2.5, 10.0, 1.25)
    # 1,000 x $2.50/M + 500 x $10/M = $0.0025 + $0.0050
    assert close(cost_usd(price, input_tokens=1000, output_tokens=500), 0.0075)


def test_gpt_4o_cached_prompt_bills_cached_part_at_cached_price() -> None:
    price = BUNDLED.lookup("gpt-4o-2024-08-06")
    assert price is not None
    # 500 uncached x 2.50 + 1,500 cached x 1.25 + 100 out x 10 = 4,125 micro-USD
    cost = cost_usd(price, input_tokens=2000, cached_input_tokens=1500, output_tokens=100)
    assert close(cost, 0.004125)


def test_claude_sonnet_with_cache_reads_and_writes_in_anthropic_shape() -> None:
    price = BUNDLED.lookup("claude-sonnet-4-5-20250929")
    assert price is not None
    assert (price.input, price.cache_read, price.cache_write, price.output) == (3, 0.3, 3.75, 15)
    total = normalize_anthropic(200, 10_000, 2_000)
    cost = cost_usd(
        price,
        input_tokens=total,
        cached_input_tokens=10_000,
        cache_write_input_tokens=2_000,
        output_tokens=300,
    )
    # 200 x 3 + 10,000 x 0.30 + 2,000 x 3.75 + 300 x 15 = 15,600 micro-USD
    assert close(cost, 0.0156)


def test_embedding_and_rerank_rows() -> None:
    embed = BUNDLED.lookup("text-embedding-3-small")
    rerank = BUNDLED.lookup("rerank-v4.0-pro", "cohere")
    assert embed is not None
    assert rerank is not None
    assert close(cost_usd(embed, input_tokens=1_000_000), 0.02)
    assert rerank.unit == "1K_searches"
    # 250 searches at $2.50 per 1,000 searches; token counts do not apply to per-search rows.
    assert close(cost_usd(rerank, input_tokens=99_999, units=250), 0.625)


def test_mistral_has_no_cache_discount_so_cached_tokens_bill_as_input() -> None:
    price = BUNDLED.lookup("mistral-small-latest")
    assert price is not None
    assert price.cache_read is None
    plain = cost_usd(price, input_tokens=10_000)
    assert close(cost_usd(price, input_tokens=10_000, cached_input_tokens=9_000), plain)


def test_cache_counters_larger_than_input_are_trusted() -> None:
    price = Price("p", "m", "1M_tokens", input=2.0, output=0.0, cache_read=1.0, cache_write=4.0)
    # Unconverted Anthropic usage: input 50 but 1,000 cache reads. The reads are billed and
    # no uncached input is counted, rather than billing fewer reads than happened.
    assert close(cost_usd(price, input_tokens=50, cached_input_tokens=1000), 0.001)
    assert close(
        cost_usd(price, input_tokens=0, cached_input_tokens=100, cache_write_input_tokens=100),
        0.0005,
    )
    assert cost_usd(price, input_tokens=-5, output_tokens=-5, cached_input_tokens=-5) == 0


def test_one_hour_cache_writes_have_their_own_price() -> None:
    """A mixed Anthropic call on claude-sonnet-4-5: 500 uncached input, 1,000 cache reads,
    1,000 writes to the 5-minute cache and 2,000 to the one-hour cache, 300 output. Published
    prices per million: $3 input, $0.30 hit, $3.75 5m write, $6 1h write, $15 output."""
    price = BUNDLED.lookup("claude-sonnet-4-5-20250929")
    assert price is not None
    expected = (500 * 3 + 1000 * 0.30 + 1000 * 3.75 + 2000 * 6.0 + 300 * 15) / 1e6
    got = cost_usd(
        price,
        input_tokens=4500,
        output_tokens=300,
        cached_input_tokens=1000,
        cache_write_input_tokens=3000,
        cache_write_1h_input_tokens=2000,
    )
    assert close(got, expected)
    assert close(got, 0.02205)
    # Priced all at the 5-minute rate, the same call would be 0.01755: 20 % low.
    flat = cost_usd(
        price, input_tokens=4500, output_tokens=300, cached_input_tokens=1000,
        cache_write_input_tokens=3000,
    )  # fmt: skip
    assert close(flat, 0.01755)


def test_one_hour_writes_default_to_the_cache_write_price() -> None:
    price = Price("p", "m", "1M_tokens", input=1.0, cache_write=2.0)
    assert price.cache_write_1h is None
    assert close(cost_usd(price, input_tokens=100, cache_write_input_tokens=100,
                          cache_write_1h_input_tokens=60), 100 * 2.0 / 1e6)  # fmt: skip
    # One-hour writes larger than all writes: the part is trusted, the whole is at least it.
    own = Price("p", "m", "1M_tokens", input=1.0, cache_write=2.0, cache_write_1h=4.0)
    assert close(cost_usd(own, input_tokens=0, cache_write_1h_input_tokens=10), 40 / 1e6)
    assert cost_usd(own, input_tokens=0, cache_write_1h_input_tokens=-10) == 0


def test_one_hour_price_in_overrides_and_errors() -> None:
    table = BUNDLED.with_overrides(
        {"acme/a": {"unit": "1M_tokens", "input": 1.0, "cache_write_1h": 2.5}}
    )
    row = table.lookup("a")
    assert row is not None
    assert row.cache_write_1h == 2.5
    with pytest.raises(ConfigurationError, match="cache_write_1h"):
        BUNDLED.with_overrides({"acme/b": {"unit": "1M_tokens", "input": 1.0,
                                           "cache_write_1h": -1}})  # fmt: skip


# --- resolution -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "provider", "expected"),
    [
        ("gpt-4o", None, "openai/gpt-4o"),
        ("GPT-4o", None, "openai/gpt-4o"),
        ("  gpt-4o  ", None, "openai/gpt-4o"),
        ("gpt-4o-2024-08-06", None, "openai/gpt-4o"),
        ("gpt-4.1-2025-04-14", None, "openai/gpt-4.1"),
        ("o1-2024-12-17", None, "openai/o1"),
        ("chatgpt-4o-latest", None, "openai/gpt-4o"),
        ("openai/gpt-4o-mini", None, "openai/gpt-4o-mini"),
        ("openrouter/openai/gpt-4o", None, "openai/gpt-4o"),
        ("claude-3-5-sonnet-20241022", None, "anthropic/claude-3-5-sonnet"),
        ("claude-sonnet-4-5-20250929", None, "anthropic/claude-sonnet-4-5"),
        ("claude-opus-4-0", None, "anthropic/claude-opus-4"),
        ("claude-3-5-sonnet-latest", None, "anthropic/claude-3-5-sonnet"),
        ("anthropic/claude-haiku-4-5", None, "anthropic/claude-haiku-4-5"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", None, "anthropic/claude-3-5-sonnet"),
        (
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "aws.bedrock",
            "anthropic/claude-sonnet-4-5",
        ),
        ("claude-3-5-sonnet-v2@20241022", "gcp.vertex_ai", "anthropic/claude-3-5-sonnet"),
        ("claude-opus-4-1@20250805", None, "anthropic/claude-opus-4-1"),
        ("models/gemini-2.5-flash", None, "gcp.gemini/gemini-2.5-flash"),
        ("gemini/gemini-2.5-pro", None, "gcp.gemini/gemini-2.5-pro"),
        ("gemini-2.0-flash-001", None, "gcp.gemini/gemini-2.0-flash"),
        ("gemini-2.5-flash-preview-05-20", None, "gcp.gemini/gemini-2.5-flash"),
        ("mistral-large-latest", None, "mistral_ai/mistral-large"),
        ("mistral-small-2506", None, "mistral_ai/mistral-small"),
        ("mistral/codestral-2508", None, "mistral_ai/codestral"),
        ("mistral-medium-2508", None, "mistral_ai/mistral-medium-3"),
        ("command-a-03-2025", None, "cohere/command-a"),
        ("command-r-08-2024", None, "cohere/command-r"),
        ("cohere.command-r-plus-v1:0", None, "cohere/command-r-plus"),
        ("voyage/voyage-3.5", None, "voyage_ai/voyage-3.5"),
    ],
)
def test_names_resolve_to_their_base_row(name: str, provider: str | None, expected: str) -> None:
    price = BUNDLED.lookup(name, provider)
    assert price is not None, BUNDLED.explain(name, provider).steps
    assert f"{price.provider}/{price.model}" == expected


def test_an_exact_snapshot_row_wins_over_its_base_row() -> None:
    # Mistral Large 2 snapshots kept their price when mistral-large moved to Large 3.
    old = BUNDLED.lookup("mistral-large-2411")
    new = BUNDLED.lookup("mistral-large-2512")
    assert old is not None
    assert new is not None
    assert (old.model, old.input) == ("mistral-large-2411", 2.0)
    assert (new.model, new.input) == ("mistral-large", 0.5)


@pytest.mark.parametrize(
    "name",
    ["no-such-model", "", "   ", "gpt-4", "ft:gpt-4o-mini-2024-07-18:acme::abc123", "openai/", "/"],
)
def test_unknown_and_fine_tuned_names_are_unpriced(name: str) -> None:
    assert BUNDLED.lookup(name) is None
    assert BUNDLED.explain(name).price is None


def test_explain_lists_each_name_tried() -> None:
    res = BUNDLED.explain("openai/gpt-4o-2024-08-06")
    assert res.price is not None
    assert res.provider == "openai"
    assert res.steps == (
        "'openai/gpt-4o-2024-08-06' (as given): no row",
        "'gpt-4o-2024-08-06' (prefix 'openai/' removed): no row",
        "'gpt-4o' (date suffix '-2024-08-06' removed): row openai/gpt-4o",
    )


def shared_name_table() -> PriceTable:
    return PriceTable(
        [
            Price("acme", "shared-model", "1M_tokens", input=1.0),
            Price("gcp.gemini", "shared-model", "1M_tokens", input=2.0),
        ]
    )


def test_provider_breaks_ties_and_accepts_its_synonyms() -> None:
    table = shared_name_table()
    first = table.lookup("shared-model")
    assert first is not None
    assert first.provider == "acme"
    for provider in ("gcp.gemini", "google", "GEMINI", "gcp.vertex_ai"):
        chosen = table.lookup("shared-model", provider)
        assert chosen is not None
        assert chosen.provider == "gcp.gemini", provider
    # A prefix names the provider too; an explicit provider wins over it.
    prefixed = table.lookup("google/shared-model")
    assert prefixed is not None
    assert prefixed.provider == "gcp.gemini"
    explicit = table.lookup("google/shared-model", "acme")
    assert explicit is not None
    assert explicit.provider == "acme"
    # A provider that prices nothing under that name does not make the name unpriced.
    other = table.lookup("shared-model", "openai")
    assert other is not None
    assert other.provider == "acme"


def test_user_aliases_resolve_deployment_names() -> None:
    table = BUNDLED.with_aliases(
        {"My-GPT4o-Deployment": "gpt-4o", "claude-prod": "anthropic/claude-sonnet-4-5"}
    )
    for name in ("my-gpt4o-deployment", "MY-GPT4O-DEPLOYMENT", "azure/my-gpt4o-deployment"):
        price = table.lookup(name, "azure.ai.openai")
        assert price is not None, name
        assert price.model == "gpt-4o"
    claude = table.lookup("claude-prod")
    assert claude is not None
    assert claude.model == "claude-sonnet-4-5"
    assert "user alias" in table.explain("claude-prod").steps[0]
    # The original table knows nothing of these aliases.
    assert BUNDLED.lookup("my-gpt4o-deployment") is None


def test_an_alias_to_an_unpriced_model_is_unpriced() -> None:
    table = BUNDLED.with_aliases({"mystery": "no-such-model"})
    assert table.lookup("mystery") is None


def test_lookups_are_memoised_and_the_memo_is_bounded() -> None:
    table = BUNDLED.with_aliases({})
    assert table.lookup("gpt-4o-2024-08-06") is table.lookup("gpt-4o-2024-08-06")
    for i in range(MEMO_SIZE + 10):
        assert table.lookup(f"unknown-model-{i}") is None
    assert len(table._memo) <= MEMO_SIZE
    assert table.lookup("gpt-4o") is BUNDLED.lookup("gpt-4o")


# --- overrides --------------------------------------------------------------------------------


def test_mapping_override_wins_and_leaves_the_bundled_table_alone() -> None:
    table = BUNDLED.with_overrides(
        {"openai/gpt-4o": {"unit": "1M_tokens", "input": 2.0, "output": 8.0}}
    )
    mine = table.lookup("gpt-4o-2024-08-06")
    assert mine is not None
    assert (mine.input, mine.output, mine.cache_read) == (2.0, 8.0, None)
    assert len(table) == len(BUNDLED)
    original = BUNDLED.lookup("gpt-4o")
    assert original is not None
    assert original.input == 2.5
    assert close(cost_usd(mine, input_tokens=1000, output_tokens=500), 0.006)


def test_override_row_from_another_provider_wins_for_the_same_name() -> None:
    table = BUNDLED.with_overrides(
        {"azure.ai.openai/gpt-4o": {"unit": "1M_tokens", "input": 2.75, "output": 11.0}}
    )
    assert len(table) == len(BUNDLED) + 1
    mine = table.lookup("gpt-4o")
    assert mine is not None
    assert mine.provider == "azure.ai.openai"
    theirs = table.lookup("gpt-4o", "openai")
    assert theirs is not None
    assert theirs.input == 2.5


def test_file_override_in_the_bundled_format(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        """
schema = 1

[aliases]
"prod-chat" = "acme/acme-chat-1"

[[price]]
provider = "acme"
model = "acme-chat-1"
unit = "1M_tokens"
input = 1.0
output = 3.0
cache_read = 0.1
source = "https://acme.example/pricing"
checked = 2026-11-01

[[price]]
provider = "cohere"
model = "rerank-v4.0-fast"
unit = "1K_searches"
per_unit = 1.5
""",
        encoding="utf-8",
    )
    table = BUNDLED.with_overrides(path)
    chat = table.lookup("prod-chat")
    assert chat is not None
    assert chat.checked == dt.date(2026, 11, 1)
    assert chat.cache_read == 0.1
    rerank = table.lookup("rerank-v4.0-fast")
    assert rerank is not None
    assert rerank.per_unit == 1.5
    assert list(table.rows())[:2] == [chat, rerank]
    # Overrides stack: a later override wins over an earlier one, aliases are kept.
    again = table.with_overrides(
        {"acme/acme-chat-1": {"unit": "1M_tokens", "input": 0.5, "checked": "2026-11-20"}}
    )
    newer = again.lookup("prod-chat")
    assert newer is not None
    assert (newer.input, newer.checked) == (0.5, dt.date(2026, 11, 20))
    assert BUNDLED.with_overrides(str(path)).lookup("prod-chat") == chat


def test_mapping_in_the_file_structure() -> None:
    table = BUNDLED.with_overrides(
        {
            "price": [{"provider": "acme", "model": "m1", "unit": "1M_tokens", "input": 1}],
            "aliases": {"m1-prod": "m1"},
        }
    )
    price = table.lookup("m1-prod")
    assert price is not None
    assert price.input == 1.0
    assert isinstance(price.input, float)


GOOD: dict[str, Any] = {"provider": "acme", "model": "m1", "unit": "1M_tokens", "input": 1.0}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"input": -1.0}, "input"),
        ({"output": -0.01}, "output"),
        ({"cache_read": -1}, "cache_read"),
        ({"cache_write": float("nan")}, "cache_write"),
        ({"output": float("inf")}, "output"),
        ({"input": "2.5"}, "input"),
        ({"output": True}, "output"),
        ({"colour": "blue"}, "colour"),
        ({"unit": None}, "unit"),
        ({"unit": "per_token"}, "unit"),
        ({"unit": 1}, "unit"),
        ({"input": None}, "input"),
        ({"per_unit": 2.0}, "per_unit"),
        ({"unit": "1K_searches", "input": 0, "per_unit": None}, "per_unit"),
        ({"unit": "1K_searches", "per_unit": 2.0}, "input"),
        ({"checked": "yesterday"}, "checked"),
        ({"checked": dt.datetime(2026, 11, 24, 12, 0)}, "checked"),
        ({"aliases": "gpt"}, "aliases"),
        ({"aliases": ["ok", ""]}, "aliases"),
        ({"source": 42}, "source"),
        ({"provider": None}, "provider"),
        ({"provider": ""}, "provider"),
    ],
)
def test_every_kind_of_bad_row_names_the_row_and_the_field(
    change: dict[str, Any], field: str
) -> None:
    row = {**GOOD, **change}
    row = {k: v for k, v in row.items() if v is not None}
    with pytest.raises(ConfigurationError) as info:
        BUNDLED.with_overrides({"price": [row]})
    message = str(info.value)
    assert field in message
    if row.get("provider"):
        assert "acme/m1" in message
    else:
        assert "row 1" in message


def test_bad_rows_in_the_short_form_are_named_by_their_key() -> None:
    with pytest.raises(ConfigurationError, match=r"openai/gpt-4o.*'input'.*-2"):
        BUNDLED.with_overrides({"openai/gpt-4o": {"unit": "1M_tokens", "input": -2}})
    with pytest.raises(ConfigurationError, match=r"openai/gpt-4o.*'unit' is missing"):
        BUNDLED.with_overrides({"openai/gpt-4o": {"input": 2}})
    with pytest.raises(ConfigurationError, match=r"openai/gpt-4o.*unknown field.*'model'"):
        BUNDLED.with_overrides({"openai/gpt-4o": {"unit": "1M_tokens", "input": 2, "model": "x"}})
    with pytest.raises(ConfigurationError, match=r"'gpt-4o' is not 'provider/model'"):
        BUNDLED.with_overrides({"gpt-4o": {"unit": "1M_tokens", "input": 2}})
    with pytest.raises(ConfigurationError, match=r"'openai/gpt-4o' is float"):
        BUNDLED.with_overrides({"openai/gpt-4o": 2.5})


@pytest.mark.parametrize(
    ("prices", "match"),
    [
        ({"price": [GOOD, GOOD]}, r"'acme/m1' is given twice"),
        ({"price": GOOD}, r"'price' is dict"),
        ({"schema": 2, "price": []}, r"schema is 2"),
        ({"schema": 1, "prices": []}, r"unknown top-level keys \['prices'\]"),
        ({"price": [], "aliases": {"x": 3}}, r"alias 'x' points to 3"),
        ({"price": [], "aliases": ["x"]}, r"aliases is list"),
    ],
)
def test_bad_price_structures(prices: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        BUNDLED.with_overrides(prices)


def test_bad_price_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigurationError, match=r"cannot read price file .*absent\.toml"):
        BUNDLED.with_overrides(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[price]\nprovider = ", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"broken\.toml' is not valid TOML"):
        BUNDLED.with_overrides(broken)
    negative = tmp_path / "negative.toml"
    negative.write_text(
        '[[price]]\nprovider = "acme"\nmodel = "m1"\nunit = "1M_tokens"\ninput = -3\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match=r"negative\.toml: price row 'acme/m1'.*'input'"):
        BUNDLED.with_overrides(negative)
    with pytest.raises(ConfigurationError, match="expected a path to a TOML file or a mapping"):
        BUNDLED.with_overrides(42)  # type: ignore[arg-type]


def test_price_validates_itself_when_built_directly() -> None:
    with pytest.raises(ConfigurationError, match=r"'acme/m1'.*'input' is -1"):
        Price("acme", "m1", "1M_tokens", input=-1)
    with pytest.raises(ConfigurationError, match="appears twice"):
        PriceTable([Price("a", "m", "1M_tokens"), Price("A", "M", "1M_tokens")])
    with pytest.raises(ConfigurationError, match="alias name"):
        BUNDLED.with_aliases({"": "gpt-4o"})


# --- the bundled table ------------------------------------------------------------------------


def test_bundled_table_is_parsed_once() -> None:
    assert PriceTable.bundled() is PriceTable.bundled()


def test_bundled_table_has_forty_dated_sourced_rows_across_six_groups() -> None:
    rows = list(BUNDLED.rows())
    assert len(rows) >= 40
    for row in rows:
        assert row.source.startswith("https://"), row
        assert isinstance(row.checked, dt.date), row
        assert dt.date(2025, 1, 1) <= row.checked <= dt.date(2026, 12, 31), row
    providers = {r.provider for r in rows}
    assert {"openai", "anthropic", "gcp.gemini", "mistral_ai", "cohere"} <= providers
    embeddings = [r for r in rows if "embed" in r.model or r.model.startswith("voyage-")]
    reranks = [r for r in rows if "rerank" in r.model]
    assert len(embeddings) >= 5
    assert {r.provider for r in reranks} >= {"cohere", "voyage_ai"}
    assert any(not r.billed_by_tokens for r in reranks)


def test_bundled_names_are_unique_and_resolve_to_their_own_row() -> None:
    names: dict[str, Price] = {}
    for row in BUNDLED.rows():
        for name in (row.model, *row.aliases):
            assert name == name.lower()
            assert name not in names, f"{name} is on {names.get(name)} and {row}"
            names[name] = row
            assert BUNDLED.lookup(name) is row
            assert BUNDLED.lookup(name, row.provider) is row


def test_bundled_cache_prices_are_consistent() -> None:
    for row in TOKEN_ROWS:
        if row.cache_read is not None:
            assert row.cache_read <= row.input, row
        if row.provider == "anthropic":
            # Anthropic: cache hits are 0.1x and 5-minute writes 1.25x the input price.
            assert row.cache_read is not None
            assert row.cache_write is not None
            assert math.isclose(row.cache_read, row.input * 0.1, rel_tol=0.21), row
            assert math.isclose(row.cache_write, row.input * 1.25, rel_tol=0.05), row
            # One-hour writes are 2x input on every Claude model (the pricing page's table).
            assert row.cache_write_1h is not None
            assert math.isclose(row.cache_write_1h, row.input * 2), row
