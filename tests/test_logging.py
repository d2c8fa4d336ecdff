"""Log correlation (structlog processor, stdlib filter) and the opt-in stage log lines."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

import chainsight
from chainsight import BudgetExceeded, ConfigurationError
from chainsight.logging import (
    CONTEXT_FIELDS,
    STAGE_LOGGER_NAME,
    TraceContextFilter,
    add_trace_context,
    enable_stage_logs,
)
from chainsight.stages.log import logfmt_value as _logfmt_value
from chainsight.testing import Capture, CapturedStage


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    enable_stage_logs(False)
    structlog.reset_defaults()


def hex_ids(stage: CapturedStage) -> tuple[str, str]:
    return format(stage.trace_id, "032x"), format(stage.span_id, "016x")


def parse_logfmt(line: str) -> dict[str, str]:
    """A strict logfmt reader with go-logfmt's rules: bare values stop at a space and may not
    hold '=', '"' or unprintable characters; quoted values are Go-quoted strings (JSON escapes are a subset)."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(line):
        eq = line.index("=", i)
        key = line[i:eq]
        assert key, f"empty key in {line!r}"
        assert " " not in key, f"bad key {key!r} in {line!r}"
        assert '"' not in key, f"bad key {key!r} in {line!r}"
        i = eq + 1
        if i < len(line) and line[i] == '"':
            decoder = json.JSONDecoder()
            value, end = decoder.raw_decode(line, i)
            i = end
        else:
            end = line.find(" ", i)
            end = len(line) if end == -1 else end
            value = line[i:end]
            assert "=" not in value, f"bad bare value {value!r} in {line!r}"
            assert '"' not in value, f"bad bare value {value!r} in {line!r}"
            # Control and format characters are invisible or break terminals: quote them.
            assert value.isprintable(), f"unprintable bare value {value!r} in {line!r}"
            i = end
        assert key not in fields, f"duplicate key {key!r} in {line!r}"
        fields[key] = value
        if i < len(line):
            assert line[i] == " ", f"expected a space at {i} in {line!r}"
            i += 1
    return fields


# --- structlog processor ----------------------------------------------------------------------


def test_structlog_event_in_a_stage_carries_the_exported_span_ids(
    chainsight_capture: Capture,
) -> None:
    chainsight.configure(release={"model": "gpt-4o", "prompt": "answer@7"})
    with structlog.testing.capture_logs(processors=[add_trace_context]) as logs:
        log = structlog.get_logger()
        with chainsight.request("answer_ticket"):
            with chainsight.stage("retrieval", name="fetch_docs"):
                log.info("retrieved", docs=3)
            log.info("between stages")

    retrieval = chainsight_capture.stage(kind="retrieval")
    request = chainsight_capture.stage(kind="request")
    inside, between = logs
    assert (inside["trace_id"], inside["span_id"]) == hex_ids(retrieval)
    assert inside["stage"] == "fetch_docs"
    assert inside["request"] == "answer_ticket"
    assert inside["release"] == "model=gpt-4o,prompt=answer@7"
    assert inside["docs"] == 3
    assert (between["trace_id"], between["span_id"]) == hex_ids(request)
    assert between["stage"] == "answer_ticket"


def test_structlog_json_chain_renders_the_context(chainsight_capture: Capture) -> None:
    # A chain built by hand, the way users add the processor to their own setup.
    out = io.StringIO()
    log = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[add_trace_context, structlog.processors.JSONRenderer()],
    )

    @chainsight.traced_stage("model", provider="openai", model="gpt-4o")
    def generate() -> None:
        log.warning("slow provider")

    with chainsight.request("chat"):
        generate()

    event = json.loads(out.getvalue())
    model = chainsight_capture.stage(kind="model")
    assert (event["trace_id"], event["span_id"]) == hex_ids(model)
    assert event["event"] == "slow provider"
    assert event["stage"] == model.name
    assert event["request"] == "chat"


def test_structlog_context_follows_each_asyncio_task(chainsight_capture: Capture) -> None:
    events: list[dict[str, Any]] = []

    def keep(logger: object, method: str, event_dict: Any) -> Any:
        events.append(dict(event_dict))
        raise structlog.DropEvent

    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, keep])

    async def answer(name: str) -> None:
        async with chainsight.request(name), chainsight.stage("model", name=f"{name}_model"):
            await asyncio.sleep(0.01)
            log.info("done", who=name)

    async def main() -> None:
        await asyncio.gather(answer("a"), answer("b"))

    asyncio.run(main())
    assert len(events) == 2
    for event in events:
        span = chainsight_capture.stage(name=f"{event['who']}_model")
        assert (event["trace_id"], event["span_id"]) == hex_ids(span)
        assert event["request"] == event["who"]
    assert events[0]["trace_id"] != events[1]["trace_id"]


