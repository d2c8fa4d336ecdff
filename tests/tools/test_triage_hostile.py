"""Triage on hostile input: span files, arguments and a Prometheus that a bad or malicious
writer made.

Every case runs the real command line and checks the bytes it writes. A file with nothing usable
left exits 2 with exactly one line on stderr; a file with good spans and bad lines is judged on
the good ones and says how many lines it skipped and why. Never a traceback, never exit 1 for bad
input, and never a byte a terminal acts on (below 0x20 except newline, DEL, C1 controls).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chainsight import _names as n
from chainsight.tools import triage, triage_prometheus
from chainsight.tools.cli import main
from chainsight.tools.triage_lines import MAX_DEPTH, MAX_LINE_BYTES
from chainsight.tools.triage_units import MAX_TEXT, clean_text, terminal_safe
from tests.tools.test_triage import T0, SpanFile, _traffic

# Sequences a terminal acts on: clear screen, set the window title (OSC 0, ended by BEL), an
# OSC 8 hyperlink, a C1 CSI, a right-to-left override, and a newline that would forge a line.
CLEAR = "\x1b[2J\x1b[H"
TITLE = "\x1b]0;owned\x07"
LINK = "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"
HOSTILE_NAME = f"gen{CLEAR}{TITLE}{LINK}\x9b31m\u202e\nverdict: healthy"

# --- running the command line -----------------------------------------------------------------


def run_triage(*argv: str) -> tuple[int, bytes, bytes]:
    """``chainsight triage ARGV`` in this process: exit code, stdout and stderr as bytes."""
    out, err = io.BytesIO(), io.BytesIO()
    out_text = io.TextIOWrapper(out, encoding="utf-8", newline="\n", write_through=True)
    err_text = io.TextIOWrapper(err, encoding="utf-8", newline="\n", write_through=True)
    with contextlib.redirect_stdout(out_text), contextlib.redirect_stderr(err_text):
        code = main(["triage", *argv])
    result = code, out.getvalue(), err.getvalue()
    out_text.detach()
    err_text.detach()
    return result


def assert_terminal_safe(*streams: bytes) -> None:
    """No byte below 0x20 but newline, no DEL, no C1 control (UTF-8 C2 80..C2 9F), no traceback."""
    for data in streams:
        unsafe = sorted({b for b in data if (b < 0x20 and b != 0x0A) or b == 0x7F})
        assert unsafe == [], f"control bytes {unsafe} in {data[:300]!r}"
        assert re.search(rb"\xc2[\x80-\x9f]", data) is None, data[:300]
        assert b"Traceback (most recent call last)" not in data
        data.decode("utf-8")  # and valid UTF-8: no lone surrogate made it out


def assert_one_error_line(code: int, out: bytes, err: bytes, *expected: str) -> str:
    """Exit 2, nothing on stdout, one safe line on stderr that says ``expected``."""
    assert code == 2, (out[-500:], err)
    assert out == b""
    assert err.startswith(b"chainsight triage: error: ")
    assert err.endswith(b"\n")
    assert err.count(b"\n") == 1, err
    assert len(err) < 3000
    assert_terminal_safe(err)
    line = err.decode()
    for text in expected:
        assert text in line, line
    return line


# --- hostile span files -------------------------------------------------------------------------


def span_line(**fields: Any) -> str:
    """One request span, as the JSONL exporter writes it, with ``fields`` replaced."""
    record: dict[str, Any] = {
        "schema": "chainsight.span/1",
        "name": "invoke_workflow answer_ticket",
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "parent_span_id": None,
        "kind": "INTERNAL",
        "start_time_unix_nano": int(T0 * 1e9),
        "end_time_unix_nano": int((T0 + 0.5) * 1e9),
        "duration_seconds": 0.5,
        "status": {"code": "UNSET", "description": None},
        "attributes": {
            n.CS_STAGE_KIND: "request",
            n.CS_REQUEST_NAME: "answer_ticket",
            n.CS_OUTCOME: "ok",
        },
        "events": [],
        "resource": {"service.name": "t"},
    }
    record.update(fields)
    return json.dumps(record)


END_FIELD = '"end_time_unix_nano": ' + str(int((T0 + 0.5) * 1e9))
ESCAPES = {
    n.CS_STAGE_KIND: "request",
    n.CS_REQUEST_NAME: HOSTILE_NAME,
    n.CS_OUTCOME: "error",
    n.CS_FAULT: "provider",
    n.ERROR_TYPE: f"Timeout{TITLE}{CLEAR}",
    n.GEN_AI_REQUEST_MODEL: f"gpt{LINK}",
    n.CS_ERROR_ORIGIN: HOSTILE_NAME,
}

# name -> (the file's bytes, what the error line must say). Each file holds only the hostile line.
HOSTILE_FILES: dict[str, tuple[bytes, str]] = {
    "inf end time": (
        span_line().replace(END_FIELD, '"end_time_unix_nano": 1e999').encode(),
        "NaN, infinite",
    ),
    "NaN end time": (
        span_line().replace(END_FIELD, '"end_time_unix_nano": NaN').encode(),
        "NaN, infinite",
    ),
    "400-digit end time": (
        span_line().replace(END_FIELD, '"end_time_unix_nano": ' + "9" * 400).encode(),
        "over 40 digits",
    ),
    "10^30 ns end time": (span_line(end_time_unix_nano=10**30).encode(), "start or end time"),
    "negative start time": (span_line(start_time_unix_nano=-1).encode(), "start or end time"),
    "boolean end time": (span_line(end_time_unix_nano=True).encode(), "start or end time"),
    "text end time": (span_line(end_time_unix_nano="soon").encode(), "start or end time"),
    "200,000-deep array": (b"[" * 200_000 + b"]" * 200_000, "nested deeper than 64"),
    "100,000-deep object": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested deeper"),
    "deep array inside a span": (
        span_line(events=[])
        .replace('"events": []', '"events": ' + "[" * 5000 + "]" * 5000)
        .encode(),
        "nested deeper",
    ),
    "10 MB stage name": (
        span_line(
            attributes={n.CS_STAGE_KIND: "request", n.CS_REQUEST_NAME: "x" * 10_000_000}
        ).encode(),
        "longer than 1 MiB",
    ),
    "escapes in span name, model and error.type": (
        span_line(name=HOSTILE_NAME, attributes=ESCAPES).encode(),
        "only 1 request",
    ),
    "lone surrogates": (
        span_line(
            attributes={**ESCAPES, n.ERROR_TYPE: "\ud800", n.CS_REQUEST_NAME: "\udfff"}
        ).encode(),
        "only 1 request",
    ),
    "invalid UTF-8": (
        span_line(name="NAME").replace("NAME", "\\x").encode().replace(b"\\x", b"\xff\xfe\xc3"),
        "not UTF-8",
    ),
    "truncated line": (span_line()[:70].encode(), "not valid JSON"),
    "empty file": (b"", "is empty"),
    "blank lines only": (b"\n \n\t\n", "is empty"),
    "binary file": (bytes(range(256)) * 64, "holds no readable span"),
    "not a span": (b'[1, 2]\n"text"\n{}\n{"trace_id": 5}\n', "not a span"),
    "a trace id of 10 kB": (span_line(trace_id="f" * 10_000).encode(), "not a span"),
}


@pytest.mark.parametrize("name", list(HOSTILE_FILES))
def test_a_file_holding_only_a_hostile_line_exits_2_with_one_line(
    name: str, tmp_path: Path
) -> None:
    content, reason = HOSTILE_FILES[name]
    path = tmp_path / "spans.jsonl"
    path.write_bytes(content + (b"\n" if content else b""))
    code, out, err = run_triage("--spans", str(path))
    assert_one_error_line(code, out, err, reason, repr(str(path)))


def test_json_mode_gives_the_same_one_error_line(tmp_path: Path) -> None:
    # --json changes nothing to the error path: one line on stderr, exit 2.
    path = tmp_path / "deep.jsonl"
    path.write_bytes(HOSTILE_FILES["200,000-deep array"][0])
    assert_one_error_line(*run_triage("--spans", str(path), "--json"), "nested deeper")


def _faulty_traffic(tmp_path: Path) -> SpanFile:
    """One minute of traffic whose last 20 s have provider timeouts in half the requests."""
    spans = SpanFile(tmp_path / "spans.jsonl")
    _traffic(spans, fault={"fail": ("generate_answer", "provider", "timeout")})
    return spans


def test_hostile_lines_among_good_spans_are_skipped_counted_and_named(tmp_path: Path) -> None:
    spans = _faulty_traffic(tmp_path)
    good = len(spans.lines)
    for name in ("inf end time", "400-digit end time", "10^30 ns end time", "200,000-deep array"):
        spans.lines.append(HOSTILE_FILES[name][0].decode())
    spans.lines.append(span_line()[:70])  # a writer still running
    path = Path(spans.write())
    with path.open("ab") as handle:
        handle.write(b"\xff\xfe not text\n")
        handle.write(HOSTILE_FILES["10 MB stage name"][0] + b"\n")
    code, out, err = run_triage("--spans", str(path), "--window", "20s")
    assert_terminal_safe(out, err)
    assert (code, err) == (1, b"")
    text = out.decode()
    assert text.splitlines()[-1].startswith("verdict: provider in simai/sim-gpt-4o: 50.0% of")
    for expected in (
        f"2 lines skipped: has a number that is NaN, infinite or over 40 digits, first at "
        f"line {good + 1}",
        f"1 line skipped: start or end time not a number of ns from 0 to 2^63 (year 2262), "
        f"first at line {good + 3}",
        f"1 line skipped: nested deeper than {MAX_DEPTH} levels, first at line {good + 4}",
        f"1 line skipped: not valid JSON, first at line {good + 5}",
        f"1 line skipped: not UTF-8 text, first at line {good + 6}",
        f"1 line skipped: longer than 1 MiB, first at line {good + 7}",
    ):
        assert expected in text

    code, out, err = run_triage("--spans", str(path), "--window", "20s", "--json")
    assert_terminal_safe(out, err)
    payload = json.loads(out)
    assert payload["verdict"]["domain"] == "provider"
    assert payload["skipped_lines"]["not valid JSON"] == {"lines": 1, "first_line": good + 5}
    assert sum(v["lines"] for v in payload["skipped_lines"].values()) == 7


def _with_hostile_names(spans: SpanFile) -> None:
    """Put terminal sequences into the failing stage's name, its model and its error type."""
    for old, new in (
        ("generate_answer", HOSTILE_NAME),
        ("sim-gpt-4o", f"gpt{LINK}\ud800"),
        ('"timeout"', json.dumps(f"Timeout{TITLE}{CLEAR}")),
    ):
        escaped = json.dumps(new)[1:-1] if not new.startswith('"') else new
        spans.lines = [line.replace(old, escaped) for line in spans.lines]


