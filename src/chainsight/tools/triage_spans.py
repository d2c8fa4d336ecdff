"""Triage source: a JSONL span file (``configure(exporter='jsonl:PATH')``).

Each request span ending in a period is one request; its trace's failed spans say which fault
domains it touched, where the failure started and in which component. Stage spans give exact
latencies.

The file is untrusted input (docs/triage.md, "Hostile span files"): ``triage_lines`` bounds each
line, and a line that is not a usable span is skipped and counted, never fatal. Only a file with
no usable request at all stops triage (exit 2).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Final

from chainsight import _names as n
from chainsight.errors import TriageError
from chainsight.tools.triage_analysis import MIN_REQUESTS, Report, analyse
from chainsight.tools.triage_figures import (
    FAILED_OUTCOMES,
    REQUEST_KIND,
    Period,
    ReleaseFigures,
    SampleLatency,
    domain_of_kind,
)
from chainsight.tools.triage_lines import Skipped, read_json_lines
from chainsight.tools.triage_onset import Onset, find_onset
from chainsight.tools.triage_releases import MAX_RELEASES, parse_release_id
from chainsight.tools.triage_units import MAX_PATH, clean_text, format_duration, shown

__all__ = ["ATTEMPT_ATTRIBUTE", "from_spans"]

#: The attribute an app may set on a retried stage (``stage("model", attempt=2)``): the
#: attempt's number, 1 for the first. Repeated sibling stages are recognised without it.
ATTEMPT_ATTRIBUTE: Final = "attempt"


@dataclass
class _Span:
    """One line of the span file: what triage reads of a span, bounded and escaped."""

    trace_id: str
    end: float
    duration: float
    attributes: dict[str, str]
    fallback_event: bool
    span_id: str = ""
    parent_id: str = ""
    release: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The stage kind (``request`` for a request span)."""
        return self.attributes.get(n.CS_STAGE_KIND, "")

    @property
    def stage(self) -> str:
        """The stage name, or the request name for a request span."""
        return self.attributes.get(n.CS_STAGE_NAME) or self.attributes.get(n.CS_REQUEST_NAME, "")

    @property
    def outcome(self) -> str:
        """``ok``, ``error``, ``degraded`` ... as recorded."""
        return self.attributes.get(n.CS_OUTCOME, "")

    @property
    def fault(self) -> str | None:
        """The fault domain recorded on the span, if it is a known one."""
        value = self.attributes.get(n.CS_FAULT)
        return value if value in n.FAULTS else None


def _component(span: _Span, domain: str) -> str:
    attrs = span.attributes
    if domain == n.FAULT_PROVIDER:
        provider = attrs.get(n.GEN_AI_PROVIDER_NAME)
        model = attrs.get(n.GEN_AI_REQUEST_MODEL)
        if provider and model:
            return f"{provider}/{model}"
        return provider or model or span.stage
    if domain == n.FAULT_VECTOR_STORE:
        system = attrs.get(n.DB_SYSTEM_NAME)
        collection = attrs.get(n.DB_COLLECTION_NAME)
        if system and collection:
            return f"{system}/{collection}"
        return system or attrs.get(n.GEN_AI_DATA_SOURCE_ID) or span.stage
    return span.stage


# The attributes triage reads; the rest of a span is dropped as it is read, so memory grows with
# the number of spans, not with what a writer put in them.
_READ_ATTRIBUTES: Final = frozenset(
    {
        n.CS_STAGE_KIND,
        n.CS_STAGE_NAME,
        n.CS_REQUEST_NAME,
        n.CS_OUTCOME,
        n.CS_FAULT,
        n.CS_ERROR_ORIGIN,
        n.CS_FALLBACK_TO,
        n.ERROR_TYPE,
        n.GEN_AI_PROVIDER_NAME,
        n.GEN_AI_REQUEST_MODEL,
        n.GEN_AI_DATA_SOURCE_ID,
        n.DB_SYSTEM_NAME,
        n.DB_COLLECTION_NAME,
        n.CS_RELEASE_ID,
        n.CS_REQUEST_COST_USD,
        ATTEMPT_ATTRIBUTE,
    }
)
#: Release parts (``chainsight.release.<key>``) kept per span: a release has a handful.
_MAX_RELEASE_KEYS: Final = 16
#: Characters of a span or parent id kept: OpenTelemetry's are 16 hex digits.
_MAX_SPAN_ID: Final = 64
#: Longest trace id kept: OpenTelemetry's are 32 hex digits.
_MAX_TRACE_ID: Final = 128
#: Nanosecond times are read as a signed 64-bit integer is: 0 up to 2**63 (year 2262).
_MAX_NANOS: Final = 2**63

