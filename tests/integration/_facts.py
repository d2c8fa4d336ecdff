"""What an integration's stage must share with a hand-written one: the facts, not the timing."""

from __future__ import annotations

from typing import Any

from chainsight.testing import Capture, CapturedStage

# Span attributes that depend on when things happened, not on what was recorded.
_TIMING = ("gen_ai.response.time_to_first_chunk", "chainsight.time_to_first_chunk_seconds")
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")


def facts(stage: CapturedStage) -> dict[str, Any]:
    """The stage's attributes without timing, with its outcome and fault."""
    attrs = {k: v for k, v in stage.attributes.items() if k not in _TIMING}
    return {"kind": stage.kind, "outcome": stage.outcome, "fault": stage.fault, **attrs}


def money(capture: Capture, stage: str) -> dict[str, float | None]:
    """Token and cost counters, and the stage's duration count, of the stage named ``stage``."""
    found: dict[str, float | None] = {
        t: capture.metric("chainsight_tokens_total", {"token_type": t}) for t in TOKEN_TYPES
    }
    found["cost"] = capture.metric("chainsight_cost_usd_total")
    found["stages"] = capture.metric("chainsight_stage_duration_seconds_count", {"stage": stage})
    return found


def doubled(before: dict[str, float | None]) -> dict[str, float | None]:
    """What the counters read after the same stage was recorded a second time."""
    return {k: None if v is None else v * 2 for k, v in before.items()}