def test_terminal_sequences_in_names_are_escaped_in_the_report(tmp_path: Path) -> None:
    spans = _faulty_traffic(tmp_path)
    _with_hostile_names(spans)
    code, out, err = run_triage("--spans", spans.write(), "--window", "20s")
    assert_terminal_safe(out, err)
    assert (code, err) == (1, b"")
    text = out.decode()
    verdict = text.splitlines()[-1]
    # The fault is still found and named; the names show their escapes instead of acting.
    assert verdict.startswith("verdict: provider in simai/gpt\\x1b]8;;https://evil.example/")
    assert "\\ud800" in verdict
    assert "Timeout\\x1b]0;owned\\x07\\x1b[2J\\x1b[H (" in verdict
    assert "at stage gen\\x1b[2J\\x1b[H" in verdict
    assert "\\x9b31m\\u202e\\x0averdict: healthy" in verdict
    assert sum(line.startswith("verdict:") for line in text.splitlines()) == 1


def test_terminal_sequences_in_names_stay_valid_ascii_json(tmp_path: Path) -> None:
    spans = _faulty_traffic(tmp_path)
    _with_hostile_names(spans)
    code, out, err = run_triage("--spans", spans.write(), "--window", "20s", "--json")
    assert_terminal_safe(out, err)
    assert code == 1
    out.decode("ascii")
    verdict = json.loads(out)["verdict"]
    assert verdict["component"].startswith("simai/gpt\\x1b]8;;")
    assert "\x1b" not in json.dumps(verdict, ensure_ascii=False)


