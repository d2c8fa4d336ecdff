"""Triage source: a JSONL span file (``configure(exporter='jsonl:PATH')``).

Each request span ending in a period is one request; its trace's failed spans say which fault
domains it touched, where the failure started and in which component. Stage spans give exact
latencies.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from chainsight import _names as n
from chainsight.errors import TriageError
from chainsight.tools.triage_analysis import Report, analyse
from chainsight.tools.triage_figures import (
    FAILED_OUTCOMES,
    REQUEST_KIND,
    Period,
    SampleLatency,
    domain_of_kind,
)
from chainsight.tools.triage_units import format_duration

__all__ = ["from_spans"]


@dataclass
class _Span:
    """One line of the span file: what triage reads of a span."""

    trace_id: str
    end: float
    duration: float
    attributes: dict[str, Any]
    events: list[dict[str, Any]]

    @property
    def kind(self) -> str:
        """The stage kind (``request`` for a request span)."""
        return str(self.attributes.get(n.CS_STAGE_KIND, ""))

    @property
    def stage(self) -> str:
        """The stage name, or the request name for a request span."""
        return str(
            self.attributes.get(n.CS_STAGE_NAME) or self.attributes.get(n.CS_REQUEST_NAME, "")
        )

    @property
    def outcome(self) -> str:
        """``ok``, ``error``, ``degraded`` ... as recorded."""
        return str(self.attributes.get(n.CS_OUTCOME, ""))

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
        return str(provider or model or span.stage)
    if domain == n.FAULT_VECTOR_STORE:
        system = attrs.get(n.DB_SYSTEM_NAME)
        collection = attrs.get(n.DB_COLLECTION_NAME)
        if system and collection:
            return f"{system}/{collection}"
        return str(system or attrs.get(n.GEN_AI_DATA_SOURCE_ID) or span.stage)
    return span.stage


def _read_spans(path: str) -> list[_Span]:
    spans: list[_Span] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    attributes = record.get("attributes") or {}
                    events = record.get("events") or []
                    start = int(record["start_time_unix_nano"])
                    end = int(record["end_time_unix_nano"])
                    spans.append(
                        _Span(
                            trace_id=str(record["trace_id"]),
                            end=end / 1e9,
                            duration=max(0.0, (end - start) / 1e9),
                            attributes=attributes if isinstance(attributes, dict) else {},
                            events=[e for e in events if isinstance(e, dict)],
                        )
                    )
                except (ValueError, KeyError, TypeError, AttributeError):
                    # A line cut short by a writer that is still running, or not a span at all:
                    # skip it rather than refuse the whole file.
                    continue
    except FileNotFoundError:
        raise TriageError(
            f"span file {path!r} does not exist; point --spans at the JSONL file your app writes "
            "with configure(exporter='jsonl:PATH')"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TriageError(f"span file {path!r} cannot be read: {exc}") from None
    return spans


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
        touched: set[str] = set()
        fell_back: set[str] = set()
        for span in _origin_errors(trace):
            domain = span.fault or n.FAULT_APP
            touched.add(domain)
            period.errors[domain] += 1
            period.error_types[domain][str(span.attributes.get(n.ERROR_TYPE, "unknown"))] += 1
            period.stages[domain][span.stage] += 1
            period.components[domain][_component(span, domain)] += 1
        root_fault = root.fault
        if root.outcome in FAILED_OUTCOMES and root_fault and root_fault not in touched:
            touched.add(root_fault)
            period.errors[root_fault] += 1
            period.error_types[root_fault][str(root.attributes.get(n.ERROR_TYPE, "unknown"))] += 1
            origin = root.attributes.get(n.CS_ERROR_ORIGIN)
            if origin:
                period.stages[root_fault][str(origin)] += 1
                if root_fault in (n.FAULT_APP, n.FAULT_MODEL):
                    period.components[root_fault][str(origin)] += 1
        for span in trace:
            if span.attributes.get(n.CS_FALLBACK_TO) or any(
                event.get("name") == n.EVENT_FALLBACK for event in span.events
            ):
                if span.kind == REQUEST_KIND:
                    fell_back.add(root_fault or n.FAULT_APP)
                else:
                    fell_back.add(domain_of_kind(span.kind))
        for domain in touched | fell_back:
            period.affected[domain] += 1
        for domain in fell_back:
            period.fallbacks[domain] += 1


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
    ``window`` it is a quarter of the file's time range, at most 10 minutes; without
    ``baseline`` the baseline is everything before the window.
    """
    spans = _read_spans(path)
    roots = [s for s in spans if s.kind == REQUEST_KIND]
    if not roots:
        raise TriageError(
            f"span file {path!r} holds no request spans ({n.CS_STAGE_KIND}='request') among "
            f"{len(spans)} spans; wrap each unit of work in chainsight.request(...) and make sure "
            "the exporter is 'jsonl:PATH'"
        )
    end = at if at is not None else max(s.end for s in spans)
    first = min(s.end - s.duration for s in spans)
    if window is None:
        window = min(600.0, max((end - first) / 4, 1e-3))
    start = end - window
    base_start = start - baseline if baseline is not None else -math.inf

    traces: dict[str, list[_Span]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    now, before = Period(), Period()
    _fill_requests(now, [r for r in roots if start < r.end <= end], traces)
    _fill_requests(before, [r for r in roots if base_start < r.end <= start], traces)
    stages = [s for s in spans if s.kind and s.kind != REQUEST_KIND]
    _fill_latency(now, (s for s in stages if start < s.end <= end))
    _fill_latency(before, (s for s in stages if base_start < s.end <= start))
    if now.requests == 0:
        raise TriageError(
            f"span file {path!r} has no request that finished in the {format_duration(window)} "
            f"before {datetime.fromtimestamp(end, tz=timezone.utc).isoformat()}; widen --window "
            "or move --at"
        )
    return analyse(
        now,
        before,
        source=f"spans {path}",
        at=end,
        window_seconds=window,
        baseline_seconds=baseline,
    )
