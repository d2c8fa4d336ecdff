"""The attack corpus and channels shared by the hostile-input tests.

``SECRETS`` are planted values of every kind the redactor hunts, each in the formats people
actually paste. ``CHANNELS`` are every way a string from the application can reach something
chainsight exports: span attributes, span and event names, events, metric labels and log lines.
``fragments`` and ``leaks`` say what counts as a leak: any 8 characters in a row of a secret.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import chainsight

# --- the planted secrets -------------------------------------------------------------------------

_rng = random.Random(20261205)  # fixed: a failure names a value that can be found again


def _luhn_complete(body: str) -> str:
    """``body`` plus the check digit that makes it Luhn-valid."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def _digits(n: int) -> str:
    return "".join(_rng.choice("0123456789") for _ in range(n))


def _alnum(
    n: int, alphabet: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def _grouped(number: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, pos = [], 0
    for size in sizes:
        parts.append(number[pos : pos + size])
        pos += size
    return sep.join(parts)


_CARD_SEPARATORS = ("", " ", "-", ".", "\t", "\n")


def _cards() -> list[tuple[str, str]]:
    out = []
    for sep in _CARD_SEPARATORS:
        visa = _luhn_complete("4" + _digits(14))
        master = _luhn_complete("5" + str(_rng.randint(1, 5)) + _digits(13))
        amex = _luhn_complete("3" + _rng.choice("47") + _digits(12))
        out.append(("card", _grouped(visa, (4, 4, 4, 4), sep)))
        out.append(("card", _grouped(master, (4, 4, 4, 4), sep)))
        out.append(("card", _grouped(amex, (4, 6, 5), sep)))
    return out


def _jwt() -> str:
    header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    payload = "eyJzdWIiOiI" + _alnum(40) + "In0"
    return f"{header}.{payload}.{_alnum(43, 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789_-')}"


SECRETS: list[tuple[str, str]] = [
    ("email", "dana.kim@example.com"),
    ("email", "r.okafor+billing@mail.example.org"),
    ("email", "Support.Team_7@sub.example.co.uk"),
    *_cards(),
    ("api_key", "sk-proj-" + _alnum(48)),
    ("api_key", "sk-ant-api03-" + _alnum(64)),
    ("api_key", "sk_live_" + _alnum(24)),
    ("api_key", "AKIA" + _alnum(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
    ("api_key", "ghp_" + _alnum(36)),
    ("api_key", "xoxb-" + _digits(12) + "-" + _alnum(24)),
    ("api_key", "AIza" + _alnum(35)),
    ("jwt", _jwt()),
    ("phone", "+44 20 7946 0958"),
    ("phone", "(415) 555-0132"),
    ("phone", "415-555-0199"),
    ("phone", "+1 650 253 0000"),
    ("iban", "DE89 3704 0044 0532 0130 00"),
    ("iban", "GB82WEST12345698765432"),
    ("iban", "FR1420041010050500013M02606"),
]

#: Text that looks a little like a secret and must be exported as it is when content is captured.
LOOK_ALIKES: list[str] = [
    "order 12345678 shipped on 2024-11-05",
    "release v1.2.3 (build 20241105.4)",
    "request id 123e4567-e89b-12d3-a456-426614174000",
    "ISBN 978-3-16-148410-0",
    "call me at extension 4412",
    "the total is $1,249.99",
    "bearer tokens expire after an hour",
    "see section 4.1.2 of the manual, page 12",
]

# Characters of a secret that, joined, can also be innocent text on their own (a run of digits
# in a number chainsight prints, placeholder text): a fragment made only of these is skipped.
_SEPARATORS = set(" -.\t\n()+")


def fragments(secret: str, size: int = 8) -> list[str]:
    """Every ``size`` characters in a row of ``secret`` (the whole secret if shorter)."""
    if len(secret) <= size:
        return [secret]
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def leaks(exported: str, secrets: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str, str]]:
    """``(kind, secret, fragment)`` for each planted secret a fragment of which was exported."""
    found = []
    for kind, secret in secrets or SECRETS:
        for fragment in fragments(secret):
            if fragment in exported:
                found.append((kind, secret, fragment))
                break
    return found


# --- padding that puts a secret across a cut -----------------------------------------------------

#: The byte limits where chainsight cuts text: label values, names, exception messages, content.
BOUNDARIES: tuple[int, ...] = (128, 256, 1024, 4096)


def straddling(secret: str, boundary: int) -> Iterator[str]:
    """Texts with ``secret`` placed across ``boundary``: starting just before, in the middle,
    ending just after. The padding is words, so the secret stays a separate token."""
    for before in (1, len(secret) // 2, len(secret) - 1):
        start = max(0, boundary - before)
        pad = ("w " * (start // 2 + 1))[:start]
        if pad and not pad.endswith(" "):
            pad = pad[:-1] + " "
        yield pad + secret + " tail"


# --- the channels ----------------------------------------------------------------------------


def _content(text: str) -> None:
    with chainsight.stage("model", name="content", provider="openai", model="gpt-4o") as s:
        s.record_content(
            input_messages=[{"role": "user", "parts": [{"type": "text", "content": text}]}],
            output_messages=[{"role": "assistant", "content": text}],
            system_instructions=text,
        )
    with chainsight.stage("retrieval", name="docs", system="qdrant") as r:
        r.record_content(query=text, documents=[{"id": "d1", "text": text}, text])


def _set(text: str) -> None:
    with chainsight.stage("tool", name="set") as s:
        s.set(note=text, notes=[text, "x"])


def _validation(text: str) -> None:
    with chainsight.stage("validation", name="check", validator="schema") as s:
        s.record_validation(passed=False, reason=text)


def _fallback(text: str) -> None:
    with chainsight.request("fallback-request"), chainsight.stage("model", name="fb") as s:
        s.fallback(to=text, reason=text)


def _exception(text: str) -> None:
    try:
        with chainsight.request("exc-request"), chainsight.stage("tool", name="raises"):
            raise ValueError(text)
    except ValueError:
        pass


def _request_labels(text: str) -> None:
    with chainsight.request("labels", tenant=text, feature=text, team=text) as req:
        with chainsight.stage("model", name="priced", provider="openai", model="gpt-4o") as s:
            s.record_usage(input_tokens=3, output_tokens=2)
        req.set(done=True)


def _names(text: str) -> None:
    with chainsight.request(text):
        with chainsight.stage("tool", name=text):
            pass
        with chainsight.stage("prompt", name="p", prompt_name=text, prompt_version=text):
            pass


def _stage_keywords(text: str) -> None:
    with chainsight.stage(
        "model", name="kw", provider=text, model=text, operation=text, note=text
    ) as s:
        s.record_usage(input_tokens=1, output_tokens=1)
    with chainsight.stage("retrieval", name="kw-r", system=text, collection=text):
        pass
    with chainsight.stage("validation", name="kw-v", validator=text) as v:
        v.record_validation(passed=True)


def _usage_model(text: str) -> None:
    with chainsight.stage("model", name="usage", provider="openai") as s:
        s.record_usage(input_tokens=5, output_tokens=1, model=text)


def _response(text: str) -> None:
    with chainsight.stage("model", name="response", provider="openai") as s:
        s.record_response(
            {
                "id": text,
                "object": "chat.completion",
                "model": text,
                "choices": [
                    {"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}
                ],
                "usage": {"prompt_tokens": 4, "completion_tokens": 2},
            }
        )  # fmt: skip


CHANNELS: dict[str, Callable[[str], None]] = {
    "content": _content,
    "set": _set,
    "validation_reason": _validation,
    "fallback": _fallback,
    "exception_message": _exception,
    "request_labels": _request_labels,
    "names": _names,
    "stage_keywords": _stage_keywords,
    "usage_model": _usage_model,
    "response": _response,
}


# --- what was exported, as text ------------------------------------------------------------------

_IDS = re.compile(r"\b(?:trace_id|span_id|parent_id)=[0-9a-f]+")
_ID_KEYS = frozenset({"trace_id", "span_id", "parent_id", "parent_span_id", "traceId", "spanId",
                      "parentSpanId"})  # fmt: skip


def strings_of(value: Any) -> Iterator[str]:
    """Every string (and number, as text) in a decoded span, ids left out: random hex ids
    would match a digit fragment of a card number by chance."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, (int, float)):
        yield repr(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            if key not in _ID_KEYS and not str(key).endswith(("time_unix_nano", "TimeUnixNano")):
                yield from strings_of(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_of(item)


def jsonl_text(path: str) -> str:
    """The strings of every span in a JSONL span file, one per line."""
    out: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.extend(strings_of(json.loads(line)))
    return "\n".join(out)


def log_text(records: Iterable[Any]) -> str:
    """Log messages and their structured fields, trace and span ids left out."""
    out = []
    for record in records:
        out.append(_IDS.sub("", record.getMessage()))
        for key, value in vars(record).items():
            if key in ("msg", "args", "message", "trace_id", "span_id"):
                continue
            if isinstance(value, str):
                out.append(value)
    return "\n".join(out)