def test_a_long_name_is_cut_to_a_few_hundred_characters(tmp_path: Path) -> None:
    spans = _faulty_traffic(tmp_path)
    long_name = "generate_" + "a" * (MAX_LINE_BYTES // 4)  # long, but the line is under the cap
    spans.lines = [line.replace("generate_answer", long_name) for line in spans.lines]
    code, out, err = run_triage("--spans", spans.write(), "--window", "20s")
    assert_terminal_safe(out, err)
    assert code == 1
    assert max(len(line) for line in out.decode().splitlines()) < 4 * MAX_TEXT + 500
    assert f"at stage generate_{'a' * (MAX_TEXT - 9)}..." in out.decode()


def test_brackets_inside_strings_are_not_nesting(tmp_path: Path) -> None:
    spans = _faulty_traffic(tmp_path)
    spans.lines = [line.replace("build_prompt", "[" * 1000 + "{" * 1000) for line in spans.lines]
    code, out, err = run_triage("--spans", spans.write(), "--window", "20s")
    assert (code, err) == (1, b"")
    assert b"skipped" not in out


def test_a_hostile_file_name_is_escaped_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / f"spans{CLEAR}\u202e.jsonl"
    line = assert_one_error_line(*run_triage("--spans", str(path)), "does not exist")
    assert "spans\\x1b[2J\\x1b[H\\u202e.jsonl" in line


def test_a_directory_is_one_error_line(tmp_path: Path) -> None:
    assert_one_error_line(*run_triage("--spans", str(tmp_path)), "cannot be read")


# --- hostile arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--at", "1e999", "--at '1e999' is not a time triage can read"),
        ("--at", "nan", "--at 'nan' is not a time triage can read"),
        ("--at", "inf", "--at 'inf'"),
        ("--at", "-5", "--at '-5' is not a time triage can read"),
        ("--at", "-inf", "--at '-inf'"),
        ("--at", "10**30", "--at '10**30' is not a time"),
        ("--at", "1e30", "--at '1e30' is not a time triage can read"),
        ("--at", str(10**30), "from 1970 to 2262"),
        ("--at", "9999-12-31T23:59:59Z", "from 1970 to 2262"),
        ("--at", "0001-01-01T00:00:00+01:00", "from 1970 to 2262"),
        ("--at", f"x{CLEAR}", "--at 'x\\x1b[2J\\x1b[H' is not a time"),
        ("--at", "9" * 100_000, "..."),
        ("--window", "1e999", "duration '1e999'"),
        ("--window", "nan", "duration 'nan'"),
        ("--window", "1e300", "under 290 years"),
        ("--baseline", "-1s", "duration '-1s'"),
        ("--window", f"5m{TITLE}", "duration '5m\\x1b]0;owned\\x07'"),
    ],
)
def test_hostile_arguments_exit_2_with_one_line(
    option: str, value: str, expected: str, tmp_path: Path
) -> None:
    spans = SpanFile(tmp_path / "spans.jsonl")
    _traffic(spans, seconds=10)
    # --opt=VALUE: argparse reads "--at -inf" as two options (its own usage error, not ours).
    code, out, err = run_triage("--spans", spans.write(), f"{option}={value}")
    assert_one_error_line(code, out, err, expected)