SKIP_NOT_SPAN: Final = "not a span object with trace_id and start and end times"
SKIP_BAD_TIME: Final = "start or end time not a number of ns from 0 to 2^63 (year 2262)"


def _nanos(value: object) -> int | None:
    """A time in nanoseconds as the exporter writes it (an integer; OTLP JSON writes a string
    of digits), or ``None`` when it is anything else or out of range."""
    if isinstance(value, str):
        value = int(value) if value.isascii() and value.isdigit() and len(value) <= 19 else None
    elif isinstance(value, float):
        value = int(value) if 0 <= value < _MAX_NANOS else None  # NaN fails the range too
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_NANOS:
        return value
    return None


def _attribute(value: object) -> str | None:
    """An attribute triage reads, as bounded, escaped text; ``None`` when it is not a scalar."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return clean_text(str(value))  # numbers are finite and short: the reader refused others
    return None


def _span(record: object) -> _Span | str:
    """The span one line holds, or the reason it is skipped."""
    if not isinstance(record, dict):
        return SKIP_NOT_SPAN
    trace_id = record.get("trace_id")
    if not isinstance(trace_id, str) or not 0 < len(trace_id) <= _MAX_TRACE_ID:
        return SKIP_NOT_SPAN
    if "start_time_unix_nano" not in record or "end_time_unix_nano" not in record:
        return SKIP_NOT_SPAN
    start = _nanos(record["start_time_unix_nano"])
    end = _nanos(record["end_time_unix_nano"])
    if start is None or end is None:
        return SKIP_BAD_TIME
    raw = record.get("attributes")
    attributes: dict[str, str] = {}
    if isinstance(raw, dict):
        for key in _READ_ATTRIBUTES & raw.keys():
            value = _attribute(raw[key])
            if value is not None:
                attributes[key] = value
    events = record.get("events")
    return _Span(
        trace_id=clean_text(trace_id),
        end=end / 1e9,
        duration=max(0.0, (end - start) / 1e9),
        attributes=attributes,
        fallback_event=isinstance(events, list)
        and any(isinstance(e, dict) and e.get("name") == n.EVENT_FALLBACK for e in events),
        span_id=_id(record.get("span_id")),
        parent_id=_id(record.get("parent_span_id")),
        release=_release_parts(raw) if isinstance(raw, dict) else {},
    )


def _id(value: object) -> str:
    """A span id as text (bounded, escaped); empty when absent or not text."""
    return clean_text(value[:_MAX_SPAN_ID]) if isinstance(value, str) else ""


def _release_parts(raw: Mapping[str, object]) -> dict[str, str]:
    """The ``chainsight.release.<key>`` attributes of a span but the id, a bounded number."""
    parts: dict[str, str] = {}
    for key, value in raw.items():
        if len(parts) >= _MAX_RELEASE_KEYS:
            break
        if isinstance(key, str) and key.startswith(n.CS_RELEASE_PREFIX) and key != n.CS_RELEASE_ID:
            text = _attribute(value)
            if text is not None:
                parts[clean_text(key[len(n.CS_RELEASE_PREFIX) :])] = text
    return parts


def _read_spans(path: str) -> tuple[list[_Span], Skipped]:
    """The spans of the file, and the lines skipped by reason."""
    spans: list[_Span] = []
    skipped = Skipped()
    try:
        with open(path, "rb") as handle:
            for number, record in read_json_lines(handle, skipped):
                span = _span(record)
                if isinstance(span, str):
                    skipped.add(span, number)
                else:
                    spans.append(span)
    except FileNotFoundError:
        raise TriageError(
            f"span file {shown(path, MAX_PATH)} does not exist; point --spans at the JSONL file "
            "your app writes with configure(exporter='jsonl:PATH')"
        ) from None
    except OSError as exc:
        raise TriageError(
            f"span file {shown(path, MAX_PATH)} cannot be read ({exc.strerror or exc}); check "
            "the path and its permissions"
        ) from None
    return spans, skipped


def _origin_errors(trace: list[_Span]) -> list[_Span]:
    """Failed spans where the failure started (each counted once, at its origin).

    A ``degraded`` span with a fault handled a failure with a fallback: it counts too, with
    what failed.
    """
    failed = [
        s for s in trace if s.outcome in FAILED_OUTCOMES and s.fault and s.kind != REQUEST_KIND
    ]
    origins = [s for s in failed if s.attributes.get(n.CS_ERROR_ORIGIN) in (None, "", s.stage)]
    return origins or failed


def _fill_requests(period: Period, roots: list[_Span], traces: Mapping[str, list[_Span]]) -> None:
    for root in roots:
        period.requests += 1
        trace = traces.get(root.trace_id, [])
        touched = _fill_origins(period, root, trace)
        fell_back = _fill_fallbacks(period, root, trace, touched)
        seen = _user_domain(root, touched, fell_back)
        if seen is not None:
            (period.failed if root.outcome == n.OUTCOME_ERROR else period.degraded)[seen] += 1
        for span in _origin_errors(trace):
            domain = span.fault or n.FAULT_APP
            if domain != seen:
                period.absorbed_failures[domain] += 1
        for domain in touched - {seen}:
            period.absorbed[domain] += 1
        for span in _retried(trace):
            period.retries[span.fault or domain_of_kind(span.kind)] += 1
        for domain in touched | fell_back:
            period.affected[domain] += 1
        for domain in fell_back:
            period.fallbacks[domain] += 1
        _fill_release(period, root, trace, touched | fell_back, seen)


def _fill_origins(period: Period, root: _Span, trace: list[_Span]) -> set[str]:
    """Count the request's failures where they started; the domains they touched."""
    touched: set[str] = set()
    for span in _origin_errors(trace):
        domain = span.fault or n.FAULT_APP
        touched.add(domain)
        period.errors[domain] += 1
        period.error_types[domain][span.attributes.get(n.ERROR_TYPE, "unknown")] += 1
        period.stages[domain][span.stage] += 1
        period.components[domain][_component(span, domain)] += 1
    root_fault = root.fault
    if root.outcome in FAILED_OUTCOMES and root_fault and root_fault not in touched:
        touched.add(root_fault)
        period.errors[root_fault] += 1
        period.error_types[root_fault][root.attributes.get(n.ERROR_TYPE, "unknown")] += 1
        origin = root.attributes.get(n.CS_ERROR_ORIGIN)
        if origin:
            period.stages[root_fault][origin] += 1
            if root_fault in (n.FAULT_APP, n.FAULT_MODEL):
                period.components[root_fault][origin] += 1
    return touched