def test_structlog_outside_a_stage_adds_nothing(chainsight_capture: Capture) -> None:
    event = add_trace_context(None, "info", {"event": "startup"})
    assert event == {"event": "startup"}


def test_structlog_keeps_keys_the_caller_set(chainsight_capture: Capture) -> None:
    with chainsight.stage("tool", name="search"):
        event = add_trace_context(None, "info", {"event": "x", "stage": "mine"})
    assert event["stage"] == "mine"
    assert event["trace_id"] == hex_ids(chainsight_capture.stage(kind="tool"))[0]


def test_unsampled_stage_gives_names_but_no_ids(chainsight_capture: Capture) -> None:
    chainsight.configure(sample_ratio=0.0)
    with chainsight.request("r"), chainsight.stage("prompt", name="build"):
        event = add_trace_context(None, "info", {"event": "x"})
    assert event == {"event": "x", "stage": "build", "request": "r", "release": "unknown"}


def test_stage_outside_a_request_has_no_request_field(chainsight_capture: Capture) -> None:
    with chainsight.stage("cache", name="lookup"):
        event = add_trace_context(None, "info", {})
    assert "request" not in event
    assert event["stage"] == "lookup"


# --- stdlib filter ----------------------------------------------------------------------------


def stdlib_logger(
    name: str, fmt: str, log_filter: logging.Filter
) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(log_filter)
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_stdlib_filter_fills_a_format_string(chainsight_capture: Capture) -> None:
    fmt = "%(message)s trace_id=%(trace_id)s span_id=%(span_id)s stage=%(stage)s " + (
        "request=%(request)s release=%(release)s"
    )
    logger, stream = stdlib_logger("test_logging.app", fmt, TraceContextFilter(missing="-"))
    try:
        with chainsight.request("answer"), chainsight.stage("retrieval", name="fetch"):
            logger.info("inside")
        logger.info("outside")
    finally:
        logger.handlers = []
    trace_id, span_id = hex_ids(chainsight_capture.stage(kind="retrieval"))
    inside, outside = stream.getvalue().splitlines()
    assert inside == (
        f"inside trace_id={trace_id} span_id={span_id} stage=fetch request=answer release=unknown"
    )
    assert outside == "outside trace_id=- span_id=- stage=- request=- release=-"


def test_stdlib_filter_sets_none_by_default_and_keeps_extra(chainsight_capture: Capture) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "msg", None, None)
    assert TraceContextFilter().filter(record) is True
    assert all(getattr(record, key) is None for key in CONTEXT_FIELDS)

    with chainsight.stage("tool", name="calc"):
        given_stage = logging.LogRecord("x", logging.INFO, __file__, 1, "msg", None, None)
        given_stage.stage = "given"
        TraceContextFilter().filter(given_stage)
    assert vars(given_stage)["stage"] == "given"
    assert vars(given_stage)["trace_id"] == hex_ids(chainsight_capture.stage(kind="tool"))[0]


def test_stdlib_filter_keeps_the_name_rule_of_logging_filter() -> None:
    only_app = TraceContextFilter("app")
    other = logging.LogRecord("other", logging.INFO, __file__, 1, "msg", None, None)
    child = logging.LogRecord("app.db", logging.INFO, __file__, 1, "msg", None, None)
    assert only_app.filter(other) is False
    assert only_app.filter(child) is True


def test_stdlib_filter_refuses_a_non_string_placeholder() -> None:
    with pytest.raises(ConfigurationError, match=r"missing=0.*string"):
        TraceContextFilter(missing=0)  # type: ignore[arg-type]


# --- stage log lines --------------------------------------------------------------------------


def stage_records(caplog: pytest.LogCaptureFixture) -> list[Any]:
    # Any: the stage fields are extra attributes LogRecord's type does not declare.
    return [r for r in caplog.records if r.name == STAGE_LOGGER_NAME]


def test_stage_lines_are_off_unless_enabled(
    chainsight_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=STAGE_LOGGER_NAME)
    with chainsight.request("r"), chainsight.stage("prompt"):
        pass
    assert stage_records(caplog) == []

    enable_stage_logs(True)
    enable_stage_logs(False)
    with chainsight.request("r"), chainsight.stage("prompt"):
        pass
    assert stage_records(caplog) == []