@pytest.mark.parametrize("timeout", ["nan", "inf", "-1", "1e999", "1e9"])
def test_a_hostile_timeout_exits_2_with_one_line(timeout: str) -> None:
    code, out, err = run_triage("--prometheus", "http://127.0.0.1:9", f"--timeout={timeout}")
    assert_one_error_line(code, out, err, "--timeout must be a positive number of seconds")


def test_a_bug_of_ours_is_one_line_and_exit_2_not_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Exit 1 means "fault found": an unforeseen error must never read as one.
    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError(f"x{CLEAR}\nsecond line")

    monkeypatch.setattr(triage, "from_spans", broken)
    monkeypatch.setenv(n.ENV_RAISE_INTERNAL, "0")
    code, out, err = run_triage("--spans", str(tmp_path / "s.jsonl"))
    assert_one_error_line(code, out, err, "internal error KeyError: 'x\\x1b[2J", "a bug")
    # Our own suite sets CHAINSIGHT_RAISE_INTERNAL_ERRORS so such bugs fail its tests loudly.
    monkeypatch.setenv(n.ENV_RAISE_INTERNAL, "1")
    with pytest.raises(KeyError):
        run_triage("--spans", str(tmp_path / "s.jsonl"))


# --- the real process -------------------------------------------------------------------------


def _process(*argv: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "chainsight", "triage", *argv],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )


