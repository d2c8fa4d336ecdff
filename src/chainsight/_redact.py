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

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chainsight._errors import ConfigurationError

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
# Integers shorter than this cannot be any detected value (the shortest, a card, has 13 digits).
_MIN_INT_DIGITS = 13

_ANY_DIGIT = re.compile(r"[0-9]")
_SURROGATE = re.compile("[\ud800-\udfff]")

Span = tuple[int, int]


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    # Cheap test on a whole segment; a rule whose gate fails skips its regex entirely.
    gate: Callable[[str], bool]
    # Validates a regex match; returns the span to replace, or None to keep the text.
    accept: Callable[[re.Match[str]], Span | None]
    # The form that is hashed, so that "Alice@Example.com" and "alice@example.com" join.
    normalize: Callable[[str], str]


def _whole(m: re.Match[str]) -> Span | None:
    return m.span()


def _value_group(m: re.Match[str]) -> Span | None:
    return m.span("v")


def _same(value: str) -> str:
    return value


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _has_digit(text: str) -> bool:
    return _ANY_DIGIT.search(text) is not None


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

_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")

# The token, not the word "Bearer", is replaced. Prose such as "bearer tokens expire" must survive,
# so a token needs a digit and 12+ characters, or 20+ characters.
_BEARER = re.compile(
    r"(?<![A-Za-z0-9])[Bb](?i:earer)[ \t]+"
    r"(?P<v>(?=[A-Za-z0-9._~+/-]*[0-9])[A-Za-z0-9._~+/-]{12,}=*|[A-Za-z0-9._~+/-]{20,}=*)"
)

_API_KEY = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-[A-Za-z0-9_-]{20,}"  # OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-)
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe secret and restricted keys
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"  # AWS access key ids (long-lived, temporary)
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{22,}"  # GitHub fine-grained tokens
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])"  # Google API keys
    r")"
)
_API_KEY_HINTS = ("sk-", "k_live_", "k_test_", "AKIA", "ASIA", "gh", "xox", "AIza")

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}"
    r"(?![A-Za-z0-9-])"
)

# Groups of 4 then 4-6 then 3-5 digits with one consistent separator covers 4-4-4-4(-3),
# 4-6-5 (Amex) and 4-6-4 (Diners). Only issuer digits 2-6 (the card networks) count: this keeps
# millisecond timestamps (1…), ISBNs (978…) and most ids out. A Luhn check follows.
_CARD = re.compile(
    r"(?<![A-Za-z0-9_.,/+-])(?<![0-9][ -])"
    r"(?P<v>[2-6][0-9]{12,18}|[2-6][0-9]{3}(?P<sep>[ -])[0-9]{4,6}(?:(?P=sep)[0-9]{3,5}){1,3})"
    r"(?![0-9]|[.,-][0-9])"
)


def _accept_card(m: re.Match[str]) -> Span | None:
    digits = _digits(m.group("v"))
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return m.span("v")
    return None


_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}"
    r"(?:[A-Za-z0-9]{11,30}|(?: [A-Za-z0-9]{4}){2,7}(?: [A-Za-z0-9]{1,4})?)"
    r"(?![A-Za-z0-9])"
)


def _accept_iban(m: re.Match[str]) -> Span | None:
    text = m.group()
    start = m.start()
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
# ("(415) 555-0132", "(415) 555 0132", "415-555-0132", "415.555.0132"), and national numbers with a leading 0
# grouped by spaces or dashes ("020 7946 0958", "06 12 34 56 78"). Bare digit runs are ids, not
# phone numbers, as far as we can tell.
_PHONE = re.compile(
    r"(?<![A-Za-z0-9_+.\-/])(?:"
    r"(?P<intl>\+[0-9](?:[ .\-()]{0,2}[0-9]){7,14})"
    r"|(?P<nanp>\([2-9][0-9]{2}\) ?[2-9][0-9]{2}[-. ][0-9]{4}"
    r"|[2-9][0-9]{2}(?P<nsep>[-.])[2-9][0-9]{2}(?P=nsep)[0-9]{4})"
    r"|(?P<nat>0[0-9]{1,4}(?P<sep>[ -])[0-9]{2,8}(?:(?P=sep)[0-9]{2,8}){0,3})"
    r")(?![A-Za-z0-9_+]|[-./][0-9])"
)
_DATE_LIKE = re.compile(r"0[1-9][ -](?:0[1-9]|1[0-2])[ -](?:19|20)[0-9]{2}")


def _accept_phone(m: re.Match[str]) -> Span | None:
    value = m.group()
    count = sum(ch.isdigit() for ch in value)
    if m.group("intl") is not None:
        return m.span() if 8 <= count <= 15 else None
    if m.group("nat") is not None and (not 10 <= count <= 12 or _DATE_LIKE.match(value)):
        return None
    return m.span()