def _fill_fallbacks(period: Period, root: _Span, trace: list[_Span], touched: set[str]) -> set[str]:
    """The domains whose failure a fallback replaced, and the stages that fell back.

    A request-level ``fallback()`` carries the fault of the failure it replaced (the request
    span's ``chainsight.fault``); without one, the one domain the request's failures touched.
    """
    fell_back: set[str] = set()
    for span in trace:
        if not (span.attributes.get(n.CS_FALLBACK_TO) or span.fallback_event):
            continue
        if span.kind == REQUEST_KIND:
            alone = next(iter(touched)) if len(touched) == 1 else None
            domain = root.fault or alone or n.FAULT_APP
        else:
            domain = span.fault or domain_of_kind(span.kind)
        fell_back.add(domain)
        period.fallback_stages[domain][span.stage] += 1
    return fell_back


def _user_domain(root: _Span, touched: set[str], fell_back: set[str]) -> str | None:
    """The domain of what the user saw fail or degrade; ``None`` when they were served."""
    if root.outcome == n.OUTCOME_ERROR:
        candidates = touched
    elif root.outcome == n.OUTCOME_DEGRADED:
        candidates = fell_back or touched
    else:
        return None
    if root.fault:
        return root.fault
    return min(candidates, key=n.FAULTS.index) if candidates else n.FAULT_APP


