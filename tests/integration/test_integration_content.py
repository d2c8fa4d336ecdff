"""The integrations capture the prompt too, in the conventions' shapes, only with capture on.

Real ``openai`` and ``anthropic`` clients call the local provider (``_providers.FakeProvider``);
what the integrations record is checked against the GenAI conventions' JSON schemas and for the
OpenInference names Phoenix reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import openai
import pytest

import chainsight
from chainsight.testing import Capture, capture
from tests.integration._providers import FakeProvider

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "semconv_genai"
SYSTEM = "You are the order desk."
QUESTION = "Where is order 1234? I am jane.doe@example.com."


def _valid(attribute: str, value: str) -> None:
    name = {"gen_ai.input.messages": "gen-ai-input-messages.json",
            "gen_ai.output.messages": "gen-ai-output-messages.json",
            "gen_ai.system_instructions": "gen-ai-system-instructions.json"}[attribute]  # fmt: skip
    schema = json.loads((DATA / name).read_text(encoding="utf-8"))
    jsonschema.validate(json.loads(value), schema)


@pytest.fixture
def captured(instrumented: None) -> Iterator[Capture]:
    yield capture(capture_content=True, conventions=("otel", "openinference"))
    chainsight.reset()


def _calls(provider: FakeProvider) -> None:
    with openai.OpenAI(base_url=provider.openai_url, api_key="sk-local") as client:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
        )
        client.responses.create(model="gpt-4o-mini", instructions=SYSTEM, input=QUESTION)
    with anthropic.Anthropic(base_url=provider.anthropic_url, api_key="sk-ant-local") as client:
        client.messages.create(
            model="claude-3-5-haiku-latest",
            max_tokens=100,
            system=[{"type": "text", "text": SYSTEM}],
            messages=[{"role": "user", "content": QUESTION}],
        )


@pytest.mark.parametrize("name", ["openai.chat", "openai.responses", "anthropic.messages"])
def test_an_sdk_call_records_prompt_and_answer(
    provider: FakeProvider, captured: Capture, name: str
) -> None:
    _calls(provider)
    attrs: dict[str, Any] = dict(captured.stage(name=name).attributes)
    for attribute in ("gen_ai.input.messages", "gen_ai.output.messages"):
        _valid(attribute, attrs[attribute])
    assert "jane.doe@example.com" not in json.dumps(attrs)
    assert attrs["output.value"] == provider.answer.text
    assert attrs["llm.output_messages.0.message.content"] == provider.answer.text
    shown = [v for k, v in attrs.items() if k.startswith("llm.input_messages.")]
    assert SYSTEM in shown
    assert "Where is order 1234? I am [REDACTED:email]." in shown
    if name != "openai.chat":  # the system prompt apart from the messages
        _valid("gen_ai.system_instructions", attrs["gen_ai.system_instructions"])
        assert attrs["llm.input_messages.0.message.role"] == "system"


def test_capture_off_records_no_prompt(provider: FakeProvider, instrumented: None) -> None:
    cap = capture(conventions=("otel", "openinference"))
    _calls(provider)
    for stage in cap.stages:
        assert not any("messages" in key or key.endswith(".value") for key in stage.attributes)
        assert "gen_ai.system_instructions" not in stage.attributes