def test_the_real_process_on_hostile_files(tmp_path: Path) -> None:
    deep = tmp_path / "deep.jsonl"
    deep.write_bytes(HOSTILE_FILES["200,000-deep array"][0] + b"\n")
    proc = _process("--spans", str(deep), "--at", "nan")
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, "--at 'nan'")
    proc = _process("--spans", str(deep))
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, "nested deeper")

    spans = _faulty_traffic(tmp_path)
    _with_hostile_names(spans)
    spans.lines = [line.replace("simai", "sïmai-模型") for line in spans.lines]
    # A terminal that cannot show the names: they are escaped, never an encoding error.
    proc = _process("--spans", spans.write(), "--window", "20s", PYTHONIOENCODING="ascii")
    assert (proc.returncode, proc.stderr) == (1, b"")
    assert_terminal_safe(proc.stdout)
    assert b"s\\xefmai-\\u6a21\\u578b/gpt\\x1b]8;;" in proc.stdout


# --- escaping, unit by unit -------------------------------------------------------------------


def test_clean_text_escapes_what_a_terminal_acts_on_and_caps_the_length() -> None:
    assert clean_text("a\x00b\x1bc\x7fd\x85e\x9bf") == "a\\x00b\\x1bc\\x7fd\\x85e\\x9bf"
    assert clean_text("\ud800\u202e\u2028\u2066x\n\t") == "\\ud800\\u202e\\u2028\\u2066x\\x0a\\x09"
    assert clean_text("ünï 模型 🙂") == "ünï 模型 🙂"
    assert clean_text("x" * 1000) == "x" * MAX_TEXT + "..."
    assert terminal_safe("line\nnext\x1b[2J") == "line\nnext\\x1b[2J"


# --- a hostile Prometheus ---------------------------------------------------------------------


class _FakePrometheus(ThreadingHTTPServer):
    """Answers every query with ``answer``: (HTTP status, body)."""

    answer: tuple[int, bytes] = (200, b"")


class _Answer(BaseHTTPRequestHandler):
    server: _FakePrometheus

    def do_GET(self) -> None:
        status, body = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read what triage prints, not the server's log."""


@pytest.fixture
def prometheus() -> Iterator[_FakePrometheus]:
    """A server on loopback that answers every query with ``server.answer``."""
    server = _FakePrometheus(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _vector(*samples: tuple[Any, Any]) -> bytes:
    result = [{"metric": metric, "value": [T0, value]} for metric, value in samples]
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    ).encode()


def _url(server: _FakePrometheus) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


HOSTILE_LABELS = {
    n.L_FAULT: "provider",
    n.L_OUTCOME: "error",
    n.L_STAGE: HOSTILE_NAME,
    n.L_KIND: "model",
    n.L_ERROR_TYPE: f"t{TITLE}",
    n.L_GEN_AI_PROVIDER_NAME: f"p{LINK}",
    n.L_GEN_AI_REQUEST_MODEL: "m" * 10_000,
    n.L_SYSTEM: "\ud800",
}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ((200, _vector((HOSTILE_LABELS, "1e308"))), "no request finished"),
        ((200, _vector((HOSTILE_LABELS, "NaN"), (HOSTILE_LABELS, "-Inf"))), "no request"),
        ((200, _vector(({**HOSTILE_LABELS, "le": "abc"}, "2"))), "only 2.0 requests"),
        ((200, b"[" * 200_000 + b"]" * 200_000), "did not answer JSON"),
        ((200, b'{"status": "success", "data": [1]}'), "unexpected answer"),
        ((200, b'{"status": "success", "data": {"resultType": "matrix"}}'), "unexpected answer"),
        ((200, _vector(("not labels", "1"), ({"le": 5}, [1]))), "only 1.0 requests"),
        ((200, b"not json" + TITLE.encode()), "did not answer JSON"),
        ((500, json.dumps({"error": f"boom{CLEAR}", "errorType": "x"}).encode()), "boom\\x1b"),
        ((200, json.dumps({"status": "error", "error": "e" * 100_000}).encode()), "refused"),
    ],
)
def test_a_hostile_prometheus_is_one_error_line(
    prometheus: _FakePrometheus, answer: tuple[int, bytes], expected: str
) -> None:
    prometheus.answer = answer
    code, out, err = run_triage("--prometheus", _url(prometheus), "--timeout", "5")
    assert_one_error_line(code, out, err, expected)


