"""A tool loop in one model stage: two responses add up, a stream counts once.

Run it with ``.venv/bin/python examples/tool_loop.py``. It calls no provider: the responses are
the JSON the Anthropic Messages API sends (with the ``anthropic`` SDK installed, pass the
``Message`` and stream events it returns instead; chainsight reads both the same way). The
first call writes the prompt to the one-hour cache, which Anthropic bills at 2x the input price.
"""

from __future__ import annotations

from typing import Any

import chainsight
from chainsight.testing import capture

MODEL = "claude-sonnet-4-5-20250929"


def usage(**fields: int) -> dict[str, Any]:
    """Anthropic usage: input_tokens excludes the cache reads and writes reported beside it."""
    write_5m, write_1h = fields.pop("write_5m", 0), fields.pop("write_1h", 0)
    return {
        "input_tokens": fields.pop("uncached", 0),
        "cache_read_input_tokens": fields.pop("read", 0),
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_creation": {
            "ephemeral_5m_input_tokens": write_5m,
            "ephemeral_1h_input_tokens": write_1h,
        },
        **fields,
    }


# Call 1: the model asks for a tool; the long system prompt is written to the one-hour cache.
ASK_TOOL = {
    "id": "msg_01",
    "type": "message",
    "model": MODEL,
    "stop_reason": "tool_use",
    "content": [{"type": "tool_use", "id": "toolu_1", "name": "policy", "input": {}}],
    "usage": usage(uncached=500, write_1h=2000, output_tokens=40),
}

# Call 2, streamed: it reads the cache; usage comes in message_start and message_delta.
STREAM = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_02",
            "type": "message",
            "model": MODEL,
            "content": [],
            "usage": usage(uncached=600, read=2000, output_tokens=1),
        },
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Refunds take 14 days."},
    },
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 260, "output_tokens_details": {"thinking_tokens": 200}},
    },
    {"type": "message_stop"},
]


def main() -> None:
    """Record a two-call tool loop and print what the stage span says."""
    cap = capture(service="tool-loop-example")
    with chainsight.stage("model", name="agent", provider="anthropic", model=MODEL) as stage:
        stage.record_response(ASK_TOOL)  # call 1
        for event in STREAM:  # call 2: its chunks are one call
            stage.record_response(event)
    attrs = cap.stage(name="agent").attributes
    for key in (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "chainsight.usage.cache_creation_1h.input_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.response.id",
    ):
        print(f"{key} = {attrs[key]}")
    # Published prices per million: $3 input, $6 one-hour write, $0.30 cache hit, $15 output.
    print(f"chainsight.cost.usd = {float(attrs['chainsight.cost.usd']):.5f}")
    chainsight.reset()


if __name__ == "__main__":
    main()