def _retried(trace: list[_Span]) -> list[_Span]:
    """The repeated attempts of a stage: later siblings of one name, or ``attempt`` > 1."""
    first: dict[tuple[str, str], _Span] = {}
    again: list[_Span] = []
    for span in sorted(trace, key=lambda s: s.end - s.duration):
        if span.kind in ("", REQUEST_KIND):
            continue
        key = (span.parent_id, span.stage)
        attempt = span.attributes.get(ATTEMPT_ATTRIBUTE, "1")
        if key in first or (attempt.isascii() and attempt.isdigit() and int(attempt[:6]) > 1):
            again.append(span)
        first.setdefault(key, span)
    return again


def _fill_release(
    period: Period, root: _Span, trace: list[_Span], affected: set[str], seen: str | None
) -> None:
    """Add the request to its release's figures."""
    release = root.attributes.get(n.CS_RELEASE_ID) or "unknown"
    figures = period.releases.get(release)
    if figures is None:
        if len(period.releases) >= MAX_RELEASES:
            return  # a writer inventing releases must not grow the table without bound
        keys = root.release or parse_release_id(release)
        figures = period.releases[release] = ReleaseFigures(release, keys, latency=SampleLatency())
    figures.requests += 1
    for domain in affected:
        figures.affected[domain] += 1
    if seen is not None and root.outcome == n.OUTCOME_ERROR:
        figures.failed[seen] += 1
    if any(
        s.kind == "validation" and s.attributes.get(n.ERROR_TYPE) == n.ERR_VALIDATION_FAILED
        for s in trace
    ):
        figures.validation_failures += 1
    if isinstance(figures.latency, SampleLatency):
        figures.latency.add(root.duration)
    cost = _number(root.attributes.get(n.CS_REQUEST_COST_USD))
    if cost is not None:
        figures.cost_usd = (figures.cost_usd or 0.0) + cost


def _number(text: str | None) -> float | None:
    """A finite non-negative number from an attribute's text, else ``None``."""
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return value if 0 <= value < math.inf else None


def _fill_latency(period: Period, spans: Iterable[_Span]) -> None:
    latency: dict[str, SampleLatency] = {}
    by_stage: dict[str, dict[str, SampleLatency]] = defaultdict(dict)
    by_component: dict[str, dict[str, SampleLatency]] = defaultdict(dict)
    for span in spans:
        domain = domain_of_kind(span.kind)
        latency.setdefault(domain, SampleLatency()).add(span.duration)
        by_stage[domain].setdefault(span.stage, SampleLatency()).add(span.duration)
        if domain in (n.FAULT_PROVIDER, n.FAULT_VECTOR_STORE):
            key = _component(span, domain)
            by_component[domain].setdefault(key, SampleLatency()).add(span.duration)
    period.latency, period.stage_latency, period.component_latency = (
        latency,
        by_stage,
        by_component,
    )


