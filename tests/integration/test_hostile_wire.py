"""Hostile input on the OTLP wire, as a real receiver decodes it.

The in-process suite (``tests/test_hostile.py``) reads the JSONL file, ``/metrics`` and the
logs; here the same planted secrets and invalid names go through the OTLP exporter to a real
OTLP/HTTP receiver, which decodes the protobuf the way a collector would.
"""

from __future__ import annotations

import json

import pytest

import chainsight
from tests._hostile import CHANNELS, SECRETS, leaks, straddling, strings_of
from tests.integration._servers import OTLPReceiver

pytestmark = pytest.mark.integration


def _configure(receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    # Every span must arrive: a queue big enough for the whole run, exported as it goes.
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "200000")
    chainsight.reset()
    chainsight.configure(service="hostile-wire", capture_content=True)


def _count_spans(send: object, text: str) -> int:
    """How many spans one call of a channel makes (measured, not assumed)."""
    from chainsight.testing import capture

    chainsight.reset()
    cap = capture()
    send(text)  # type: ignore[operator]
    chainsight.reset()
    return len(cap.spans)


def test_no_fragment_of_a_planted_secret_reaches_the_otlp_wire(
    otlp_receiver: OTLPReceiver, span_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [
        text
        for _, secret in SECRETS
        for text in (secret, *straddling(secret, 1024), *straddling(secret, 256))
    ]
    expected = sum(_count_spans(send, "probe") for send in CHANNELS.values()) * len(texts)
    _configure(otlp_receiver, monkeypatch)
    for send in CHANNELS.values():
        for text in texts:
            send(text)
    assert chainsight.shutdown(timeout=60.0)
    spans = otlp_receiver.wait_for_spans(expected, timeout=120)
    assert len(spans) == expected
    wire = "\n".join(strings_of(spans))
    assert "[REDACTED:" in wire
    found = leaks(wire)
    assert not found, f"{len(found)} planted secrets reached the OTLP wire, e.g. {found[:3]}"


def test_a_surrogate_in_a_name_does_not_cost_the_batch(
    otlp_receiver: OTLPReceiver, span_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One bad name used to make the exporter drop its whole batch (64 spans lost for one name).
    bad = json.loads('"acme\\udced"')
    _configure(otlp_receiver, monkeypatch)
    for i in range(64):
        with chainsight.stage("tool", name=f"good-{i}"):
            pass
    with chainsight.request(bad, tenant=bad, feature=bad), chainsight.stage("tool", name=bad):
        chainsight.current_stage().set(note=bad, key=bad)
    assert chainsight.shutdown(timeout=30.0)
    spans = otlp_receiver.wait_for_spans(66, timeout=60)
    assert len(spans) == 66
    names = {span["attributes"].get("chainsight.stage.name") for span in spans}
    assert "acme\ufffd" in names  # the bad character became U+FFFD, the rest kept
