"""Triage source: the Prometheus HTTP API (``/api/v1/query``).

Each period is a set of ``increase()`` instant queries over chainsight's counters and
histograms: requests by fault and outcome, stage errors, GenAI calls, fallbacks and latency
buckets.

The server's answers are input like a span file: bodies are bounded, label values escaped and
capped (:func:`clean_text`), and a sample value that is not a finite count in range counts as 0,
so a broken or hostile server makes triage wrong at worst, never crash or drive the terminal.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from chainsight import _names as n
from chainsight.errors import TriageError
from chainsight.export.metric_families import StageDuration
from chainsight.tools.triage_analysis import MIN_REQUESTS, Report, analyse
from chainsight.tools.triage_figures import (
    FAILED_OUTCOMES,
    REQUEST_KIND,
    BucketLatency,
    Period,
    ReleaseFigures,
    Tally,
    domain_of_kind,
)
from chainsight.tools.triage_next import resolution_note
from chainsight.tools.triage_onset import Onset, binned_error_change
from chainsight.tools.triage_releases import MAX_RELEASES, parse_release_id
from chainsight.tools.triage_units import MAX_PATH, clean_text, format_duration, shown

__all__ = ["from_prometheus"]

# error.type values of a model-call failure that are the app's or the model's, not the provider's.
_NOT_PROVIDER_ERRORS: Final = frozenset(
    {
        n.ERR_BAD_REQUEST,
        n.ERR_AUTH,
        n.ERR_NOT_FOUND,
        n.ERR_CONTEXT_LENGTH,
        n.ERR_VALIDATION_FAILED,
        n.ERR_EMPTY_OUTPUT,
        n.ERR_CONTENT_FILTER,
        n.ERR_MALFORMED_OUTPUT,
        n.ERR_BUDGET_EXCEEDED,
    }
)


#: Bytes of one answer. A triage query sums by a few labels; past this it is not Prometheus.
_MAX_BODY: Final = 64 << 20
#: Largest sample value kept: an increase() of requests or calls over any window is far below.
#: Past it (or NaN, infinite, negative) a value counts as 0, so sums stay finite.
_MAX_VALUE: Final = 1e15


_Sample = tuple[Mapping[str, str], float]


class _Prometheus:
    """A minimal client of ``/api/v1/query`` whose errors say which URL and what failed."""

    def __init__(self, url: str, timeout: float) -> None:
        if not re.match(r"^https?://[^/\s]+", url):
            raise TriageError(
                f"--prometheus {shown(url, MAX_PATH)} is not an HTTP URL; give the server's "
                "base URL, e.g. http://127.0.0.1:9090"
            )
        self.url = url.rstrip("/")
        #: The URL as messages and the report show it: bounded and escaped.
        self.name = clean_text(self.url, MAX_PATH)
        self.timeout = timeout

    def query(self, expr: str, at: float) -> list[_Sample]:
        """The instant vector ``expr`` evaluates to at ``at``; raise :class:`TriageError`."""
        result = self._result(expr, at, "vector")
        return [_sample(item) for item in result if isinstance(item, dict)]

    def query_series(self, expr: str, at: float) -> list[tuple[float, float]]:
        """The ``(time, value)`` points of the one series the range vector ``expr`` (a
        subquery) holds at ``at``, in time order; empty without a series."""
        result = self._result(expr, at, "matrix")
        if not result or not isinstance(result[0], dict):
            return []
        values = result[0].get("values")
        points = []
        for pair in values if isinstance(values, list) else []:
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (int, float)):
                points.append((float(pair[0]), _value(pair)))
        return sorted(points)

    def _result(self, expr: str, at: float, kind: str) -> list[Any]:
        """The ``result`` list of a query answering ``kind``; raise :class:`TriageError`."""
        params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        endpoint = f"{self.name}/api/v1/query"
        try:
            with urllib.request.urlopen(  # noqa: S310 - the scheme is checked in __init__
                f"{self.url}/api/v1/query?{params}", timeout=self.timeout
            ) as response:
                body = response.read(_MAX_BODY + 1)
        except urllib.error.HTTPError as exc:
            detail = _prometheus_error(exc.read(_MAX_ERROR_BODY))
            raise TriageError(
                f"Prometheus at {self.name} answered HTTP {exc.code} to {endpoint}"
                f"{': ' + detail if detail else ''} (query: {expr})"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = clean_text(str(getattr(exc, "reason", exc)))
            raise TriageError(
                f"cannot reach Prometheus at {self.name}: {reason}; check the URL and that "
                "Prometheus is running"
            ) from None
        if len(body) > _MAX_BODY:
            raise TriageError(
                f"Prometheus at {self.name} answered more than {_MAX_BODY >> 20} MiB to {expr}; "
                "is it a Prometheus server? Narrow --selector if it is"
            )
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: a body nested past the stack
            raise TriageError(
                f"{endpoint} did not answer JSON; is {self.name} a Prometheus server?"
            ) from None
        if not isinstance(payload, dict) or payload.get("status") != "success":
            detail = _prometheus_error(body) or "no error given"
            raise TriageError(f"Prometheus at {self.name} refused the query {expr}: {detail}")
        data = payload.get("data")
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(data, dict) or data.get("resultType") != kind:
            result = None
        if not isinstance(result, list):
            raise TriageError(
                f"Prometheus at {self.name} gave an unexpected answer to {expr} (not a "
                f"{'range' if kind == 'matrix' else 'instant'} vector); is it a Prometheus server?"
            )
        return result


#: Bytes of an error answer read for its message.
_MAX_ERROR_BODY: Final = 64 << 10


def _prometheus_error(body: bytes) -> str:
    """The error a Prometheus answer states, bounded and escaped for a message."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return clean_text(body.decode("utf-8", "replace").strip())
    if isinstance(payload, dict):
        kind, error = payload.get("errorType", ""), payload.get("error", "")
        return clean_text(f"{kind}: {error}".strip(": "))
    return ""