def from_spans(
    path: str,
    *,
    window: float | None = None,
    baseline: float | None = None,
    at: float | None = None,
) -> Report:
    """Triage a JSONL span file: the last ``window`` seconds against the time before it.

    ``at`` (Unix seconds) is the end of the window; the default is the last span's end. Without
    ``window`` the window starts where the incident began, found by change-point detection on
    each domain's error and latency series (``triage_onset``); without a clear change it is a
    quarter of the file's time range, at most 10 minutes. Without ``baseline`` the baseline is
    everything before the window.
    """
    spans, skipped = _read_spans(path)
    _check_readable(path, spans, skipped)
    end = at if at is not None else max(s.end for s in spans)
    first = min(s.end - s.duration for s in spans)
    traces: dict[str, list[_Span]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    roots = sorted((s for s in spans if s.kind == REQUEST_KIND), key=lambda s: s.end)
    stages = [s for s in spans if s.kind and s.kind != REQUEST_KIND]
    onset = _onset([r for r in roots if r.end <= end], traces, stages, end)
    if window is None:
        window = min(600.0, max((end - first) / 4, 1e-3))
        if onset is not None:
            window = end - onset.at
    start = end - window
    base_start = start - baseline if baseline is not None else -math.inf

    now, before = Period(), Period()
    _fill_requests(now, [r for r in roots if start < r.end <= end], traces)
    _fill_requests(before, [r for r in roots if base_start < r.end <= start], traces)
    _fill_latency(now, (s for s in stages if start < s.end <= end))
    _fill_latency(before, (s for s in stages if base_start < s.end <= start))
    if now.requests < MIN_REQUESTS:
        found = int(now.requests)
        count = "no request" if not found else f"only {found} request{'s' if found > 1 else ''}"
        raise TriageError(
            f"span file {shown(path, MAX_PATH)} has {count} that finished in the "
            f"{format_duration(window)} before "
            f"{datetime.fromtimestamp(end, tz=timezone.utc).isoformat()}{_also(skipped)}; "
            f"triage needs {MIN_REQUESTS:.0f} to judge: widen --window or move --at"
        )
    return analyse(
        now,
        before,
        source=f"spans {clean_text(path, MAX_PATH)}",
        at=end,
        window_seconds=window,
        baseline_seconds=baseline,
        skipped=skipped,
        onset=onset,
    )


def _onset(
    roots: list[_Span], traces: Mapping[str, list[_Span]], stages: list[_Span], end: float
) -> Onset | None:
    """Where the incident began, from the requests and stage calls up to ``end``.

    An onset that would leave fewer than :data:`MIN_REQUESTS` requests on either side is no
    onset: such a window cannot be judged, nor compared with so short a past.
    """
    requests = [(r.end, frozenset(_touched(r, traces.get(r.trace_id, [])))) for r in roots]
    calls = sorted((s.end, domain_of_kind(s.kind), s.duration) for s in stages if s.end <= end)
    onset = find_onset(requests, calls, n.FAULTS)
    if onset is None:
        return None
    after = sum(1 for r in roots if r.end > onset.at)
    if min(after, len(roots) - after) < MIN_REQUESTS:
        return None
    return onset


def _touched(root: _Span, trace: list[_Span]) -> set[str]:
    """The domains a failure or a fallback touched in one request (for the onset search)."""
    touched = {span.fault or n.FAULT_APP for span in _origin_errors(trace)}
    if root.outcome in FAILED_OUTCOMES and root.fault:
        touched.add(root.fault)
    return touched


def _also(skipped: Skipped) -> str:
    return f" ({skipped.summary()})" if skipped.total else ""


def _check_readable(path: str, spans: list[_Span], skipped: Skipped) -> None:
    """Raise :class:`TriageError` when the file holds no request to judge, saying why."""
    where = f"span file {shown(path, MAX_PATH)}"
    if not spans and not skipped.total:
        raise TriageError(
            f"{where} is empty; point --spans at the JSONL file your app writes with "
            "configure(exporter='jsonl:PATH'), after it has served requests"
        )
    if not spans:
        raise TriageError(
            f"{where} holds no readable span ({skipped.summary()}); check that it is the JSONL "
            "file configure(exporter='jsonl:PATH') writes (docs/spans-jsonl.md)"
        )
    if not any(s.kind == REQUEST_KIND for s in spans):
        raise TriageError(
            f"{where} holds no request spans ({n.CS_STAGE_KIND}='request') among "
            f"{len(spans)} spans{_also(skipped)}; wrap each unit of work in "
            "chainsight.request(...) and make sure the exporter is 'jsonl:PATH'"
        )
