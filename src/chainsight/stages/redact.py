"""Redaction and truncation of opt-in captured content (prompts, completions, documents).

Content capture is off by default. When it is on, every captured string goes through a
:class:`Redactor` before it becomes a span attribute: built-in detectors replace secrets and
personal data with typed placeholders, user redactors run next, and the result is cut to a byte
budget. Anything unexpected fails closed: the caller gets ``None`` and records nothing.

Detectors lean towards keeping ordinary text (order numbers, dates, versions, UUIDs, ISBNs) over
catching every exotic format, because a redactor that eats half of a prompt makes traces useless
and teaches people to turn it off.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chainsight.errors import ConfigurationError

__all__ = ["KINDS", "Redactor", "redact_value"]

_logger = logging.getLogger("chainsight")

# A placeholder the redactor wrote earlier (or a user redactor that follows the same shape). Text
# inside one is never scanned again, so redacting twice gives the same result as redacting once.
# Kinds are lowercase words with at most one trailing digit (``ipv4``), so a placeholder can
# never hide a digit run long enough to be a card number.
_PLACEHOLDER_RE = re.compile(r"\[REDACTED:[a-z][a-z_]{0,30}[0-9]?(?::[0-9a-f]{10})?\]")
_PLACEHOLDER_OPEN = "[REDACTED:"
_DIGEST_HEX = 10
_MIN_KEY_BYTES = 16
_MIN_MAX_BYTES = 64
_TRUNCATION_MARK = "…[truncated {} bytes]"
_MAX_DEPTH = 64
# Texts longer than _PRECUT_FACTOR * max_bytes + _PRECUT_SLACK characters have only their head
# redacted (see Redactor._redact_long).
_PRECUT_FACTOR = 4
_PRECUT_SLACK = 4096
# Integers shorter than this cannot be any detected value (the shortest, a card, has 13 digits).
_MIN_INT_DIGITS = 13

_SURROGATE = re.compile("[\ud800-\udfff]")

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
# 4-6-5 (Amex) and 4-6-4 (Diners). Only issuer digits 2-6 (the card networks) count: this keeps
# millisecond timestamps (1…), ISBNs (978…) and most ids out. A Luhn check follows.
_CARD = re.compile(
    r"(?P<v>[2-6](?<![A-Za-z0-9_.,/+-][2-6])(?<![0-9][ -][2-6])"
    r"(?:[0-9]{12,18}|[0-9]{3}(?P<sep>[ -])[0-9]{4,6}(?:(?P=sep)[0-9]{3,5}){1,3}))"
    r"(?![0-9]|[.,-][0-9])"
)


def _accept_card(m: re.Match[str]) -> _Span | None:
    digits = _digits(m.group("v"))
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return m.span("v")
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
    return m.span() if 8 <= sum(ch.isdigit() for ch in m.group()) <= 15 else None


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


def _byte_len(text: str) -> int:
    return len(text.encode("utf-8"))


class Redactor:
    """Replaces secrets and personal data in captured text, then cuts it to a byte budget.

    Built-in detectors run in this order: JWTs, ``Bearer`` tokens, API keys (OpenAI, Anthropic,
    Stripe, AWS, GitHub, Slack, Google), email addresses, Luhn-valid payment card numbers,
    mod-97-valid IBANs, phone numbers, IPv4 and IPv6 addresses. Each match becomes
    ``[REDACTED:<kind>]``, or ``[REDACTED:<kind>:<10 hex>]`` with ``hash_key`` (an HMAC-SHA256 of
    the normalised value, so equal values stay joinable across spans without being readable).
    Then every callable in ``extra`` runs on the result, in order. Last, the text is cut to
    ``max_bytes`` UTF-8 bytes, marker included, never inside a code point.

    Calling the redactor never raises: if a detector or a user redactor fails, it returns
    ``None`` (nothing should be recorded), adds one to :attr:`failures` and calls
    ``on_failure(exc)``.
    """

    __slots__ = (
        "_extra",
        "_failure_lock",
        "_hash_key",
        "_logged",
        "_max_bytes",
        "_on_failure",
        "failures",
    )

    def __init__(
        self,
        *,
        extra: Sequence[Callable[[str], str]] = (),
        hash_key: bytes | None = None,
        max_bytes: int = 4096,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        given: object = extra  # checked at run time too: a str is a Sequence of str
        if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
            raise ConfigurationError(
                f"Redactor(extra=...) must be a sequence of callables taking and returning str, "
                f"got {extra!r}; pass e.g. extra=[my_redactor]"
            )
        for i, fn in enumerate(extra):
            if not callable(fn):
                raise ConfigurationError(
                    f"Redactor(extra=...) item {i} is not callable: {fn!r}; pass functions that "
                    f"take the text and return the redacted text"
                )
        if hash_key is not None:
            if not isinstance(hash_key, bytes):
                raise ConfigurationError(
                    f"Redactor(hash_key=...) must be bytes, got {type(hash_key).__name__}; "
                    f"load it from a secret store and pass e.g. key.encode() or "
                    f"bytes.fromhex(...)"
                )
            if len(hash_key) < _MIN_KEY_BYTES:
                raise ConfigurationError(
                    f"Redactor(hash_key=...) is {len(hash_key)} bytes long; a key shorter than "
                    f"{_MIN_KEY_BYTES} bytes makes the hashes guessable. Generate one with "
                    f"secrets.token_bytes(32) and keep it in your secret store"
                )
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise ConfigurationError(
                f"Redactor(max_bytes=...) must be an int, got {max_bytes!r}; pass the largest "
                f"attribute size in bytes, e.g. 4096"
            )
        if max_bytes < _MIN_MAX_BYTES:
            raise ConfigurationError(
                f"Redactor(max_bytes=...) is {max_bytes}; it must be at least {_MIN_MAX_BYTES} "
                f"so the truncation marker fits. Use e.g. 4096"
            )
        if on_failure is not None and not callable(on_failure):
            raise ConfigurationError(
                f"Redactor(on_failure=...) must be callable or None, got {on_failure!r}"
            )
        self._extra: tuple[Callable[[str], str], ...] = tuple(extra)
        self._hash_key = hash_key
        self._max_bytes = max_bytes
        self._on_failure = on_failure
        self._failure_lock = threading.Lock()
        self._logged = False
        #: How many calls failed closed (returned ``None``) since this redactor was made.
        self.failures: int = 0

    @property
    def max_bytes(self) -> int:
        """The largest result, in UTF-8 bytes, this redactor returns."""
        return self._max_bytes

    def __call__(self, text: str) -> str | None:
        """Return ``text`` redacted and truncated, or ``None`` if redaction failed."""
        try:
            if not isinstance(text, str):
                raise TypeError(f"Redactor expects str, got {type(text).__name__}")
            text = _valid_unicode(text)
            if len(text) > _PRECUT_FACTOR * self._max_bytes + _PRECUT_SLACK:
                shortened = self._redact_long(text)
                if shortened is not None:
                    return shortened
            return self._truncate(self._redact_text(text))
        except Exception as exc:  # fail closed: nothing is better than a leak
            self._record_failure(exc)
            return None

    # --- internals ---------------------------------------------------------------------------

    def _redact_text(self, text: str) -> str:
        text = self._builtin(text)
        for fn in self._extra:
            result = fn(text)
            if not isinstance(result, str):
                raise TypeError(
                    f"user redactor {fn!r} returned {type(result).__name__}, expected str"
                )
            text = result
        return text

    def _builtin(self, text: str) -> str:
        # A replacement changes what sits next to the remaining text, which can let an earlier
        # detector match there now. Repeat until nothing changes, so that redacting twice gives
        # the same result as once. Clean text takes one pass; each repeat turns more text into
        # placeholders, which are never matched again, so this ends.
        changed = True
        while changed:
            changed = False
            for rule in _RULES:
                if rule.gate(text):
                    redacted = self._apply(rule, text)
                    if redacted is not None:
                        text = redacted
                        changed = True
        return text

    def _apply(self, rule: _Rule, text: str) -> str | None:
        """``text`` with the rule's matches replaced, or None if nothing matched."""
        # No detector's characters include "[" or "]", so a match never spans a placeholder, and
        # to every lookaround a placeholder's bracket looks like the start or end of the text.
        # Only a match inside a placeholder has to be skipped.
        protected: list[_Span] | None = None
        pieces: list[str] = []
        pos = 0
        # Searching a window sees the characters around it (lookbehinds look before its start),
        # and a window reaches further than any match, so this finds what a search of the whole
        # text would.
        windows = [(0, len(text))] if rule.anchor is None else _windows(text, rule.anchor)
        for window_start, window_end in windows:
            for m in rule.pattern.finditer(text, window_start, window_end):
                span = rule.accept(m)
                if span is None or span[0] < pos:
                    continue
                start, end = span
                if protected is None:
                    protected = _placeholder_spans(text)
                if protected and _overlaps(protected, start, end):
                    continue
                pieces.append(text[pos:start])
                pieces.append(self._placeholder(rule, text[start:end]))
                pos = end
        if not pieces:
            return None
        pieces.append(text[pos:])
        return "".join(pieces)

    def _placeholder(self, rule: _Rule, value: str) -> str:
        if self._hash_key is None:
            return f"[REDACTED:{rule.kind}]"
        digest = hmac.new(self._hash_key, rule.normalize(value).encode("utf-8"), hashlib.sha256)
        return f"[REDACTED:{rule.kind}:{digest.hexdigest()[:_DIGEST_HEX]}]"

    def _redact_long(self, text: str) -> str | None:
        """Redact only the head of a text far longer than the cap, or None if that is unsafe."""
        # Only the first max_bytes of the result are kept, so redacting megabytes to throw them
        # away is waste. The head ends at whitespace, so no token (a JWT, a key) is cut in two;
        # detected values with spaces in them are short, and a cut one lands in the redacted
        # head's last _PRECUT_SLACK bytes, which truncation drops.
        end = _PRECUT_FACTOR * self._max_bytes + _PRECUT_SLACK
        split = max(text.rfind(ws, end - _PRECUT_SLACK, end) for ws in " \n\t")
        if split < 0:
            return None  # one enormous token: redact it all
        head = self._redact_text(text[:split])
        if _byte_len(head) < self._max_bytes + _PRECUT_SLACK:
            return None  # redaction shrank the head so much that its end would be kept
        return self._truncate(head, dropped=_byte_len(text[split:]))

    def _truncate(self, text: str, *, dropped: int = 0) -> str:
        limit = self._max_bytes
        if not dropped and len(text) * 4 <= limit:  # no code point is longer than 4 bytes
            return text
        data = text.encode("utf-8")
        total = len(data) + dropped
        if total <= limit:
            return text
        cut = limit - _byte_len(_TRUNCATION_MARK.format(total))
        while True:
            prefix = data[:cut].decode("utf-8", "ignore")  # drops a split code point
            # Cutting can turn harmless text into something that looks secret (a 20-digit id
            # cut to 16 Luhn-valid digits), so the kept part is redacted again.
            kept = self._builtin(prefix)
            marker = _TRUNCATION_MARK.format(total - _byte_len(prefix))
            excess = _byte_len(kept) + _byte_len(marker) - limit
            if excess <= 0:
                return kept + marker
            cut = max(0, min(cut - 1, _byte_len(prefix) - excess))

    def _record_failure(self, exc: BaseException) -> None:
        try:
            with self._failure_lock:
                self.failures += 1
                first = not self._logged
                self._logged = True
            if first:
                # The type only: the message may quote the very content being redacted.
                _logger.warning(
                    "content redaction failed (%s); the content was dropped. Further failures "
                    "are counted, not logged",
                    type(exc).__qualname__,
                )
            if self._on_failure is not None:
                self._on_failure(exc)
        except Exception:  # a failing metric callback must not break the request
            return


