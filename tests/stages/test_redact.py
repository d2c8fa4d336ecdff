"""Tests for chainsight.stages.redact: detectors, keyed hashing, truncation, failing closed."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainsight.errors import ConfigurationError
from chainsight.stages.redact import Redactor, redact_value
from chainsight.stages.redact_patterns import KINDS

CORPUS = json.loads(
    (Path(__file__).parents[1] / "data" / "redaction_corpus.json").read_text(encoding="utf-8")
)
KEY = b"test-key-0123456789abcdef"


def _expected(entry: dict[str, Any]) -> str:
    text: str = entry["text"]
    for kind, value in entry["planted"]:
        text = text.replace(value, f"[REDACTED:{kind}]")
    return text


def _digest(value: str, key: bytes = KEY) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:10]


# --- the corpus --------------------------------------------------------------------------------


def test_corpus_is_large_and_covers_every_kind() -> None:
    assert len(CORPUS["redact"]) >= 30
    planted_kinds = {kind for e in CORPUS["redact"] for kind, _ in e["planted"]}
    assert planted_kinds == set(KINDS)


@pytest.mark.parametrize("entry", CORPUS["redact"], ids=lambda e: e["id"])
def test_every_planted_value_is_replaced_and_nothing_else(entry: dict[str, Any]) -> None:
    out = Redactor(max_bytes=1 << 20)(entry["text"])
    assert out == _expected(entry)
    for _, value in entry["planted"]:
        assert value not in out


@pytest.mark.parametrize("entry", CORPUS["keep"], ids=lambda e: e["id"])
def test_ordinary_text_is_kept(entry: dict[str, Any]) -> None:
    assert Redactor()(entry["text"]) == entry["text"]


@pytest.mark.parametrize("entry", CORPUS["redact"], ids=lambda e: e["id"])
def test_corpus_with_hash_key_leaves_no_value(entry: dict[str, Any]) -> None:
    out = Redactor(hash_key=KEY, max_bytes=1 << 20)(entry["text"])
    assert out is not None
    for kind, value in entry["planted"]:
        assert value not in out
        assert f"[REDACTED:{kind}:" in out
    assert "[REDACTED:" not in re.sub(r"\[REDACTED:[a-z_0-9]+:[0-9a-f]{10}\]", "", out)


# --- individual detectors: the edges the corpus does not pin down ----------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4111111111111111", "[REDACTED:card]"),
        ("4111111111111112", "4111111111111112"),  # Luhn-invalid
        ("card 4111 1111 1111 1111 exp 12/26", "card [REDACTED:card] exp 12/26"),
        ("7111111111111111", "7111111111111111"),  # no card network starts with 7
        ("id 41111111111111112345", "id 41111111111111112345"),  # 20 digits: an id
        ("Bearer abc", "Bearer abc"),  # too short to be a token
        ("BEARER Zm9vYmFyYmF6cXV4cXV1eA", "BEARER [REDACTED:bearer_token]"),
        ("a@b.co", "[REDACTED:email]"),
        ("user@localhost", "user@localhost"),  # no top-level domain: not an address
        ("+1 2", "+1 2"),
        ("01-02-2024 10", "01-02-2024 10"),  # a date and an hour, not a phone number
        ("10.0.0.1", "[REDACTED:ipv4]"),
        ("256.1.1.1", "256.1.1.1"),
        ("v1.2.3.4", "v1.2.3.4"),
        ("fe80::1:2:3: is down", "[REDACTED:ipv6]: is down"),
        ("::1 and fe80::1", "::1 and fe80::1"),  # loopback and link-local identify no one
        ("BE68 5390 0754 7034 from", "[REDACTED:iban] from"),
        ("DE89 3704 0044 0532 0130 01", "DE89 3704 0044 0532 0130 01"),  # bad check digits
        ("already [REDACTED:email] here", "already [REDACTED:email] here"),
    ],
)
def test_detector_edges(text: str, expected: str) -> None:
    assert Redactor()(text) == expected


def test_extra_redactors_run_after_builtins_in_order() -> None:
    seen: list[str] = []

    def customer_ids(text: str) -> str:
        seen.append(text)
        return re.sub(r"CUST-\d+", "[REDACTED:customer]", text)

    def shout(text: str) -> str:
        return text.replace("customer", "CUSTOMER")

    r = Redactor(extra=[customer_ids, shout])
    assert r("CUST-991 mailed a@example.com") == "[REDACTED:CUSTOMER] mailed [REDACTED:email]"
    assert seen == ["CUST-991 mailed [REDACTED:email]"]


# --- keyed hashing -----------------------------------------------------------------------------


def test_keyed_hash_is_hmac_of_the_normalised_value_and_joins_equal_values() -> None:
    r = Redactor(hash_key=KEY)
    a = r("from Alice@Example.com")
    b = r("to alice@example.com")
    assert a == f"from [REDACTED:email:{_digest('alice@example.com')}]"
    assert b == f"to [REDACTED:email:{_digest('alice@example.com')}]"
    assert r("4111 1111 1111 1111") == r("4111-1111-1111-1111") == r("4111111111111111")
    assert r("4111111111111111") == f"[REDACTED:card:{_digest('4111111111111111')}]"
    assert r("de89370400440532013000") == r("DE89 3704 0044 0532 0130 00")
    assert r("+44 20 7946 0958") == f"[REDACTED:phone:{_digest('+442079460958')}]"


def test_keyed_hash_differs_across_values_and_keys() -> None:
    r = Redactor(hash_key=KEY)
    assert r("a@example.com") != r("b@example.com")
    other = Redactor(hash_key=b"another-key-0123456789")
    assert r("a@example.com") != other("a@example.com")


# --- truncation --------------------------------------------------------------------------------


def test_truncation_counts_the_marker_within_the_cap() -> None:
    out = Redactor(max_bytes=64)("x" * 100)
    assert out is not None
    assert len(out.encode()) <= 64
    kept, marker = out.split("…")
    assert marker == f"[truncated {100 - len(kept)} bytes]"
    assert kept == "x" * len(kept)
    assert len(kept) > 30


def test_truncation_never_splits_a_code_point() -> None:
    text = "é漢🙂" * 100
    for limit in range(64, 80):
        out = Redactor(max_bytes=limit)(text)
        assert out is not None
        data = out.encode("utf-8")
        assert len(data) <= limit
        kept = out.split("…[truncated")[0]
        assert text.startswith(kept)


def test_short_text_is_not_truncated() -> None:
    text = "ü" * 32  # 64 bytes exactly
    assert Redactor(max_bytes=64)(text) == text


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_text_cut_into_something_secret_looking_is_redacted_again() -> None:
    # The 20-digit id is kept whole, but cut after 16 digits it is a Luhn-valid card number.
    recut = 0
    for limit in range(64, 140):
        out = Redactor(max_bytes=limit)("z" * 30 + " 41111111111111112345 " + "y" * 200)
        assert out is not None
        assert len(out.encode()) <= limit
        runs = re.findall(r"(?<![0-9])[0-9]{13,19}(?![0-9])", out)
        assert not [run for run in runs if _luhn_ok(run)]
        recut += "[REDACTED:card]" in out
    assert recut == 1


def _marker_count(out: str) -> int:
    match = re.search(r"…\[truncated (\d+) bytes\]$", out)
    assert match is not None, out
    return int(match.group(1))


def test_very_long_text_keeps_the_same_head_and_leaks_nothing() -> None:
    # Far longer than the cap: only the head is redacted, which must not change what is kept.
    chunk = "Ticket: alice@example.com paid with 4111 1111 1111 1111 from 10.0.0.1. "
    text = chunk * 2000
    r = Redactor(max_bytes=256)
    out = r(text)
    assert out is not None
    assert len(out.encode()) <= 256
    assert out.startswith("Ticket: [REDACTED:email] paid with [REDACTED:card] from [REDACTED:ipv4]")
    for value in ("alice@", "4111 1111", "10.0.0.1"):
        assert value not in out
    assert _marker_count(out) > len(text) - 5000
    full = Redactor(max_bytes=1 << 24)(text)
    assert full is not None
    assert full.startswith(out.split("…[truncated")[0])


def test_very_long_text_cut_near_a_secret_leaks_nothing() -> None:
    r = Redactor(max_bytes=64)
    # The head ends near character 4 * 64 + 4096; plant values all around that point.
    for offset in range(4300, 4400, 7):
        text = "w " * (offset // 2) + "+44 20 7946 0958 bob@example.com " * 50 + "z" * 20000
        out = r(text)
        assert out is not None
        assert len(out.encode()) <= 64
        assert "7946" not in out
        assert "bob@" not in out


def test_very_long_single_token_is_still_redacted_whole() -> None:
    out = Redactor(max_bytes=64)("x" * 50_000)
    assert out is not None
    kept = out.split("…")[0]
    assert kept == "x" * len(kept)
    assert _marker_count(out) == 50_000 - len(kept)


def test_very_long_text_that_redaction_shrinks_reads_a_longer_head() -> None:
    # Each JWT shrinks to a placeholder, so the first head redacts to less than the cap plus
    # its slack: a longer head is read, and the cut still lands where truncation drops it.
    jwt = next(e for e in CORPUS["redact"] if e["id"] == "jwt-bare")["planted"][0][1]
    assert jwt.startswith("eyJ")
    text = (jwt + " ") * 2000
    out = Redactor(max_bytes=256)(text)
    assert out is not None
    assert len(out.encode()) <= 256
    assert "eyJ" not in out
    assert out.startswith("[REDACTED:jwt] [REDACTED:jwt]")
    # What was cut: the redacted head's unkept part plus the raw tail never read.
    assert len(text) // 2 < _marker_count(out) < len(text)


# --- failing closed ----------------------------------------------------------------------------


def test_raising_extra_returns_none_counts_and_reports() -> None:
    reported: list[BaseException] = []

    def broken(text: str) -> str:
        raise RuntimeError("boom " + text)

    r = Redactor(extra=[broken], on_failure=reported.append)
    assert r("alice@example.com") is None
    assert r("second") is None
    assert r.failures == 2
    assert [type(e) for e in reported] == [RuntimeError, RuntimeError]


def test_extra_returning_a_non_string_fails_closed() -> None:
    r = Redactor(extra=[lambda _t: None])  # type: ignore[list-item,return-value]
    assert r("text") is None
    assert r.failures == 1


def test_failing_on_failure_callback_is_swallowed(caplog: pytest.LogCaptureFixture) -> None:
    def bad_callback(exc: BaseException) -> None:
        raise ValueError("metric backend down")

    def broken(text: str) -> str:
        raise KeyError("secret-content-alice@example.com")

    r = Redactor(extra=[broken], on_failure=bad_callback)
    with caplog.at_level("WARNING", logger="chainsight"):
        assert r("x") is None
        assert r("y") is None
    assert r.failures == 2
    # Logged once, with the type only: the message may quote the content.
    assert len(caplog.records) == 1
    assert "KeyError" in caplog.text
    assert "alice" not in caplog.text


def test_non_string_input_fails_closed() -> None:
    r = Redactor()
    assert r(12345) is None  # type: ignore[arg-type]
    assert r.failures == 1


def test_lone_surrogates_are_replaced_not_fatal() -> None:
    out = Redactor()("bad \ud800 text a@example.com")
    assert out == "bad \ufffd text [REDACTED:email]"


# --- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"extra": "not-a-list"}, "'not-a-list'"),
        ({"extra": [42]}, "item 0 is not callable: 42"),
        ({"extra": 42}, "got 42"),
        ({"hash_key": "text-not-bytes-0123456789"}, "must be bytes, got str"),
        ({"hash_key": b"short"}, "is 5 bytes long"),
        ({"max_bytes": 10}, "is 10"),
        ({"max_bytes": True}, "got True"),
        ({"max_bytes": 4096.0}, "got 4096.0"),
        ({"on_failure": 3}, "got 3"),
    ],
)
def test_bad_arguments_raise_configuration_error(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(fragment)):
        Redactor(**kwargs)


# --- redact_value ------------------------------------------------------------------------------


def test_redact_value_messages_give_valid_json_with_placeholders() -> None:
    messages = [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "I am\nbob@example.com"}]},
    ]
    out = redact_value(messages, Redactor())
    assert out is not None
    decoded = json.loads(out)
    assert decoded[1]["parts"][0]["content"] == "I am\n[REDACTED:email]"
    assert decoded[0] == messages[0]


def test_redact_value_handles_numbers_keys_and_objects() -> None:
    class Doc:
        def __str__(self) -> str:
            return "doc by carol@example.com"

    value = {
        "card": 4111111111111111,
        "count": 3,
        "score": 0.5,
        "ok": True,
        "none": None,
        "dave@example.com": "key is an address",
        4012888888881881: "int key",
        "doc": Doc(),
        "tuple": ("192.168.0.1", 1),
    }
    out = redact_value(value, Redactor())
    assert out is not None
    assert json.loads(out) == {
        "card": "[REDACTED:card]",
        "count": 3,
        "score": 0.5,
        "ok": True,
        "none": None,
        "[REDACTED:email]": "key is an address",
        "[REDACTED:card]": "int key",
        "doc": "doc by [REDACTED:email]",
        "tuple": ["[REDACTED:ipv4]", 1],
    }


def test_redact_value_string_and_truncation() -> None:
    r = Redactor(max_bytes=64)
    assert redact_value("mail a@example.com", r) == "mail [REDACTED:email]"
    out = redact_value([{"content": "word " * 100}], r)
    assert out is not None
    assert len(out.encode()) <= 64
    assert out.startswith('[{"content":"word word')
    assert "…[truncated " in out


def test_redact_value_fails_closed_on_cycles_and_bad_extras() -> None:
    reported: list[BaseException] = []
    r = Redactor(on_failure=reported.append)
    cycle: list[object] = []
    cycle.append(cycle)
    assert redact_value(cycle, r) is None
    assert r.failures == 1
    assert len(reported) == 1

    broken = Redactor(extra=[lambda _t: 1 / 0])  # type: ignore[list-item,return-value]
    assert redact_value({"a": "b"}, broken) is None
    assert broken.failures == 1


def test_redact_value_never_raises_even_without_a_redactor() -> None:
    assert redact_value({"a": 1}, object()) is None  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------------

# Pieces that look like (or nearly like) the values the detectors hunt, so that random joins
# exercise the boundaries between detectors, placeholders and truncation.
FRAGMENTS = [
    "4111 1111 1111 1111",
    "4111111111111111",
    "41111111111111112345",
    "5555-5555-5555-4444",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "+44 20 7946 0958",
    "(415) 555-0132",
    "020 7946 0958",
    "alice@example.com",
    "a@b.co",
    "10.0.0.1",
    "2001:db8::8a2e:370:7334",
    "fe80::1:2:3:",
    "Bearer abcdefghijkl0123456789",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    "sk-proj-abcdefghijklmnopqrstuvwxyz",
    "AKIAIOSFODNN7EXAMPLE",
    "[REDACTED:email]",
    "[REDACTED:card:0123456789]",
    "[REDACTED:",
    "2024-11-05",
    "v1.2.3",
    "…[truncated 12 bytes]",
    "é",
    "🙂",
]
pieces = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.text(alphabet="0123456789 -.+:@()[]/abcdefABCDEF", max_size=24),
    st.text(max_size=24),
    st.characters(exclude_categories=()).map(str),  # includes lone surrogates
)
texts = st.lists(pieces, max_size=30).flatmap(
    lambda parts: st.sampled_from(["", " ", "\n", ",", "-", ":"]).map(lambda sep: sep.join(parts))
)
redactors = st.builds(
    Redactor,
    hash_key=st.sampled_from([None, KEY]),
    max_bytes=st.integers(min_value=64, max_value=400),
)


@settings(max_examples=400, deadline=None)
@given(text=texts, redactor=redactors)
def test_never_raises_and_never_exceeds_max_bytes(text: str, redactor: Redactor) -> None:
    out = redactor(text)
    assert out is not None
    assert len(out.encode("utf-8")) <= redactor.max_bytes
    assert redactor.failures == 0


@settings(max_examples=400, deadline=None)
@given(text=texts, redactor=redactors)
def test_redacting_twice_equals_once(text: str, redactor: Redactor) -> None:
    once = redactor(text)
    assert once is not None
    assert redactor(once) == once


@settings(max_examples=200, deadline=None)
@given(
    value=st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=12,
    ),
    redactor=redactors,
)
def test_redact_value_never_raises_and_respects_the_cap(value: object, redactor: Redactor) -> None:
    out = redact_value(value, redactor)
    assert out is not None
    assert len(out.encode("utf-8")) <= redactor.max_bytes


def test_a_user_redactor_runs_again_on_what_a_cut_keeps() -> None:
    # The user's rule masks a ticket id only when exactly four digits follow "id-". The whole
    # text has eight, so nothing is masked before the cut; the cut leaves four, which must be.
    def ticket_ids(text: str) -> str:
        return re.sub(r"id-[0-9]{4}(?![0-9])", "id-****", text)

    text = "see " + "w " * 20 + "id-12345678 " + "y" * 200
    for limit in range(64, 120):
        out = Redactor(max_bytes=limit, extra=[ticket_ids])(text)
        assert out is not None
        assert not re.search(r"id-[0-9]{4}(?![0-9])", out), (limit, out)