def test_ok_stage_line_at_info_with_every_field(
    chainsight_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=STAGE_LOGGER_NAME)
    chainsight.configure(release="v1 beta")
    enable_stage_logs(True)
    with chainsight.request("answer"), chainsight.stage("retrieval", name="fetch docs"):
        pass

    fetch, request = stage_records(caplog)
    span = chainsight_capture.stage(kind="retrieval")
    trace_id, span_id = hex_ids(span)
    assert fetch.levelno == logging.INFO
    assert parse_logfmt(fetch.getMessage()) == {
        "stage": "fetch docs",
        "kind": "retrieval",
        "request": "answer",
        "outcome": "ok",
        "fault": "none",
        "duration_s": f"{fetch.duration_s:.6f}",
        "release": "v1 beta",
        "trace_id": trace_id,
        "span_id": span_id,
    }
    assert 0 <= fetch.duration_s <= span.duration + 0.01
    assert (fetch.trace_id, fetch.span_id) == (trace_id, span_id)
    assert (fetch.stage, fetch.kind, fetch.outcome, fetch.fault) == (
        "fetch docs",
        "retrieval",
        "ok",
        "none",
    )
    assert fetch.error_type is None
    assert fetch.cost_usd is None
    assert (fetch.input_tokens, fetch.output_tokens) == (0, 0)
    assert request.kind == "request"
    assert request.span_id == hex_ids(chainsight_capture.stage(kind="request"))[1]


def test_error_stage_line_at_warning_with_fault_and_error_type(
    chainsight_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=STAGE_LOGGER_NAME)
    enable_stage_logs(True)

    @chainsight.traced_stage("retrieval", name="fetch", system="qdrant")
    def fetch() -> None:
        raise TimeoutError("qdrant did not answer")

    with pytest.raises(TimeoutError), chainsight.request("answer"):
        fetch()

    line, request = stage_records(caplog)
    assert line.levelno == logging.WARNING
    fields = parse_logfmt(line.getMessage())
    assert (fields["outcome"], fields["fault"], fields["error_type"]) == (
        "error",
        "vector_store",
        "timeout",
    )
    assert (line.outcome, line.fault, line.error_type) == ("error", "vector_store", "timeout")
    span = chainsight_capture.stage(kind="retrieval")
    assert (span.fault, span.error_type) == (line.fault, line.error_type)
    assert request.levelno == logging.WARNING
    assert request.outcome == "error"


@pytest.mark.parametrize(
    ("body", "outcome", "level"),
    [
        ("ok", "ok", logging.INFO),
        ("cancel", "cancelled", logging.INFO),
        ("fallback", "degraded", logging.WARNING),
        ("budget", "rejected", logging.WARNING),
    ],
)
def test_stage_line_level_follows_the_outcome(
    chainsight_capture: Capture,
    caplog: pytest.LogCaptureFixture,
    body: str,
    outcome: str,
    level: int,
) -> None:
    caplog.set_level(logging.INFO, logger=STAGE_LOGGER_NAME)
    enable_stage_logs(True)
    raised = {"cancel": asyncio.CancelledError, "budget": BudgetExceeded}.get(body)
    expect = pytest.raises(raised) if raised is not None else contextlib.nullcontext()
    with expect, chainsight.stage("model", name="llm") as s:
        if body == "cancel":
            raise asyncio.CancelledError
        if body == "budget":
            raise BudgetExceeded("daily", 10.5, 10.0, "1d")
        if body == "fallback":
            s.fallback(to="small-model", reason="timeout")
    (line,) = stage_records(caplog)
    assert line.outcome == outcome
    assert line.levelno == level
    fields = parse_logfmt(line.getMessage())
    assert fields["outcome"] == outcome
    if body == "budget":
        assert fields["budget"] == line.budget == "daily"
    else:
        assert "budget" not in fields


def test_cost_only_when_the_call_was_priced(
    chainsight_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=STAGE_LOGGER_NAME)
    enable_stage_logs(True)
    with chainsight.stage("model", name="priced", provider="openai", model="gpt-4o") as s:
        s.record_usage(input_tokens=1000, output_tokens=200)
    with chainsight.stage("model", name="unpriced", provider="acme", model="in-house-7b") as s:
        s.record_usage(input_tokens=1000, output_tokens=200)

    priced, unpriced = stage_records(caplog)
    fields = parse_logfmt(priced.getMessage())
    assert priced.cost_usd > 0
    assert float(fields["cost_usd"]) == pytest.approx(priced.cost_usd, abs=1e-8)
    assert (fields["input_tokens"], fields["output_tokens"]) == ("1000", "200")
    assert (priced.input_tokens, priced.output_tokens) == (1000, 200)

    assert unpriced.cost_usd is None
    fields = parse_logfmt(unpriced.getMessage())
    assert "cost_usd" not in fields
    assert fields["input_tokens"] == "1000"


def test_nothing_built_when_the_logger_is_not_enabled(
    chainsight_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=STAGE_LOGGER_NAME)
    enable_stage_logs(True)
    with chainsight.stage("prompt", name="fine"):
        pass
    with pytest.raises(ValueError, match="bad template"), chainsight.stage("prompt", name="bad"):
        raise ValueError("bad template")
    assert [r.stage for r in stage_records(caplog)] == ["bad"]