def _normalize_phone(value: str) -> str:
    digits = _digits(value)
    return "+" + digits if value.startswith("+") else digits


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?<![A-Za-z0-9_.])(?:{_OCTET}\.){{3}}{_OCTET}(?![A-Za-z0-9_]|\.[0-9])")

# A loose candidate, checked by the ipaddress module. Python slices ("a[1::2]") and C++ scopes are
# valid or nearly valid IPv6, so an address needs a digit and at least three groups; "::1" and
# "fe80::1" are kept, which costs nothing since they identify no one.
_IPV6 = re.compile(r"(?<![A-Za-z0-9:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![A-Za-z0-9])")


def _accept_ipv6(m: re.Match[str]) -> Span | None:
    value = m.group()
    if value.endswith(":") and not value.endswith("::"):
        value = value[:-1]  # "fe80::1:2:3: is down" ends a sentence with a colon
    groups = [g for g in value.split(":") if g]
    if len(groups) < 3 or not _has_digit(value):
        return None
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return None
    return m.start(), m.start() + len(value)


def _normalize_ipv6(value: str) -> str:
    return ipaddress.IPv6Address(value).compressed


def _contains(*needles: str) -> Callable[[str], bool]:
    def gate(text: str) -> bool:
        return any(n in text for n in needles)

    return gate


_RULES: tuple[_Rule, ...] = (
    _Rule("jwt", _JWT, _contains("eyJ"), _whole, _same),
    _Rule("bearer_token", _BEARER, _contains("earer", "EARER"), _value_group, _same),
    _Rule("api_key", _API_KEY, _contains(*_API_KEY_HINTS), _whole, _same),
    _Rule("email", _EMAIL, _contains("@"), _whole, str.lower),
    _Rule("card", _CARD, _has_digit, _accept_card, _digits),
    _Rule("iban", _IBAN, _has_digit, _accept_iban, _normalize_iban),
    _Rule("phone", _PHONE, _has_digit, _accept_phone, _normalize_phone),
    _Rule("ipv4", _IPV4, _has_digit, _whole, _same),
    _Rule("ipv6", _IPV6, _contains(":"), _accept_ipv6, _normalize_ipv6),
)

#: The placeholder kinds the built-in detectors produce, in the order they run.
KINDS: tuple[str, ...] = tuple(rule.kind for rule in _RULES)

# A segment is a piece of text and whether it is a placeholder (never scanned again).
_Segment = tuple[str, bool]


def _split_placeholders(text: str) -> list[_Segment]:
    if _PLACEHOLDER_OPEN not in text:
        return [(text, False)]
    segments: list[_Segment] = []
    pos = 0
    for m in _PLACEHOLDER_RE.finditer(text):
        if m.start() > pos:
            segments.append((text[pos : m.start()], False))
        segments.append((m.group(), True))
        pos = m.end()
    if pos < len(text):
        segments.append((text[pos:], False))
    return segments


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
            return self._truncate(self._redact_text(_valid_unicode(text)))
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
        segments = _split_placeholders(text)
        # A replacement changes what sits next to the remaining text, which can let an earlier
        # detector match there now. Repeat until nothing changes, so that redacting twice gives
        # the same result as once. Clean text takes one pass; each repeat shrinks the unscanned
        # text, so this ends.
        changed = True
        while changed:
            changed = False
            for rule in _RULES:
                out: list[_Segment] = []
                for seg in segments:
                    if seg[1] or not rule.gate(seg[0]):
                        out.append(seg)
                    elif self._apply(rule, seg[0], out):
                        changed = True
                segments = out
        return "".join(seg[0] for seg in segments)

    def _apply(self, rule: _Rule, text: str, out: list[_Segment]) -> bool:
        pos = 0
        for m in rule.pattern.finditer(text):
            span = rule.accept(m)
            if span is None:
                continue
            start, end = span
            if start > pos:
                out.append((text[pos:start], False))
            out.append((self._placeholder(rule, text[start:end]), True))
            pos = end
        if pos == 0:
            out.append((text, False))
            return False
        if pos < len(text):
            out.append((text[pos:], False))
        return True

    def _placeholder(self, rule: _Rule, value: str) -> str:
        if self._hash_key is None:
            return f"[REDACTED:{rule.kind}]"
        digest = hmac.new(self._hash_key, rule.normalize(value).encode("utf-8"), hashlib.sha256)
        return f"[REDACTED:{rule.kind}:{digest.hexdigest()[:_DIGEST_HEX]}]"

    def _truncate(self, text: str) -> str:
        limit = self._max_bytes
        if len(text) * 4 <= limit:  # no code point is longer than 4 bytes
            return text
        data = text.encode("utf-8")
        total = len(data)
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
