"""The attack suite: planted secrets, invalid text and unbounded values through every channel.

Each test replays one way hostile input broke a promise before (see docs/privacy.md and
docs/operations.md, "Hostile input"), against what chainsight really exports: the JSONL span
file, ``/metrics`` scraped over HTTP from chainsight's own server, and the log lines. The OTLP
wire, ``fork()`` and stuck sinks are in ``tests/integration/test_hostile_wire.py``; hostile span
files for triage in ``tests/tools/``.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import chainsight
from chainsight.config import state
from chainsight.errors import ConfigurationError
from chainsight.export.jsonl import span_to_dict as span_dict
from chainsight.testing import capture
from tests._hostile import (
    BOUNDARIES,
    CHANNELS,
    LOOK_ALIKES,
    SECRETS,
    jsonl_text,
    leaks,
    log_text,
    straddling,
    strings_of,
)


class _Run:
    """chainsight configured to export everywhere at once, and what it exported."""

    def __init__(self, path: Path, caplog: pytest.LogCaptureFixture) -> None:
        self.path = path
        self.caplog = caplog
        self.registry = CollectorRegistry()

    def configure(self, **settings: object) -> None:
        chainsight.configure(
            service="hostile",
            exporter=f"jsonl:{self.path}",
            registry=self.registry,
            metrics_port=0,
            log_stages=True,
            **settings,  # type: ignore[arg-type]
        )

    def scrape(self) -> str:
        port = state.current().metrics.server_port
        assert port is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
            assert answer.status == 200
            body: bytes = answer.read()
        return body.decode("utf-8")

    def finish(self) -> tuple[str, str, str]:
        """(span strings, /metrics text, log text), after a clean shutdown."""
        metrics = self.scrape()
        assert chainsight.shutdown(timeout=30.0)
        return jsonl_text(str(self.path)), metrics, log_text(self.caplog.records)


@pytest.fixture
def run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[_Run]:
    chainsight.reset()
    caplog.set_level(logging.INFO, logger="chainsight")
    try:
        yield _Run(tmp_path / "spans.jsonl", caplog)
    finally:
        chainsight.reset()


class _Said:
    """The text the user classification rule gives as the error type, set per call."""

    text = "none"


def _rule(exc: BaseException, kind: str) -> tuple[str, str]:
    return ("app", _Said.text)


def _texts(secret: str) -> Iterator[str]:
    yield secret
    yield f"user {secret} wrote in"
    for boundary in BOUNDARIES:
        yield from straddling(secret, boundary)


# --- 1. no fragment of a planted secret leaves the process --------------------------------------


# Free text is redacted whatever the capture setting: every channel runs with capture off;
# the channels that record content when it is on run with it on too.
_RUNS = [(channel, False) for channel in sorted(CHANNELS)] + [
    ("content", True),
    ("response", True),
]


@pytest.mark.parametrize(
    ("channel", "capture"), _RUNS, ids=[f"{c}-capture-{'on' if on else 'off'}" for c, on in _RUNS]
)
def test_no_fragment_of_a_planted_secret_is_exported(
    run: _Run, channel: str, capture: bool
) -> None:
    run.configure(capture_content=capture, classifiers=[_rule])
    send = CHANNELS[channel]
    for _kind, secret in SECRETS:
        for text in _texts(secret):
            _Said.text = text
            send(text)
    spans, metrics, logs = run.finish()
    assert spans  # every sink saw the traffic
    assert metrics
    assert logs
    for where, exported in (("spans", spans), ("/metrics", metrics), ("logs", logs)):
        found = leaks(exported)
        assert not found, f"{channel}: {len(found)} secrets reached {where}, e.g. {found[:3]}"
    if channel in ("set", "fallback", "validation_reason"):
        assert "[REDACTED:" in spans  # redacted, not dropped


# Secrets stay separate tokens (a secret glued to letters is no longer the value a detector
# looks for), so parts are joined by the separators prose and logs use.
_JOINS = [" ", "\n", "\t", ", ", ": ", "; ", " - ", " (", ") ", ". ", " 12 ", " 2024-11-05 "]


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    parts=st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from([value for _, value in SECRETS]),
                st.sampled_from(LOOK_ALIKES),
                st.text(alphabet="abcdefghij klmnop0123456789", max_size=20),
            ),
            st.sampled_from(_JOINS),
        ),
        min_size=1,
        max_size=12,
    ),
    channel=st.sampled_from(sorted(CHANNELS)),
)
def test_secrets_joined_with_anything_never_leak(
    caplog: pytest.LogCaptureFixture, parts: list[tuple[str, str]], channel: str
) -> None:
    # In memory, not over HTTP and a file: the same export strings, a hundred times faster.
    chainsight.reset()
    caplog.clear()
    try:
        cap = capture(capture_content=True, classifiers=[_rule], log_stages=True)
        text = "".join(part + join for part, join in parts)
        _Said.text = text
        CHANNELS[channel](text)
        spans = "\n".join(strings_of([span_dict(s) for s in cap.spans]))
        metrics = generate_latest(cap.registry).decode("utf-8")
        logs = log_text(caplog.records)
    finally:
        chainsight.reset()
    planted = [(kind, value) for kind, value in SECRETS if value in text]
    for exported in (spans, metrics, logs):
        assert not leaks(exported, planted), (channel, text)


def test_look_alikes_survive_every_text_channel(run: _Run) -> None:
    run.configure(capture_content=True)
    for text in LOOK_ALIKES:
        with chainsight.stage("retrieval", name="look", system="qdrant") as r:
            r.record_content(query=text)
            r.set(note=text)
        with chainsight.stage("validation", name="look-v") as v:
            v.record_validation(passed=True, reason=text)
    spans, _metrics, _logs = run.finish()
    for text in LOOK_ALIKES:
        # the query, the set() value, the reason on the span and on the evaluation event
        assert spans.count(text) == 4, text


def test_a_secret_given_as_a_number_is_redacted(run: _Run) -> None:
    run.configure()
    with chainsight.stage("tool", name="numbers") as s:
        s.set(card_int=4111111111111111, card_float=4111111111111111.0, count=12, ratio=0.5)
    spans, _metrics, _logs = run.finish()
    assert "4111111111111111" not in spans
    assert "12" in spans.split("\n")
    assert "0.5" in spans.split("\n")


# --- 2. invalid text never breaks /metrics or a span batch --------------------------------------

INVALID_TEXTS = [
    "acme\udced",  # a lone surrogate, as json.loads('"\\udced"') gives
    "\ud800",
    "nul\x00byte",
    "\x1b]0;title\x07\x1b[2J",  # terminal control sequences
    "line\u2028separator",
    'quote"back\\slash\nnewline',
    "🙂" * 200,
    "x" * 1_000_000,
]


def _labels_request(text: str) -> None:
    with chainsight.request("r", tenant=text, feature=text, team=text):
        _model()


def _stage_in_request(text: str, request_name: str = "r", stage_name: str = "s") -> None:
    with chainsight.request(request_name), chainsight.stage("tool", name=stage_name):
        pass


def _retrieval(system: str) -> None:
    with chainsight.stage("retrieval", name="r", system=system) as r:
        r.record_documents(count=1, scores=[0.5])


def _model(
    provider: str = "openai",
    model: str = "gpt-4o",
    operation: str = "chat",
    usage_model: str | None = None,
    response_model: str | None = None,
) -> None:
    with chainsight.stage(
        "model", name="m", provider=provider, model=model, operation=operation
    ) as s:
        if response_model is not None:
            s.record_response({"object": "chat.completion", "model": response_model,
                               "usage": {"prompt_tokens": 1, "completion_tokens": 1}})  # fmt: skip
        s.record_usage(input_tokens=2, output_tokens=1, model=usage_model)


def _validate(validator: str) -> None:
    with chainsight.stage("validation", name="v", validator=validator) as v:
        v.record_validation(passed=False, reason="no")


def _fall_back(to: str, reason: str) -> None:
    with chainsight.request("r"), chainsight.stage("model", name="m") as s:
        s.fallback(to=to, reason=reason)


def _fail(error_type: str) -> None:
    _Said.text = error_type
    try:
        with chainsight.stage("tool", name="fails"):
            raise RuntimeError("x")
    except RuntimeError:
        pass


# Each sends ``text`` as the value of one label (and whatever attributes carry it).
LABEL_CHANNELS: dict[str, Callable[[str], None]] = {
    "feature/tenant/team": _labels_request,
    "request": lambda t: _stage_in_request(t, request_name=t),
    "stage": lambda t: _stage_in_request(t, stage_name=t),
    "system": lambda t: _retrieval(system=t),
    "provider": lambda t: _model(provider=t),
    "model": lambda t: _model(model=t),
    "operation": lambda t: _model(operation=t),
    "usage_model": lambda t: _model(usage_model=t),
    "response_model": lambda t: _model(response_model=t),
    "validator": _validate,
    "fallback_to": lambda t: _fall_back(to=t, reason="r"),
    "fallback_reason": lambda t: _fall_back(to="cache", reason=t),
    "error_type": _fail,
}


def test_invalid_text_in_every_label_keeps_metrics_and_spans_whole(run: _Run) -> None:
    run.configure(classifiers=[_rule])
    for send in LABEL_CHANNELS.values():
        for text in INVALID_TEXTS:
            send(text)
        run.scrape()  # after each channel: the first bad value used to break every later scrape
    body = run.scrape()
    parsed = list(text_string_to_metric_families(body))
    assert any(f.name == "chainsight_stage_duration_seconds" for f in parsed)
    for sample in (s for f in parsed for s in f.samples):
        for value in sample.labels.values():
            value.encode("utf-8")  # valid: a surrogate would raise here
            assert len(value.encode("utf-8")) <= 128
    assert chainsight.shutdown(timeout=30.0)
    lines = run.path.read_bytes().splitlines()
    expected = sum(_stages_per_call(name) for name in LABEL_CHANNELS) * len(INVALID_TEXTS)
    assert len(lines) == expected  # no span lost to a bad name
    for line in lines:
        line.decode("utf-8")
        assert len(line) < 64_000  # the megabyte value was cut


def _stages_per_call(channel: str) -> int:
    return 2 if channel in ("feature/tenant/team", "request", "stage", "fallback_to",
                            "fallback_reason") else 1  # fmt: skip


def test_a_surrogate_in_configuration_is_refused_with_the_setting_named() -> None:
    for key in ("release", "service", "environment"):
        with pytest.raises(ConfigurationError, match=f"{key}=.*not valid Unicode"):
            chainsight.configure(**{key: "v1\udced"})  # type: ignore[arg-type]
    chainsight.reset()


# --- 3. distinct values never grow the series without bound --------------------------------------


def _samples(registry: CollectorRegistry) -> int:
    # Spans dropped by a full export queue (20,000 stages in a tight loop) are counted in a
    # series of their own the first time it happens: not a label's growth.
    return sum(
        len(family.samples)
        for family in registry.collect()
        if family.name != "chainsight_export_failures"
    )


@pytest.mark.slow
@pytest.mark.parametrize("label", sorted(LABEL_CHANNELS))
def test_twenty_thousand_distinct_values_of_a_label_stay_bounded(run: _Run, label: str) -> None:
    run.configure(classifiers=[_rule])
    send = LABEL_CHANNELS[label]
    for i in range(2_000):
        send(f"v{i}")
    saturated = _samples(run.registry)
    for i in range(2_000, 20_000):
        send(f"v{i}")
    assert _samples(run.registry) == saturated, label
    assert saturated < 20_000
    counted = sum(
        s.value
        for f in run.registry.collect()
        for s in f.samples
        if s.name == "chainsight_label_overflow_total"
    )
    assert counted >= 20_000 - 100 * 3, label  # every value past the limit was counted
    chainsight.reset()


# --- 4. bounded work per captured value ----------------------------------------------------------


class _Counting:
    """A user redactor that counts the texts it is given (and changes nothing)."""

    def __init__(self) -> None:
        self.calls = 0
        self.chars = 0

    def __call__(self, text: str) -> str:
        self.calls += 1
        self.chars += len(text)
        return text


@pytest.mark.parametrize(
    "make",
    [
        lambda n: ["lorem ipsum dolor sit amet " * 76 for _ in range(n)],  # n x 2 KB
        lambda n: [{"id": i, "text": "lorem ipsum " * 170} for i in range(n)],
        lambda n: [["x" * 2048] * 4 for _ in range(n)],
    ],
    ids=["strings", "dicts", "nested"],
)
def test_captured_work_does_not_grow_with_the_number_of_documents(
    make: Callable[[int], object],
) -> None:
    work = {}
    for n in (100, 10_000):
        counting = _Counting()
        chainsight.reset()
        chainsight.configure(capture_content=True, redactors=[counting], exporter="none")
        with chainsight.stage("retrieval", name="docs") as r:
            r.record_content(documents=make(n))
        work[n] = counting.chars
        chainsight.reset()
    assert work[100] > 0
    assert work[10_000] == work[100]  # the walk stopped at the same place


def test_a_huge_string_in_a_list_has_only_its_head_redacted() -> None:
    counting = _Counting()
    chainsight.reset()
    chainsight.configure(capture_content=True, redactors=[counting], exporter="none")
    with chainsight.stage("retrieval", name="docs") as r:
        r.record_content(documents=["word " * 4_000_000, "next"])
    chainsight.reset()
    assert 0 < counting.chars < 200_000  # of 20 MB


# --- 5. odd values and mistakes get typed errors or pass through ---------------------------------


def test_an_exception_whose_str_raises_reaches_the_caller_unchanged(run: _Run) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise SystemExit("from __str__")

    run.configure()
    raised = Unprintable()
    with pytest.raises(Unprintable) as caught, chainsight.stage("tool", name="t"):
        raise raised
    assert caught.value is raised
    assert vars(raised) == {}  # no bookkeeping left on the user's object


def _nested(depth: int) -> list[object]:
    root: list[object] = []
    cur = root
    for _ in range(depth):
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    return root


class _BadHash(str):
    def __hash__(self) -> int:
        raise ValueError("no hash")


class _BadRepr:
    def __repr__(self) -> str:
        raise ValueError("no repr")


@pytest.mark.parametrize(
    "kwargs",
    [{"note": _nested(5_000)}, {"note": _BadRepr()}, {"note": object()}],
    ids=["deep-list", "bad-repr", "object"],
)
def test_odd_stage_values_are_refused_at_decoration(kwargs: dict[str, object]) -> None:
    chainsight.reset()
    with pytest.raises(ConfigurationError):
        chainsight.traced_stage("tool", name="odd", **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"note": _nested(5_000)}, {"note": _BadRepr()}, {"note": object()}],
    ids=["deep-list", "bad-repr", "object"],
)
def test_odd_stage_values_on_the_request_path_are_dropped(kwargs: dict[str, object]) -> None:
    # with stage(...) runs per request: an odd value must not fail the request.
    chainsight.reset()
    with chainsight.stage("tool", name="odd", **kwargs) as stage:
        ran = stage is not None
    assert ran


def test_an_odd_naming_value_still_raises() -> None:
    chainsight.reset()
    with pytest.raises(ConfigurationError), chainsight.stage("tool", system=_BadRepr()):
        pass


def test_a_str_subclass_name_with_a_broken_hash_still_works(run: _Run) -> None:
    run.configure()
    with chainsight.stage("tool", name=_BadHash("plain")):
        pass
    spans, _metrics, _logs = run.finish()
    assert "plain" in spans.split("\n")


def test_traced_stage_without_parentheses_fails_at_decoration() -> None:
    with pytest.raises(ConfigurationError, match=r"needs a stage kind.*traced_stage\('model'\)"):

        @chainsight.traced_stage  # type: ignore[arg-type]
        def answer() -> None: ...


def test_an_unknown_exporter_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHAINSIGHT_EXPORTER", "kafka")
    chainsight.reset()
    with pytest.raises(ConfigurationError, match=r"CHAINSIGHT_EXPORTER.*'kafka'"):
        chainsight.configure()
    chainsight.reset()
