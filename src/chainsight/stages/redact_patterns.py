"""The built-in detectors of the :class:`~chainsight.stages.redact.Redactor`, in running order.

Each :class:`_Rule` pairs a regex with a cheap gate, a validator (Luhn, mod-97, octet ranges,
``ipaddress``) and the normal form that keyed hashes are taken of.

Detectors lean towards keeping ordinary text (order numbers, dates, versions, UUIDs, ISBNs) over
catching every exotic format, because a redactor that eats half of a prompt makes traces useless
and teaches people to turn it off.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["KINDS"]

# A placeholder the redactor wrote earlier (or a user redactor that follows the same shape). Text
# inside one is never scanned again, so redacting twice gives the same result as redacting once.
# Kinds are lowercase words with at most one trailing digit (``ipv4``), so a placeholder can
# never hide a digit run long enough to be a card number.
_PLACEHOLDER_RE = re.compile(r"\[REDACTED:[a-z][a-z_]{0,30}[0-9]?(?::[0-9a-f]{10})?\]")
_PLACEHOLDER_OPEN = "[REDACTED:"

_Span = tuple[int, int]


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    # Cheap test on the whole text; a rule whose gate fails skips its regex entirely.
    gate: Callable[[str], bool]
    # Validates a regex match; returns the span to replace, or None to keep the text.
    accept: Callable[[re.Match[str]], _Span | None]
    # The form that is hashed, so that "Alice@Example.com" and "alice@example.com" join.
    normalize: Callable[[str], str]
    # Every match contains this character and is shorter than _REACH: the regex then only needs
    # to run near it, not over a whole prompt.
    anchor: str | None = None


def _whole(m: re.Match[str]) -> _Span | None:
    return m.span()


def _value_group(m: re.Match[str]) -> _Span | None:
    return m.span("v")


def _same(value: str) -> str:
    return value


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _has_digit(text: str) -> bool:
    # Ten substring scans beat one regex search by 30x on digit-free prose.
    return any(d in text for d in "0123456789")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(compact: str) -> bool:
    s = compact.upper()
    if not 15 <= len(s) <= 34 or not s.isalnum() or not s.isascii():
        return False
    if not (s[:2].isalpha() and s[2:4].isdigit()):
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


# --- the detectors, in the order they run ------------------------------------------------------
#
# Each pattern starts with a plain character or character class and checks what precedes it with
# a lookbehind placed after that first character, as in ``eyJ(?<![...]eyJ)``. The result is the
# same as a leading lookbehind, but the regex engine can then skip ahead to candidate characters
# in C instead of testing the lookbehind at every position: about ten times faster on prose.

_JWT = re.compile(r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")

# The token, not the word "Bearer", is replaced. Prose such as "bearer tokens expire" must survive,
# so a token needs a digit and 12+ characters, or 20+ characters.
_BEARER = re.compile(
    r"[Bb](?<![A-Za-z0-9][Bb])(?i:earer)[ \t]+"
    r"(?P<v>(?=[A-Za-z0-9._~+/-]*[0-9])[A-Za-z0-9._~+/-]{12,}=*|[A-Za-z0-9._~+/-]{20,}=*)"
)


def _key(prefix: str, body: str) -> re.Pattern[str]:
    # One regex per literal prefix: the engine finds a literal prefix with a fast string search,
    # which an alternation of prefixes does not get.
    return re.compile(rf"{prefix}(?<![A-Za-z0-9_-]{prefix}){body}")


_API_KEYS = (
    _key("sk-", "[A-Za-z0-9_-]{17,}"),  # OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-)
    _key("sk_", "(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe secret keys
    _key("rk_", "(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe restricted keys
    _key("AKIA", "[A-Z0-9]{16}(?![A-Za-z0-9])"),  # AWS access key ids
    _key("ASIA", "[A-Z0-9]{16}(?![A-Za-z0-9])"),  # AWS temporary access key ids
    _key("AIza", "[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])"),  # Google API keys
    _key("gh", "[pousr]_[A-Za-z0-9]{30,}"),  # GitHub tokens
    _key("github_pat_", "[A-Za-z0-9_]{22,}"),  # GitHub fine-grained tokens
    _key("xox", "[abposr]-[A-Za-z0-9-]{10,}"),  # Slack
)

# Bounded parts (64-character local part, up to 7 labels) keep every match shorter than _REACH.
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+-](?<![A-Za-z0-9._%+-][A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{0,63}"
    r"@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,5}\.[A-Za-z]{2,63}(?![A-Za-z0-9-])"
)

# Groups of 4 then 4-6 then 3-5 digits with one consistent separator covers 4-4-4-4(-3),
# 4-6-5 (Amex) and 4-6-4 (Diners). The separator is a space, dash, dot, tab or line break: forms,
# OCR and copy-paste give all of them. Only issuer digits 2-6 (the card networks) count: this
# keeps millisecond timestamps (1…), ISBNs (978…) and most ids out. A Luhn check follows.
_CARD = re.compile(
    r"(?P<v>[2-6](?<![A-Za-z0-9_.,/+-][2-6])"
    r"(?:[0-9]{12,18}|[0-9]{3}(?P<sep>[ \t\n.-])[0-9]{4,6}(?:(?P=sep)[0-9]{3,5}){1,3}))"
    r"(?![0-9]|[.,-][0-9])"
)


def _continues_a_list(text: str, start: int) -> bool:
    """True when the grouped number at ``start`` follows two bare numbers, as in "sizes 256
    1024 2048 4096 8192 16384": a list of numbers, not a card. One number before is not enough
    ("page 12 4111 1111 1111 1111" is a card), and a number that ends a longer token (the "05"
    of "2024-11-05") is not bare."""
    i = start
    for _ in range(2):
        i -= 1
        if i < 1 or text[i] not in _CARD_SEPARATORS or not text[i - 1].isdigit():
            return False
        i -= 1
        while i >= 0 and text[i].isdigit():
            i -= 1
        if i >= 0 and not text[i].isspace():
            return False
        i += 1  # the first digit of the bare number: its separator is checked next
    return True


_CARD_SEPARATORS = " \t\n.-"
_CARD_GROUPINGS = frozenset({(4, 4, 4, 4), (4, 6, 5), (4, 6, 4)})


def _accept_card(m: re.Match[str]) -> _Span | None:
    value = m.group("v")
    sep = m.group("sep")
    # A number grouped as cards are printed is a card wherever it stands; another grouping
    # right after a list of numbers is one more number of the list.
    if (
        sep is not None
        and tuple(len(g) for g in value.split(sep)) not in _CARD_GROUPINGS
        and _continues_a_list(m.string, m.start("v"))
    ):
        return None
    digits = _digits(value)
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return m.span("v")
    if sep is None:
        return None
    # Grouped numbers in a row ("4412 4111 1111 1111 1111", two cards one after the other)
    # match as one run too long to be a card: look for a card among its groups, leftmost and
    # longest first. The redactor's next pass finds any second one.
    groups = value.split(sep)
    offsets = [0]
    for group in groups:
        offsets.append(offsets[-1] + len(group) + len(sep))
    base = m.start("v")
    for first in range(len(groups)):
        if groups[first][0] not in "23456":
            continue
        for last in range(len(groups), first + 2, -1):
            found = "".join(groups[first:last])
            if 13 <= len(found) <= 19 and _luhn_ok(found):
                return base + offsets[first], base + offsets[last] - len(sep)
    return None


# Matched from the check digits, which are rarer than letters; the country code is checked by
# the lookbehind and added back to the span by _accept_iban.
_IBAN = re.compile(
    r"[0-9](?<=(?<![A-Za-z0-9])[A-Za-z]{2}[0-9])[0-9]"
    r"(?:[A-Za-z0-9]{11,30}|(?: [A-Za-z0-9]{4}){2,7}(?: [A-Za-z0-9]{1,4})?)"
    r"(?![A-Za-z0-9])"
)


def _accept_iban(m: re.Match[str]) -> _Span | None:
    start = m.start() - 2
    text = m.string[start : m.end()]
    end = len(text)
    # A grouped IBAN may have swallowed a following short word ("… 7034 from"); retry without
    # the trailing groups before giving up.
    while end >= 15:
        if _iban_ok(text[:end].replace(" ", "")):
            return start, start + end
        cut = text.rfind(" ", 0, end)
        if cut < 0:
            return None
        end = cut
    return None


def _normalize_iban(value: str) -> str:
    return value.replace(" ", "").upper()


# Three shapes only: international (+ and 8-15 digits), North American with a separator
# ("(415) 555-0132", "(415) 555 0132", "415-555-0132", "415.555.0132"), and national numbers
# with a leading 0 grouped by spaces or dashes ("020 7946 0958", "06 12 34 56 78"). Bare digit
# runs are ids, not phone numbers, as far as we can tell.
# One regex per shape, each starting with a literal or a digit, is several times faster than one
# alternation of the four.
_NOT_PHONE_BEFORE = r"[A-Za-z0-9_+.\-/]"
_PHONE_END = r"(?![A-Za-z0-9_+]|[-./][0-9])"
_PHONE_INTL = re.compile(
    rf"\+(?<!{_NOT_PHONE_BEFORE}\+)[0-9](?:[ .\-()]{{0,2}}[0-9]){{7,14}}{_PHONE_END}"
)
_PHONE_NANP_AREA = re.compile(
    rf"\((?<!{_NOT_PHONE_BEFORE}\()[2-9][0-9]{{2}}\) ?[2-9][0-9]{{2}}[-. ][0-9]{{4}}{_PHONE_END}"
)
_PHONE_NANP = re.compile(
    rf"[2-9](?<!{_NOT_PHONE_BEFORE}[2-9])[0-9]{{2}}(?P<sep>[-.])[2-9][0-9]{{2}}(?P=sep)[0-9]{{4}}"
    rf"{_PHONE_END}"
)
_PHONE_NATIONAL = re.compile(
    rf"0(?<!{_NOT_PHONE_BEFORE}0)[0-9]{{1,4}}"
    rf"(?P<sep>[ -])[0-9]{{2,8}}(?:(?P=sep)[0-9]{{2,8}}){{0,3}}{_PHONE_END}"
)
_DATE_LIKE = re.compile(r"0[1-9][ -](?:0[1-9]|1[0-2])[ -](?:19|20)[0-9]{2}")


def _accept_intl_phone(m: re.Match[str]) -> _Span | None:
    value = m.group()
    # "+44 20 7946 0958 (415) 555-0132": the separators allow "(0)", so the match runs on into
    # the next number's area code. An opening parenthesis the match does not close starts the
    # next number: end before it (the redactor's next pass finds that one).
    opened = value.rfind("(")
    if opened > 0 and ")" not in value[opened:]:
        value = value[:opened].rstrip(" .-")
    if 8 <= sum(ch.isdigit() for ch in value) <= 15:
        return m.start(), m.start() + len(value)
    return None


def _accept_national_phone(m: re.Match[str]) -> _Span | None:
    value = m.group()
    if not 10 <= sum(ch.isdigit() for ch in value) <= 12 or _DATE_LIKE.match(value):
        return None
    return m.span()


def _normalize_phone(value: str) -> str:
    digits = _digits(value)
    return "+" + digits if value.startswith("+") else digits


_IPV4 = re.compile(
    r"[0-9](?<![A-Za-z0-9_.][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![A-Za-z0-9_]|\.[0-9])"
)


def _accept_ipv4(m: re.Match[str]) -> _Span | None:
    for octet in m.group().split("."):
        if int(octet) > 255 or (len(octet) > 1 and octet[0] == "0"):
            return None
    return m.span()


# A loose candidate, checked by the ipaddress module. Python slices ("a[1::2]") and C++ scopes are
# valid or nearly valid IPv6, so an address needs a digit and at least three groups; "::1" and
# "fe80::1" are kept, which costs nothing since they identify no one.
# Matched from the first colon (a fast literal search); _accept_ipv6 adds back the first group.
_IPV6 = re.compile(r":[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,6}(?![A-Za-z0-9])")
_HEX = frozenset("0123456789abcdefABCDEF")


def _accept_ipv6(m: re.Match[str]) -> _Span | None:
    text = m.string
    start = m.start()
    while start > 0 and m.start() - start < 4 and text[start - 1] in _HEX:
        start -= 1
    if start > 0 and (text[start - 1].isalnum() or text[start - 1] == ":"):
        return None  # part of a longer word, or five or more hex digits before the colon
    value = text[start : m.end()]
    if value.endswith(":") and not value.endswith("::"):
        value = value[:-1]  # "fe80::1:2:3: is down" ends a sentence with a colon
    groups = [g for g in value.split(":") if g]
    if len(groups) < 3 or not _has_digit(value):
        return None
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return None
    return start, start + len(value)


def _normalize_ipv6(value: str) -> str:
    return ipaddress.IPv6Address(value).compressed


def _contains(*needles: str) -> Callable[[str], bool]:
    def gate(text: str) -> bool:
        return any(n in text for n in needles)

    return gate


def _always(text: str) -> bool:
    return True


_RULES: tuple[_Rule, ...] = (
    _Rule("jwt", _JWT, _always, _whole, _same),
    _Rule("bearer_token", _BEARER, _contains("earer", "EARER"), _value_group, _same),
    *(_Rule("api_key", key, _always, _whole, _same) for key in _API_KEYS),
    # The email regex starts with a character class nearly every character is in, so it runs
    # only around each "@".
    _Rule("email", _EMAIL, _contains("@"), _whole, str.lower, "@"),
    _Rule("card", _CARD, _has_digit, _accept_card, _digits),
    _Rule("iban", _IBAN, _has_digit, _accept_iban, _normalize_iban),
    _Rule("phone", _PHONE_INTL, _contains("+"), _accept_intl_phone, _normalize_phone),
    _Rule("phone", _PHONE_NANP_AREA, _contains("("), _whole, _normalize_phone),
    _Rule("phone", _PHONE_NANP, _has_digit, _whole, _normalize_phone),
    _Rule("phone", _PHONE_NATIONAL, _contains("0"), _accept_national_phone, _normalize_phone),
    _Rule("ipv4", _IPV4, _contains("."), _accept_ipv4, _same),
    _Rule("ipv6", _IPV6, _contains(":"), _accept_ipv6, _normalize_ipv6),
)

#: The placeholder kinds the built-in detectors produce, in the order they run.
KINDS: tuple[str, ...] = tuple(dict.fromkeys(rule.kind for rule in _RULES))

# Longer than an email can be (64 + 1 + 7 x 64 characters) plus what its lookarounds inspect.
_REACH = 600


def _windows(text: str, anchor: str) -> list[_Span]:
    """The stretches of ``text`` within _REACH characters of ``anchor``, merged."""
    windows: list[_Span] = []
    i = text.find(anchor)
    while i >= 0:
        start = max(0, i - _REACH)
        end = min(len(text), i + 1 + _REACH)
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
        i = text.find(anchor, i + 1)
    return windows


def _placeholder_spans(text: str) -> list[_Span]:
    if _PLACEHOLDER_OPEN not in text:
        return []
    return [m.span() for m in _PLACEHOLDER_RE.finditer(text)]


def _overlaps(spans: list[_Span], start: int, end: int) -> bool:
    i = bisect.bisect_right(spans, (start, 1 << 62)) - 1
    if i >= 0 and spans[i][1] > start:
        return True
    return i + 1 < len(spans) and spans[i + 1][0] < end