def _sample(item: Mapping[str, Any]) -> _Sample:
    """One series of an instant vector: its labels (bounded, escaped text) and its value."""
    metric = item.get("metric")
    labels = (
        {k: clean_text(v) for k, v in metric.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(metric, dict)
        else {}
    )
    return labels, _value(item.get("value"))


def _value(pair: object) -> float:
    """A sample's value (``[time, "text"]``); 0 when it is not a finite count in range."""
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        return 0.0
    try:
        value = float(pair[1][:64])  # a real value is a short decimal
    except ValueError:
        return 0.0
    return value if 0.0 <= value <= _MAX_VALUE else 0.0  # false for NaN too


def _le(text: str) -> float | None:
    """A bucket's upper bound from its ``le`` label; ``None`` when it is not one."""
    if text in ("+Inf", "Inf", "inf"):
        return math.inf
    try:
        bound = float(text[:64])
    except ValueError:
        return None
    return bound if 0.0 <= bound < math.inf else None


def _increase(metric: str, by: Sequence[str], selector: str, window: float) -> str:
    """What ``metric`` counted in the window, by ``by``, including the first count of a series
    born in it.

    chainsight creates a series when a label combination first occurs (the first provider
    error of a run), and ``increase()`` cannot see the count a series was born with: from a
    series whose samples read 1, 1, 1 it gives 0. A series that did not exist at the window's
    start (no sample in the 5 minutes before it) has counted from zero, so its first value is
    added to its increase.
    """
    series, span = f"{metric}{{{selector}}}", format_duration(window)
    born = f"(min_over_time({series}[{span}]) unless last_over_time({series}[5m] offset {span}))"
    grown = f"increase({series}[{span}])"
    return f"sum by ({', '.join(by)}) (({grown} + {born}) or {grown})"


_GENAI_BY: Final = (n.L_GEN_AI_PROVIDER_NAME, n.L_GEN_AI_REQUEST_MODEL)


@dataclass(frozen=True)
class _Increases:
    """The ``increase()`` queries of one period: the ``window`` seconds before ``at``."""

    client: _Prometheus
    selector: str
    at: float
    window: float

    def by(self, metric: str, labels: Sequence[str]) -> list[_Sample]:
        """``sum by (labels) (increase(metric{selector}[window]))`` at the end of the period."""
        return self.client.query(_increase(metric, labels, self.selector, self.window), self.at)


def _prometheus_period(client: _Prometheus, selector: str, at: float, window: float) -> Period:
    """The figures of the ``window`` seconds before ``at``, from chainsight's metrics."""
    period = Period()
    increases = _Increases(client, selector, at, window)
    _fill_requests(period, increases)
    _fill_release_figures(period, increases)
    _fill_stage_errors(period, increases)
    _fill_provider_components(period, increases)
    _fill_fallbacks(period, increases)
    _fill_bucket_latency(period, increases)
    return period


def _fill_requests(period: Period, increases: _Increases) -> None:
    """Requests finished, those that failed or fell back by the fault domain of the request,
    and the same by release."""
    labels_by = (n.L_FAULT, n.L_OUTCOME, n.L_RELEASE)
    for labels, value in increases.by(n.M_REQUESTS + "_total", labels_by):
        period.requests += value
        release = _release(period, labels.get(n.L_RELEASE) or "unknown")
        if release is not None:
            release.requests += value
        fault = labels.get(n.L_FAULT)
        outcome = labels.get(n.L_OUTCOME)
        if outcome not in FAILED_OUTCOMES or fault not in n.FAULTS:
            continue
        period.affected[fault] += value
        (period.failed if outcome == n.OUTCOME_ERROR else period.degraded)[fault] += value
        if release is not None:
            release.affected[fault] += value
            if outcome == n.OUTCOME_ERROR:
                release.failed[fault] += value
                if fault == n.FAULT_MODEL:
                    # The requests whose answer the model domain failed: validation failures
                    # for the most part (the stage metrics carry no release).
                    release.validation_failures += value


def _release(period: Period, release: str) -> ReleaseFigures | None:
    """The figures of ``release`` in ``period``, made on first use (bounded in number)."""
    figures = period.releases.get(release)
    if figures is None and len(period.releases) < MAX_RELEASES:
        figures = ReleaseFigures(release, parse_release_id(release), latency=BucketLatency())
        period.releases[release] = figures
    return figures


def _fill_release_figures(period: Period, increases: _Increases) -> None:
    """Request latency by release, and cost per release through ``chainsight_release_info``.

    The cost histogram carries no release: it is joined on ``job`` and ``instance`` with the
    release each target reports now, as the release dashboard does, so a target that changed
    release within the window counts all of its cost on the new one.
    """
    buckets = increases.by(n.M_REQUEST_DURATION + "_bucket", (n.L_RELEASE, "le"))
    for labels, value in buckets:
        figures = period.releases.get(labels.get(n.L_RELEASE) or "unknown")
        bound = _le(labels.get("le", "+Inf"))
        if figures is not None and bound is not None and isinstance(figures.latency, BucketLatency):
            figures.latency.add(bound, value)
    cost = (
        f"sum by ({n.L_RELEASE}) (increase({n.M_REQUEST_COST_USD}_sum{{{increases.selector}}}"
        f"[{format_duration(increases.window)}]) * on (job, instance) group_left "
        f"({n.L_RELEASE}) topk by (job, instance) (1, {n.M_RELEASE_INFO}_info))"
    )
    try:
        samples = increases.client.query(cost, increases.at)
    except TriageError:
        return  # the cost column is a courtesy: without it the verdict stands
    for labels, value in samples:
        figures = period.releases.get(labels.get(n.L_RELEASE) or "unknown")
        if figures is not None:
            figures.cost_usd = (figures.cost_usd or 0.0) + value


def _fill_stage_errors(period: Period, increases: _Increases) -> None:
    """Per domain: the stage its errors most likely started in, their types and components."""
    by_fault_request = Tally(period.affected)
    stage_errors = increases.by(
        n.M_STAGE_ERRORS + "_total", (n.L_STAGE, n.L_KIND, n.L_SYSTEM, n.L_FAULT, n.L_ERROR_TYPE)
    )
    per_stage: dict[str, Tally] = defaultdict(Tally)
    per_type: dict[tuple[str, str], Tally] = defaultdict(Tally)
    kinds: dict[str, str] = {}
    systems: dict[tuple[str, str], Tally] = defaultdict(Tally)
    for labels, value in stage_errors:
        fault = labels.get(n.L_FAULT)
        if fault not in n.FAULTS or value <= 0:
            continue
        stage = labels.get(n.L_STAGE, "")
        per_stage[fault][stage] += value
        per_type[(fault, stage)][labels.get(n.L_ERROR_TYPE, "unknown")] += value
        kinds[stage] = labels.get(n.L_KIND, "")
        if labels.get(n.L_SYSTEM):
            systems[(fault, stage)][labels[n.L_SYSTEM]] += value
    for fault, stages in per_stage.items():
        top_stage = _pick_stage(stages, kinds, fault)
        top_count = max(stages.values())
        period.stages[fault] = Tally({top_stage: top_count})
        period.errors[fault] = top_count
        period.affected[fault] = max(by_fault_request[fault], top_count)
        # Stage failures past the requests that failed or fell back with this fault were
        # retried or handled: the metrics cannot tell a retry that failed again from one that
        # recovered, so this is an upper bound (the span file counts them exactly).
        seen = period.failed[fault] + period.degraded[fault]
        period.absorbed_failures[fault] = max(0.0, top_count - seen)
        period.absorbed[fault] = min(period.absorbed_failures[fault], period.requests)
        period.error_types[fault] = per_type[(fault, top_stage)]
        if fault in (n.FAULT_VECTOR_STORE, n.FAULT_PROVIDER) and systems[(fault, top_stage)]:
            period.components[fault] = systems[(fault, top_stage)]
        else:
            period.components[fault] = Tally({top_stage: top_count})


def _fill_provider_components(period: Period, increases: _Increases) -> None:
    """The provider/model pairs behind the provider's errors, from the GenAI call counts."""
    calls = increases.by(
        n.M_GEN_AI_OPERATION_DURATION + "_count", (*_GENAI_BY, n.L_GEN_AI_ERROR_TYPE)
    )
    provider_errors: Tally = Tally()
    for labels, value in calls:
        error_type = labels.get(n.L_GEN_AI_ERROR_TYPE, "")
        if value > 0 and error_type and error_type not in _NOT_PROVIDER_ERRORS:
            provider_errors[_genai_component(labels)] += value
    if provider_errors:
        # The GenAI metric knows provider *and* model; the stage metric only its system label.
        period.components[n.FAULT_PROVIDER] = provider_errors


def _fill_fallbacks(period: Period, increases: _Increases) -> None:
    """Fallbacks by the domain of what failed, and the stages that fell back.

    A stage's fallback belongs to the domain of its kind. A request-level ``fallback()``
    (``kind="request"``) carries the fault of the failure it replaced on the request:
    ``chainsight_requests_total{outcome="degraded", fault=...}``. Those degraded requests that
    stage-level fallbacks do not explain are its; what is left, a fallback with no failure
    recorded, is the app's.
    """
    on_request: Tally = Tally()
    for labels, value in increases.by(n.M_FALLBACKS + "_total", (n.L_STAGE, n.L_KIND)):
        stage, kind = labels.get(n.L_STAGE, ""), labels.get(n.L_KIND, "")
        if kind == REQUEST_KIND:
            on_request[stage] += value
            continue
        domain = domain_of_kind(kind)
        period.fallbacks[domain] += value
        period.fallback_stages[domain][stage] += value
    left = sum(on_request.values())
    request_stage = _top_name(on_request)
    for fault in sorted(n.FAULTS, key=lambda f: -period.degraded[f]):
        share = min(max(0.0, period.degraded[fault] - period.fallbacks[fault]), left)
        if share > 0:
            period.fallbacks[fault] += share
            period.fallback_stages[fault][request_stage] += share
            left -= share
    if left > 0:
        period.fallbacks[n.FAULT_APP] += left
        period.fallback_stages[n.FAULT_APP][request_stage] += left
    for domain, count in period.fallbacks.items():
        period.affected[domain] = max(period.affected[domain], count)


def _top_name(tally: Tally) -> str:
    ranked = tally.most_common(1)
    return ranked[0][0] if ranked else ""


def _fill_bucket_latency(period: Period, increases: _Increases) -> None:
    """Latency histograms by domain and stage, and the provider's by provider/model."""
    latency: dict[str, BucketLatency] = {}
    by_stage: dict[str, dict[str, BucketLatency]] = defaultdict(dict)
    by_component: dict[str, BucketLatency] = {}
    by_system: dict[str, BucketLatency] = {}
    stage_buckets = increases.by(
        n.M_STAGE_DURATION + "_bucket", (n.L_STAGE, n.L_KIND, n.L_SYSTEM, "le")
    )
    for labels, value in stage_buckets:
        domain = domain_of_kind(labels.get(n.L_KIND, ""))
        bound = _le(labels.get("le", "+Inf"))
        if bound is None:
            continue
        latency.setdefault(domain, BucketLatency()).add(bound, value)
        by_stage[domain].setdefault(labels.get(n.L_STAGE, ""), BucketLatency()).add(bound, value)
        if domain == n.FAULT_VECTOR_STORE and labels.get(n.L_SYSTEM):
            # The stage metrics name the vector store by its system: the component of a slow one.
            by_system.setdefault(labels[n.L_SYSTEM], BucketLatency()).add(bound, value)
    genai_buckets = increases.by(n.M_GEN_AI_OPERATION_DURATION + "_bucket", (*_GENAI_BY, "le"))
    for labels, value in genai_buckets:
        bound = _le(labels.get("le", "+Inf"))
        if bound is not None:
            by_component.setdefault(_genai_component(labels), BucketLatency()).add(bound, value)
    period.latency, period.stage_latency = latency, by_stage
    period.component_latency = {
        n.FAULT_PROVIDER: by_component,
        n.FAULT_VECTOR_STORE: by_system,
    }


def _pick_stage(stages: Mapping[str, float], kinds: Mapping[str, str], domain: str) -> str:
    """The stage most affected by ``domain``'s errors, from per-stage error counts.

    An error passes through every enclosing stage and each counts it, so counts tie; among the
    stages within 5% of the top count, one whose kind belongs to the domain wins (the retrieval
    stage for a vector store fault), since it is most likely where the error started.
    """
    top = max(stages.values())
    close = [stage for stage, count in stages.items() if count >= 0.95 * top]
    close.sort(key=lambda stage: (domain_of_kind(kinds.get(stage, "")) != domain, -stages[stage]))
    return close[0]


def _genai_component(labels: Mapping[str, str]) -> str:
    provider = labels.get(n.L_GEN_AI_PROVIDER_NAME, "")
    model = labels.get(n.L_GEN_AI_REQUEST_MODEL, "")
    return f"{provider}/{model}" if provider and model else provider or model or "unknown"


def from_prometheus(
    url: str,
    *,
    window: float = 600.0,
    baseline: float = 3600.0,
    at: float | None = None,
    selector: str = "",
    timeout: float = 10.0,
) -> Report:
    """Triage from Prometheus: ``increase()`` over the last ``window`` vs the ``baseline`` before.

    ``selector`` holds extra label matchers (``job="bot",namespace="prod"``) added to every
    query. Raises :class:`TriageError` when Prometheus is unreachable, refuses a query, has no
    chainsight series or saw no request finish in the window.
    """
    client = _Prometheus(url, timeout)
    when = at if at is not None else time.time()
    selector = selector.strip().strip("{}").strip()
    # A range function, not an instant selector: after a target stops, staleness markers hide
    # its series from instant queries, and looking back at an incident must still work.
    present = client.query(
        f"count(count_over_time({n.M_REQUESTS}_total{{{selector}}}[{format_duration(window)}]))",
        when,
    )
    if not present:
        where = f" matching {{{selector}}}" if selector else ""
        raise TriageError(
            f"Prometheus at {client.name} has no {n.M_REQUESTS}_total series{where}: it is "
            "empty or does not scrape a chainsight app. Check its targets page "
            f"({client.name}/targets) and that the app serves /metrics "
            "(configure(metrics_port=...))"
        )
    now = _prometheus_period(client, selector, when, window)
    if now.requests < MIN_REQUESTS:
        count = "no request" if now.requests <= 0 else f"only {now.requests:.1f} requests"
        raise TriageError(
            f"Prometheus at {client.name} has chainsight series but {count} finished in the "
            f"last {format_duration(window)}; triage needs {MIN_REQUESTS:.0f} to judge. Widen "
            "--window or check that the app is receiving requests"
        )
    before = _prometheus_period(client, selector, when - window, baseline)
    report = analyse(
        now,
        before,
        source=f"prometheus {client.name}",
        at=when,
        window_seconds=window,
        baseline_seconds=baseline,
    )
    report.notes += _resolution_notes(report, now, before)
    # When it began is a courtesy (a server without subqueries): without it the verdict stands.
    with contextlib.suppress(TriageError):
        report.onset = _onset(client, selector, when, window + baseline, report)
    return report


#: Time bins the onset search splits the two periods into, at most.
_ONSET_BINS: Final = 120
#: Scrapes per bin at least: increase() needs two samples, and more make it steadier.
_SCRAPES_PER_BIN: Final = 4


def _onset(
    client: _Prometheus, selector: str, at: float, span: float, report: Report
) -> Onset | None:
    """When the error fault began: a change point in the failing share of requests.

    From the first error fault's domain: the errors of the stage its evidence names (else the
    requests failed or degraded with that fault) over all requests, per time bin over both
    periods (subqueries), searched as the span file's onset is (``triage_onset``). It is
    reported, never moves the window. Latency-only faults get none (buckets per bin are too
    coarse to split on).
    """
    fault = next((f for f in report.faults if "errors" in report.domains[f.domain].signals), None)
    if fault is None:
        return None
    requests = f"{n.M_REQUESTS}_total"
    samples = client.query(
        f"max(count_over_time({requests}{{{selector}}}[{format_duration(span)}]))", at
    )
    scrapes = samples[0][1] if samples else 0.0
    if scrapes < 2 * _SCRAPES_PER_BIN:
        return None
    step = max(span / _ONSET_BINS, span / scrapes * _SCRAPES_PER_BIN)
    step = max(1.0, round(step))
    # The failures counted where they start (the stage the evidence names) when it is known:
    # they include the ones retries absorbed, so a small incident stands out sooner.
    stage = report.domains[fault.domain].stage
    if stage:
        failing = f"{n.M_STAGE_ERRORS}_total"
        matchers: tuple[str, ...] = (f"{n.L_STAGE}={json.dumps(stage)}",)
    else:
        failing, matchers = requests, (f'{n.L_OUTCOME}=~"error|degraded"',)
    bad_selector = ", ".join(
        part for part in (selector, *matchers, f'{n.L_FAULT}="{fault.domain}"') if part
    )

    def series(metric: str, sel: str) -> dict[float, float]:
        inner = f"sum(increase({metric}{{{sel}}}[{format_duration(step)}]))"
        expr = f"{inner}[{format_duration(span)}:{format_duration(step)}]"
        return dict(client.query_series(expr, at))

    totals, bad = series(requests, selector), series(failing, bad_selector)
    ends = sorted(totals)
    change = binned_error_change(ends, [bad.get(t, 0.0) for t in ends], [totals[t] for t in ends])
    if change is None:
        return None
    return Onset(change[0], fault.domain, "errors", change[1])


def _resolution_notes(report: Report, now: Period, before: Period) -> list[str]:
    """Where the latency buckets are too coarse to tell the change p95 shows (no signal)."""
    notes = []
    for domain, figures in report.domains.items():
        if "latency" in figures.signals:
            continue
        dist, base = now.latency.get(domain), before.latency.get(domain)
        note = resolution_note(
            domain,
            dist if isinstance(dist, BucketLatency) else None,
            base if isinstance(base, BucketLatency) else None,
            StageDuration.buckets,
        )
        if note is not None:
            notes.append(note)
    return notes
