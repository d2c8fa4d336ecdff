"""Which of the responses recorded in one stage belong to one model call.

A stage may make several model calls (a tool loop: the model asks for a tool, the app runs it,
the model answers) and record each response; their usage adds up. A *streamed* call is recorded
chunk by chunk (or event by event), and its chunks carry cumulative usage: the chunks of one
stream must not add up, the last reading replaces the earlier ones. The rule that tells the two
apart, in order:

1. **Same id, same call.** An item carrying the id of the call in progress (OpenAI chunks and
   completions, Responses API events, Anthropic ``message_start`` and messages, Gemini
   ``response_id``, Cohere responses) belongs to it. So a stream's final message recorded after
   its chunks (``stream.get_final_message()``), or one response recorded twice, is not counted
   twice.
2. **Another id, another call.**
3. Without an id to compare: a **complete response** (a ``ChatCompletion``, a Responses API
   ``Response``, an Anthropic ``Message``, a Bedrock Converse response, embeddings, a Cohere
   response) and the **first event of a stream** (Anthropic ``message_start``, Responses
   ``response.created``, Cohere ``message-start``, Bedrock ``messageStart``) start a new call;
   any other chunk or event belongs to the stream in progress.
4. Gemini streams are made of complete-looking responses: without ids, a Gemini response
   belongs to the Gemini call in progress until that call has a finish reason.

Each finished call is handed back once, to be priced and counted on its own; the stage's usage
is the sum of its calls. Nothing here raises.
"""

from __future__ import annotations

from typing import Final

from chainsight.stages.response_info import _get, _is_list, _label, _sdk
from chainsight.stages.response_providers import _gemini_usage
from chainsight.stages.responses import StreamAccumulator

__all__ = ["ResponseCalls"]

# What an item is, for the boundary rule.
_PART: Final = 0  # a chunk or event inside a stream
_START: Final = 1  # the first event of a stream
_WHOLE: Final = 2  # a complete response
_GEMINI: Final = 3  # a Gemini response: a whole one, or one chunk of a stream

_BEDROCK_EVENTS: Final = frozenset(
    {"messageStart", "contentBlockStart", "contentBlockDelta", "contentBlockStop"}
    | {"messageStop", "metadata"}
)
_STARTS: Final = frozenset({"message_start", "response.created", "message-start"})


class ResponseCalls:
    """The model calls of one stage: the one in progress, and the boundary rule above.

    :meth:`add` takes each recorded item and returns the reading of the call it ended, if it
    started a new one; :meth:`close` returns the call in progress when the stage ends.
    """

    __slots__ = ("_acc", "_capture_text", "_id", "_kind")

    def __init__(self, *, capture_text: bool = False) -> None:
        self._capture_text = capture_text
        self._acc: StreamAccumulator | None = None
        self._id: str | None = None
        self._kind = _PART

    def add(self, item: object) -> StreamAccumulator | None:
        """Take one recorded response, chunk or event; return the call it ended, if any."""
        try:
            kind, rid = _mark(item)
        except Exception:  # an unreadable item: the accumulator decides what it is worth
            kind, rid = _PART, None
        ended: StreamAccumulator | None = None
        acc = self._acc
        if acc is None or self._starts_call(kind, rid, acc):
            ended = acc
            acc = self._acc = StreamAccumulator(capture_text=self._capture_text)
            self._id = rid
            self._kind = kind
        elif self._id is None and rid is not None:
            self._id = rid  # e.g. a Bedrock stream has none, a later snapshot may
        acc.add(item)
        return ended

    def close(self) -> StreamAccumulator | None:
        """The call in progress, handed over once (when the stage ends)."""
        acc, self._acc = self._acc, None
        return acc

    def _starts_call(self, kind: int, rid: str | None, acc: StreamAccumulator) -> bool:
        if rid is not None and self._id is not None:
            return rid != self._id
        if kind in (_START, _WHOLE):
            return True
        if kind == _GEMINI:
            return self._kind != _GEMINI or acc.has_finish_reason()
        # A chunk without an id joins a stream in progress, never a complete response.
        return self._kind == _WHOLE


def _mark(item: object) -> tuple[int, str | None]:
    """What ``item`` is for the boundary rule, and the id of its call if it carries one."""
    if item is None or isinstance(item, (str, bytes, int, float)):
        return _PART, None
    if type(item) is dict:
        sdk = ""
        if len(item) == 1 and next(iter(item)) in _BEDROCK_EVENTS:
            return (_START if "messageStart" in item else _PART), None
    else:
        sdk = _sdk(item)
        if sdk == "google":
            return _GEMINI, _gemini_id(item)
    obj = None if sdk in ("anthropic", "cohere") else _get(item, "object")
    if type(obj) is str:
        kind = _PART if obj == "chat.completion.chunk" else _WHOLE
        return kind, _label(_get(item, "id"))
    typ = _get(item, "type")
    if type(typ) is str:
        return _typed(typ, item)
    if _gemini_usage(item)[0] is not None or _is_list(_get(item, "candidates")):
        return _GEMINI, _gemini_id(item)
    if _is_list(_get(item, "choices")):
        # An OpenAI-compatible chunk without "object" (some proxies drop it).
        return _PART, _label(_get(item, "id"))
    rid = _label(_get(item, "id"))
    if rid is None:
        rid = _label(_get(item, "generation_id"))  # Cohere chat v1
    if rid is None:
        # boto3 responses carry the request id of the call.
        rid = _label(_get(_get(item, "ResponseMetadata"), "RequestId"))
    return _WHOLE, rid


def _typed(typ: str, item: object) -> tuple[int, str | None]:
    """Items with a ``type``: Anthropic messages and events, Responses and Cohere events."""
    if typ == "message":
        return _WHOLE, _label(_get(item, "id"))
    if typ in ("message_start", "message_stop"):
        # message_stop carries the accumulated message when the SDK's stream helper made it.
        return (_START if typ == "message_start" else _PART), _label(
            _get(_get(item, "message"), "id")
        )
    if typ.startswith("response."):
        response = _get(item, "response")
        rid = _label(_get(response, "id")) if response is not None else None
        return (_START if typ in _STARTS else _PART), rid
    if typ == "message-start":
        return _START, _label(_get(item, "id"))
    return _PART, None


def _gemini_id(item: object) -> str | None:
    rid = _label(_get(item, "response_id"))
    return rid if rid is not None else _label(_get(item, "responseId"))