def test_unsampled_stage_line_has_no_ids(
    chainsight_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=STAGE_LOGGER_NAME)
    chainsight.configure(sample_ratio=0.0)
    enable_stage_logs(True)
    with chainsight.stage("prompt", name="build"):
        pass
    (line,) = stage_records(caplog)
    fields = parse_logfmt(line.getMessage())
    assert "trace_id" not in fields
    assert "span_id" not in fields
    assert line.trace_id is None
    assert fields["stage"] == "build"


@pytest.mark.parametrize("extra_adder", [False, True])
def test_stage_line_through_structlog_keeps_the_finished_span_ids(
    chainsight_capture: Capture, extra_adder: bool
) -> None:
    # The usual "structlog renders stdlib logs as JSON" setup: the stage line is logged after
    # its span left the context, so the ids must come from the record, not the parent stage.
    pre_chain: list[Any] = [add_trace_context]
    if extra_adder:
        pre_chain.insert(0, structlog.stdlib.ExtraAdder())
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=pre_chain,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    logger = logging.getLogger(STAGE_LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    enable_stage_logs(True)
    try:
        with chainsight.request("answer"), chainsight.stage("rerank", name="order"):
            pass
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    rerank_line, request_line = (json.loads(line) for line in stream.getvalue().splitlines())
    trace_id, span_id = hex_ids(chainsight_capture.stage(kind="rerank"))
    assert (rerank_line["trace_id"], rerank_line["span_id"]) == (trace_id, span_id)
    assert (rerank_line["stage"], rerank_line["request"]) == ("order", "answer")
    assert parse_logfmt(rerank_line["event"])["span_id"] == span_id
    request_span = chainsight_capture.stage(kind="request")
    assert request_line["span_id"] == hex_ids(request_span)[1]
    if extra_adder:
        assert rerank_line["outcome"] == "ok"
        assert rerank_line["kind"] == "rerank"


def test_enable_stage_logs_refuses_a_non_bool() -> None:
    with pytest.raises(ConfigurationError, match=r"log_stages='yes'.*True or False"):
        enable_stage_logs("yes")  # type: ignore[arg-type]


# --- logfmt values ----------------------------------------------------------------------------


@given(st.text())
@example("line\u2028separator")
@example('quote " equals = backslash \\ tab \t')
@example("")
@example("nul\x00zero-width\u200b")
def test_logfmt_value_reads_back_as_written(value: str) -> None:
    line = f"a=1 v={_logfmt_value(value)} z=2"
    assert len(line.splitlines()) == 1
    assert parse_logfmt(line) == {"a": "1", "v": value, "z": "2"}


@pytest.mark.parametrize("value", ["retrieve", "answer@7", "test.<locals>.f", "résumé"])
def test_plain_tokens_stay_bare(value: str) -> None:
    assert _logfmt_value(value) == value


# --- the Loki derived field in docs/logging.md ------------------------------------------------


def documented_trace_regex() -> re.Pattern[str]:
    text = (Path(__file__).parent.parent / "docs" / "logging.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    (provisioning,) = [yaml.safe_load(b) for b in blocks if "derivedFields" in b]
    (field,) = provisioning["datasources"][0]["jsonData"]["derivedFields"]
    assert field["url"] == "$${__value.raw}"
    return re.compile(field["matcherRegex"])


def test_documented_derived_field_finds_the_trace_in_both_renderings(
    chainsight_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    pattern = documented_trace_regex()
    caplog.set_level(logging.INFO, logger=STAGE_LOGGER_NAME)
    enable_stage_logs(True)
    out = io.StringIO()
    log = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[add_trace_context, structlog.processors.JSONRenderer()],
    )
    with chainsight.stage("model", name="llm"):
        log.info("calling")
    trace_id = hex_ids(chainsight_capture.stage(kind="model"))[0]
    (line,) = stage_records(caplog)
    for rendered in (line.getMessage(), out.getvalue()):
        found = pattern.search(rendered)
        assert found is not None, rendered
        assert found.group(1) == trace_id


def test_configure_log_stages_switches_the_lines(
    chainsight_capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="chainsight.stages")
    chainsight.configure(log_stages=True)
    with chainsight.stage("tool", name="logged"):
        pass
    chainsight.configure(service="still-on")  # None = unchanged: lines stay on
    with chainsight.stage("tool", name="logged_too"):
        pass
    chainsight.configure(log_stages=False)
    with chainsight.stage("tool", name="silent"):
        pass
    messages = [r.getMessage() for r in caplog.records if r.name == "chainsight.stages"]
    assert any("stage=logged " in m for m in messages)
    assert any("stage=logged_too " in m for m in messages)
    assert not any("stage=silent " in m for m in messages)
    with pytest.raises(chainsight.ConfigurationError, match="log_stages"):
        chainsight.configure(log_stages="yes")  # type: ignore[arg-type]
