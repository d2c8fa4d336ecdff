"""Redaction and truncation of opt-in captured content (prompts, completions, documents).

Content capture is off by default. When it is on, every captured string goes through a
:class:`Redactor` before it becomes a span attribute: built-in detectors replace secrets and
personal data with typed placeholders, user redactors run next, and the result is cut to a byte
budget. Anything unexpected fails closed: the caller gets ``None`` and records nothing.

The detectors, and why they lean towards keeping ordinary text, are in
:mod:`chainsight.stages.redact_patterns`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
from collections.abc import Callable, Sequence

from chainsight._text import valid_text
from chainsight.errors import ConfigurationError
from chainsight.stages.redact_patterns import (
    _RULES,
    _overlaps,
    _placeholder_spans,
    _Rule,
    _Span,
    _windows,
)

__all__ = ["Redactor", "redact_structure", "redact_value"]

_logger = logging.getLogger("chainsight")

_DIGEST_HEX = 10
_MIN_KEY_BYTES = 16
_MIN_MAX_BYTES = 64
_TRUNCATION_MARK = "…[truncated {} bytes]"
# When a value's walk stops early, the size of what was left is not measured (that would cost
# the very work the early stop saves).
_TRUNCATION_MARK_UNKNOWN = "…[truncated]"
# Texts up to this many characters are redacted through the cache (names, reasons, labels).
_CACHED_CHARS = 256
_CACHE_ENTRIES = 2048
_MAX_DEPTH = 64
# Texts longer than _PRECUT_FACTOR * max_bytes + _PRECUT_SLACK characters have only their head
# redacted (see Redactor._redact_head).
_PRECUT_FACTOR = 4
_PRECUT_SLACK = 4096
# Integers shorter than this cannot be any detected value (the shortest, a card, has 13 digits).
_LONG_NUMBER = 10 ** (13 - 1)  # the shortest detected value, a card, has 13 digits


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
        "_cache",
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
        self._cache: dict[str, str] = {}
        #: How many calls failed closed (returned ``None``) since this redactor was made.
        self.failures: int = 0

    def after_fork_in_child(self) -> None:
        """A lock held by another thread at ``fork()`` would stay held forever in the child."""
        self._failure_lock = threading.Lock()

    @property
    def max_bytes(self) -> int:
        """The largest result, in UTF-8 bytes, this redactor returns."""
        return self._max_bytes

    def __call__(self, text: str, max_bytes: int | None = None) -> str | None:
        """Return ``text`` redacted and truncated, or ``None`` if redaction failed.

        ``max_bytes`` cuts tighter than the redactor's own limit (an exception message, a
        metric label); it never loosens it. The text is always redacted before it is cut.
        """
        try:
            if not isinstance(text, str):
                raise TypeError(f"Redactor expects str, got {type(text).__name__}")
            limit = self._max_bytes if max_bytes is None else min(max_bytes, self._max_bytes)
            if len(text) <= _CACHED_CHARS:
                return self._truncate(self._redact_short(text), limit=limit)
            text = valid_text(text)
            head, dropped = self._redact_head(text, limit)
            return self._truncate(head, dropped=dropped, limit=limit)
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

    def _redact_short(self, text: str) -> str:
        """Redact a short text (a name, a reason, a label value), remembering the answer.

        The same few values (tenants, models, stage names) come back on every request; a dict
        lookup replaces ~8 µs of regex gates. The cache is bounded and cleared when full, so
        hostile distinct values cost one redaction each, never memory.
        """
        found = self._cache.get(text)
        if found is None:
            found = self._redact_text(valid_text(text))
            cache = self._cache
            if len(cache) >= _CACHE_ENTRIES:
                cache.clear()
            cache[text] = found
        return found

    def _redact_head(self, text: str, limit: int) -> tuple[str, int]:
        """``(redacted text, bytes dropped)``: only as much of ``text`` as can be kept.

        Only the first ``limit`` bytes of the result are kept, so redacting megabytes to throw
        them away is waste: a head of ``4 * limit`` characters is redacted instead. The head
        ends at whitespace where it can. Any value the cut splits in two (a detected value is
        shorter than ``_PRECUT_SLACK`` bytes) lies in the redacted head's last
        ``_PRECUT_SLACK`` bytes, which truncation drops; if redaction shrank the head so much
        that its end would be kept, a head four times longer is tried, until the whole text.
        """
        size = _PRECUT_FACTOR * limit + _PRECUT_SLACK
        while size < len(text):
            window = max(text.rfind(ws, size - _PRECUT_SLACK, size) for ws in " \n\t")
            split = window if window > 0 else size
            head = self._redact_text(text[:split])
            if _byte_len(head) >= limit + _PRECUT_SLACK:
                return head, _byte_len(text[split:])
            size *= _PRECUT_FACTOR
        return self._redact_text(text), 0

    def _truncate(self, text: str, *, dropped: int | None = 0, limit: int | None = None) -> str:
        """``text`` cut to ``limit`` bytes, marker included; ``dropped`` bytes were cut before
        (``None``: an unknown amount, when a value's walk stopped early)."""
        if limit is None:
            limit = self._max_bytes
        if dropped == 0 and len(text) * 4 <= limit:  # no code point is longer than 4 bytes
            return text
        data = text.encode("utf-8")
        total = None if dropped is None else len(data) + dropped
        if total is not None and total <= limit:
            return text
        cut = limit - _byte_len(_marker(total))
        while cut > 0:
            prefix = data[:cut].decode("utf-8", "ignore")  # drops a split code point
            # Cutting can turn harmless text into something that looks secret (a 20-digit id
            # cut to 16 Luhn-valid digits), so the kept part is redacted again, user redactors
            # included: theirs may match on a shape the cut has just made.
            kept = self._redact_text(prefix)
            marker = _marker(None if total is None else total - _byte_len(prefix))
            excess = _byte_len(kept) + _byte_len(marker) - limit
            if excess <= 0:
                return kept + marker
            cut = min(cut - 1, _byte_len(prefix) - excess)
        return _marker(total)[:limit]  # a user redactor that only ever grows the text

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


def _marker(total: int | None) -> str:
    return _TRUNCATION_MARK_UNKNOWN if total is None else _TRUNCATION_MARK.format(total)


def number_text(value: int | float) -> str | None:
    """A number long enough to be a detected value, as the text the detectors read; else None.

    A card or phone number can arrive as a number, an int or even a float
    (``4111111111111111.0``): any with 13 digits or more before the point is looked at as its
    digits. Shorter numbers, infinities and NaN cannot be one.
    """
    if not abs(value) >= _LONG_NUMBER or math.isinf(value):  # NaN is not >=
        return None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def redact_value(value: object, redactor: Redactor) -> str | None:
    """Return ``value`` as redacted, truncated text for a span attribute, or ``None``.

    Strings are redacted as they are. Anything else (the OTel GenAI message lists such as
    ``[{"role": "user", "parts": [{"type": "text", "content": "..."}]}]``, retrieved documents,
    tool arguments) has each string inside redacted first and is then serialised as compact
    JSON; unknown objects become ``str(obj)`` and are redacted like text. Redacting the strings
    before serialising keeps JSON escapes such as ``\\n`` from hiding a value from the detectors
    and keeps the JSON valid (until truncation cuts it). The walk stops once it has gathered
    more than the redactor keeps, so ten thousand documents cost what the first few do; the
    marker then reads ``…[truncated]``. ``None`` means nothing may be recorded: serialising or
    redacting failed, and the failure is counted on ``redactor``. Never raises.
    """
    try:
        if isinstance(value, str):
            return redactor(value)
        try:
            walk = _Walk(redactor)
            walked = walk.value(value, 0)
            text = json.dumps(walked, ensure_ascii=False, separators=(",", ":"), default=str)
            return redactor._truncate(valid_text(text), dropped=None if walk.cut else 0)
        except Exception as exc:
            redactor._record_failure(exc)
            return None
    except Exception:  # not a Redactor at all: still never raise into the application
        return None


def redact_structure(value: object, redactor: Redactor) -> tuple[object, bool]:
    """``value`` (lists, dicts, text, numbers) with every string redacted, and whether the walk
    stopped early because it had gathered more than the redactor keeps (the rest was left out).

    The structure is new (the caller may change it); it is not serialised and not cut: that is
    for the caller, which can keep it valid JSON (``content_json``). Raises on content nested
    deeper than 64 levels or self-referencing, and whatever a redactor raises; the caller counts
    the failure (``Redactor._record_failure``) and records nothing.
    """
    walk = _Walk(redactor, cut_heads=True)
    walked = walk.value(value, 0)
    return walked, walk.cut


class _Walk:
    """One walk over a captured value: every string redacted, stopping past the byte budget.

    ``left`` counts down the characters the result may still need. Once it is spent, later
    items are dropped unseen and ``cut`` is set; a string longer than what is left has only its
    head redacted (:meth:`Redactor._redact_head`). What is gathered stays longer than the cap
    plus its slack, so whatever the early stop cuts is beyond what truncation keeps.
    """

    __slots__ = ("cut", "cut_heads", "left", "redactor")

    def __init__(self, redactor: Redactor, *, cut_heads: bool = False) -> None:
        self.redactor = redactor
        self.left = redactor.max_bytes + 2 * _PRECUT_SLACK
        self.cut = False
        # A redacted head is safe only up to ``left`` bytes (a value the head's end split lies
        # beyond). redact_value cuts the whole JSON within that; a caller that cuts text by
        # text (content_json) needs each head cut here, to what is safe, with the marker.
        self.cut_heads = cut_heads

    def value(self, value: object, depth: int) -> object:
        if depth > _MAX_DEPTH:
            raise ValueError(
                f"content nested deeper than {_MAX_DEPTH} levels (or self-referencing)"
            )
        if isinstance(value, str):
            return self.text(value)
        self.left -= 8  # a number, a bracket, a separator: enough to end any walk
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return self.number(value)
        if isinstance(value, dict):
            out: dict[object, object] = {}
            for k, v in value.items():
                if self.left <= 0:
                    self.cut = True
                    break
                out[self.key(k)] = self.value(v, depth + 1)
            return out
        if isinstance(value, (list, tuple)):
            items: list[object] = []
            for v in value:
                if self.left <= 0:
                    self.cut = True
                    break
                items.append(self.value(v, depth + 1))
            return items
        return self.text(str(value))

    def text(self, text: str) -> str:
        redactor = self.redactor
        if len(text) <= _CACHED_CHARS:
            out = redactor._redact_short(text)
        else:
            left = max(self.left, 0)
            out, dropped = redactor._redact_head(valid_text(text), left)
            if dropped:
                self.cut = True
                if self.cut_heads:
                    out = redactor._truncate(out, dropped=dropped, limit=max(left, _MIN_MAX_BYTES))
        self.left -= len(out)
        return out

    def number(self, value: float) -> object:
        digits = number_text(value)
        if digits is None:
            return value
        redacted = self.redactor._redact_short(digits)
        return value if redacted == digits else redacted

    def key(self, key: object) -> object:
        if key is None or isinstance(key, (bool, int, float, str)):
            return self.value(key, 0)
        return self.text(str(key))