def test_hostile_prometheus_labels_are_escaped_in_the_report(
    prometheus: _FakePrometheus,
) -> None:
    labels = {**HOSTILE_LABELS, "le": "+Inf"}
    prometheus.answer = (200, _vector((labels, "1e14"), ({**labels, "le": "nan"}, "1e14")))
    code, out, err = run_triage("--prometheus", _url(prometheus), "--timeout", "5")
    assert_terminal_safe(out, err)
    assert code in (0, 1)
    assert "gen\\x1b[2J" in out.decode() or code == 0
    code, out, err = run_triage("--prometheus", _url(prometheus), "--timeout", "5", "--json")
    assert_terminal_safe(out, err)
    json.loads(out)


def test_an_answer_past_the_size_cap_is_refused(
    prometheus: _FakePrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(triage_prometheus, "_MAX_BODY", 1024)
    prometheus.answer = (200, _vector(*[({"i": str(i)}, "1") for i in range(100)]))
    code, out, err = run_triage("--prometheus", _url(prometheus), "--timeout", "5")
    assert_one_error_line(code, out, err, "answered more than 0 MiB")


# --- fuzzing ----------------------------------------------------------------------------------

_SPECIAL_TEXT = st.sampled_from(
    ["", "request", "provider", "error", "degraded", "\ud800", "\x1b[2J", "\x9b", "\u202e",
     "x" * 300, "[[[[", '"', "\\", "\n", "0", "1e999"]
)  # fmt: skip
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**45), max_value=10**45)
    | st.just(10**400)
    | st.floats()  # NaN and infinities too: json.dumps writes NaN / Infinity
    | st.text(max_size=20)
    | _SPECIAL_TEXT
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = ["trace_id", "start_time_unix_nano", "end_time_unix_nano", "attributes", "events", "name"]
_ATTRIBUTES = [n.CS_STAGE_KIND, n.CS_STAGE_NAME, n.CS_OUTCOME, n.CS_FAULT, n.ERROR_TYPE,
               n.CS_ERROR_ORIGIN, n.GEN_AI_REQUEST_MODEL, n.CS_FALLBACK_TO]  # fmt: skip


@st.composite
def _fuzzed_line(draw: st.DrawFn) -> bytes:
    """A span line with random JSON at some of its fields, or random JSON, or random bytes."""
    kind = draw(st.sampled_from(["span", "attributes", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)).replace(b"\n", b" ")
    if kind == "json":
        return json.dumps(draw(_VALUES)).encode()
    record = json.loads(span_line(attributes={**ESCAPES, n.CS_STAGE_KIND: "model"}))
    if kind == "span":
        for field in draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=3)):
            record[field] = draw(_VALUES)
    else:
        for key in draw(st.lists(st.sampled_from(_ATTRIBUTES), min_size=1, max_size=4)):
            record["attributes"][key] = draw(_VALUES)
    return json.dumps(record).encode()


@pytest.fixture(scope="module")
def traffic_lines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Span lines to mix the fuzzed ones into: none, healthy traffic, traffic with a fault."""
    healthy = SpanFile(tmp_path_factory.mktemp("fuzz") / "healthy.jsonl")
    _traffic(healthy, seconds=20, per_second=2)
    faulty = SpanFile(tmp_path_factory.mktemp("fuzz") / "faulty.jsonl")
    _traffic(
        faulty,
        seconds=20,
        per_second=2,
        fault_from=15,
        fault={"fail": ("build_prompt", "app", "E")},
    )
    return {"none": [], "healthy": healthy.lines, "faulty": faulty.lines}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(_fuzzed_line(), min_size=1, max_size=6),
    traffic=st.sampled_from(["none", "healthy", "faulty"]),
    as_json=st.booleans(),
)
def test_fuzzed_span_lines_never_crash_or_reach_the_terminal(
    traffic_lines: dict[str, list[str]],
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[bytes],
    traffic: str,
    as_json: bool,
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "spans.jsonl"
    base = [line.encode() for line in traffic_lines[traffic]]
    path.write_bytes(b"\n".join([*base, *lines]) + b"\n")
    code, out, err = run_triage("--spans", str(path), *(["--json"] if as_json else []))
    assert_terminal_safe(out, err)
    event(f"{traffic} traffic: exit {code}")
    if code == 2:
        assert_one_error_line(code, out, err)
        return
    assert code in (0, 1)
    assert err == b""
    # Exit 1 exactly when the report names a fault.
    verdict = json.loads(out)["verdict"]["line"] if as_json else out.decode().splitlines()[-1]
    assert verdict.startswith("verdict: ")
    assert (code == 0) == verdict.startswith("verdict: healthy")
