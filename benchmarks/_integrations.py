"""Micro cases for the integrations: a model stage made by the instrumented ``openai`` client
against the same stage written by hand (``stage()`` + ``record_response``).

Both drive the real ``openai.OpenAI`` client through its whole request path (request building,
its HTTP client, response parsing into pydantic objects). Only the network is taken out: the
client's transport is an in-process ``MockTransport`` answering a fixed chat completion, so
the timing is the SDK's and chainsight's, not a socket's. The difference between the two cases
is what the integration adds over the hand-written stage; the target is <= 0.1 R.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import chainsight

MODEL: Final = "gpt-4o-mini"
MESSAGES: Final[list[Any]] = [{"role": "user", "content": "where is my order?"}]
_BODY: Final = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1733400000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "It ships on Monday."},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "total_tokens": 150,
            "prompt_tokens_details": {"cached_tokens": 40},
            "completion_tokens_details": {"reasoning_tokens": 8},
        },
    }
).encode()


def _client() -> Any:
    import httpx2
    import openai

    def answer(request: Any) -> Any:
        return httpx2.Response(200, content=_BODY, headers={"content-type": "application/json"})

    return openai.OpenAI(
        api_key="sk-bench",
        base_url="http://bench.invalid/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )


class OpenAICases:
    """The client shared by the cases, and their runs and setups."""

    def __init__(self) -> None:
        from openai.types.chat import ChatCompletion

        from chainsight.integrations import openai as _openai
        from chainsight.integrations._calls import sync_method

        self.client = _client()
        # The stub pair: the same stage around a method that returns an already parsed
        # response, so the SDK's ~1 ms of parsing (and its noise) is out of the difference.
        self.response = ChatCompletion.model_validate_json(_BODY)
        self.resource = self.client.chat.completions
        response = self.response
        self.stub_create = sync_method(_openai.CHAT)(lambda resource, **kwargs: response)

    def close(self) -> None:
        """Close the client; leave the SDK as it was found."""
        chainsight.uninstrument("openai")
        self.client.close()

    def setup(self, use: Callable[[], None], instrumented: bool) -> Callable[[], None]:
        """chainsight's profile, and the integration on or off, before each batch."""

        def setup() -> None:
            use()
            if instrumented:
                chainsight.instrument("openai")
            else:
                chainsight.uninstrument("openai")

        return setup

    def run_bare(self, loops: int) -> None:
        """The SDK call alone."""
        create = self.client.chat.completions.create
        for _ in range(loops):
            create(model=MODEL, messages=MESSAGES)

    def run_by_hand(self, loops: int) -> None:
        """The stage a user writes: ``with stage("model")`` + ``record_response``."""
        create = self.client.chat.completions.create
        stage = chainsight.stage
        for _ in range(loops):
            with stage(
                "model",
                name="openai.chat",
                provider="openai",
                model=MODEL,
                operation="chat",
                server_address="bench.invalid",
            ) as s:
                s.record_response(create(model=MODEL, messages=MESSAGES))

    def run_stub_by_hand(self, loops: int) -> None:
        """The hand-written stage around a call that costs nothing."""
        stage, response = chainsight.stage, self.response
        for _ in range(loops):
            with stage(
                "model",
                name="openai.chat",
                provider="openai",
                model=MODEL,
                operation="chat",
                server_address="bench.invalid",
            ) as s:
                s.record_response(response)

    def run_stub_integration(self, loops: int) -> None:
        """The integration's wrapper around the same call: what it adds, alone."""
        create, resource = self.stub_create, self.resource
        for _ in range(loops):
            create(resource, model=MODEL, messages=MESSAGES)

    def run_integration(self, loops: int) -> None:
        """The same call with ``chainsight.instrument("openai")`` on: no code around it."""
        create = self.client.chat.completions.create
        for _ in range(loops):
            create(model=MODEL, messages=MESSAGES)