def _valid_unicode(text: str) -> str:
    # Lone surrogates (from surrogateescape decoding or broken JSON) cannot be encoded as UTF-8,
    # and exporters reject them; replace each with U+FFFD.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def redact_value(value: object, redactor: Redactor) -> str | None:
    """Return ``value`` as redacted, truncated text for a span attribute, or ``None``.

    Strings are redacted as they are. Anything else (the OTel GenAI message lists such as
    ``[{"role": "user", "parts": [{"type": "text", "content": "..."}]}]``, retrieved documents,
    tool arguments) has each string inside redacted first and is then serialised as compact
    JSON; unknown objects become ``str(obj)`` and are redacted like text. Redacting the strings
    before serialising keeps JSON escapes such as ``\\n`` from hiding a value from the detectors
    and keeps the JSON valid (until truncation cuts it). ``None`` means nothing may be recorded:
    serialising or redacting failed, and the failure is counted on ``redactor``. Never raises.
    """
    try:
        if isinstance(value, str):
            return redactor(value)
        try:
            walked = _walk(value, redactor, 0)
            text = json.dumps(walked, ensure_ascii=False, separators=(",", ":"), default=str)
            return redactor._truncate(_valid_unicode(text))
        except Exception as exc:
            redactor._record_failure(exc)
            return None
    except Exception:  # not a Redactor at all: still never raise into the application
        return None


def _walk(value: object, redactor: Redactor, depth: int) -> object:
    if depth > _MAX_DEPTH:
        raise ValueError(f"content nested deeper than {_MAX_DEPTH} levels (or self-referencing)")
    if isinstance(value, str):
        return redactor._redact_text(_valid_unicode(value))
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        digits = str(value)
        if len(digits) < _MIN_INT_DIGITS:
            return value
        redacted = redactor._redact_text(digits)
        return value if redacted == digits else redacted
    if isinstance(value, dict):
        return {_walk_key(k, redactor): _walk(v, redactor, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, redactor, depth + 1) for v in value]
    return redactor._redact_text(_valid_unicode(str(value)))


def _walk_key(key: object, redactor: Redactor) -> object:
    if key is None or isinstance(key, (str, int, float)):  # bool is an int
        return _walk(key, redactor, 0)
    return redactor._redact_text(_valid_unicode(str(key)))
