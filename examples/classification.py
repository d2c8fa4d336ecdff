"""Fault domains for errors your code wraps: the exception chain, and one classification rule.

Run it with ``.venv/bin/python examples/classification.py``. Nothing is needed but a free port on
127.0.0.1: the "provider" is a port nobody listens on, so connecting fails the real way
(``ConnectionRefusedError``). See ``docs/faults.md``.
"""

from __future__ import annotations

import contextlib
import socket

import chainsight
from chainsight import Classification, StageFacts
from chainsight.testing import capture


class AnswerError(Exception):
    """The application's own error for a failed answer."""


class GatewayError(Exception):
    """An in-house LLM gateway's error: it keeps the provider's exception in ``upstream``."""

    def __init__(self, upstream: BaseException) -> None:
        super().__init__("gateway call failed")
        self.upstream = upstream


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call_provider() -> None:
    """Connect to the provider; here it is down."""
    socket.create_connection(("127.0.0.1", closed_port()), timeout=2).close()


@chainsight.traced_stage("model", name="wrapped", provider="openai", model="gpt-4o")
def generate_wrapped() -> None:
    """The app wraps the provider's error in its own: ``raise ... from exc`` keeps the chain."""
    try:
        call_provider()
    except OSError as exc:
        raise AnswerError("the model did not answer") from exc


@chainsight.traced_stage("model", name="via_gateway", provider="openai", model="gpt-4o")
def generate_via_gateway() -> None:
    """The gateway hides the provider's error from the chain (``from None``)."""
    try:
        call_provider()
    except OSError as exc:
        raise GatewayError(exc) from None


def gateway_rule(exc: BaseException, stage: StageFacts) -> Classification | None:
    """Hand what the gateway kept back to chainsight's built-in classification."""
    if isinstance(exc, GatewayError):
        return chainsight.classify(exc.upstream, stage)
    return None  # not ours: the built-in table decides


def main() -> None:
    """Fail each way, without and with the rule, and print the fault each stage recorded."""
    for rules in ([], [gateway_rule]):
        recorded = capture(classifiers=rules)
        for generate in (generate_wrapped, generate_via_gateway):
            with contextlib.suppress(AnswerError, GatewayError):
                generate()
        label = "with the rule   " if rules else "without the rule"
        for stage in recorded.stages:
            print(f"{label}  {stage.name:12} fault={stage.fault} error.type={stage.error_type}")
        chainsight.reset()


if __name__ == "__main__":
    main()
