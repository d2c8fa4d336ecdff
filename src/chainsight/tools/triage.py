"""``chainsight triage``: name the failing fault domain from Prometheus or a JSONL span file.

Both sources are reduced to the same figures for two periods, *now* (the last window) and the
*baseline* (the time before it): requests finished, requests touched by an error or a fallback
in each fault domain, error types, the stage and component they came from, and stage latency
distributions. :func:`analyse` turns the two periods into a :class:`Report` whose verdict names
the most likely failing domain, or ``healthy``. ``docs/triage.md`` explains the rules.

Exit codes: 0 healthy, 1 a fault was found, 2 usage, file or connection errors. Input is
untrusted (span files come from many services, Prometheus may be anyone's): nothing read from it
reaches the terminal unescaped, and bad input is exit 2 with one line on stderr, never a
traceback or a 1 that would read as "fault found".

This module is the command line and the public face of triage; the work is done in
``triage_spans`` and ``triage_prometheus`` (the two sources), ``triage_figures`` (what a period
is reduced to), ``triage_analysis`` (the verdict) and ``triage_units`` (durations and formats).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import TextIO

from chainsight import _names as n
from chainsight.config.settings import env_bool
from chainsight.errors import TriageError
from chainsight.tools.triage_analysis import DomainFigures, Fault, Report, analyse
from chainsight.tools.triage_figures import (
    BucketLatency,
    LatencyDistribution,
    Period,
    SampleLatency,
    Tally,
    bucket_quantile,
    domain_of_kind,
)
from chainsight.tools.triage_prometheus import from_prometheus
from chainsight.tools.triage_releases import release_table
from chainsight.tools.triage_spans import from_spans
from chainsight.tools.triage_units import (
    MAX_UNIX_SECONDS,
    clean_text,
    format_count,
    format_duration,
    format_percent,
    format_seconds,
    parse_duration,
    shown,
    terminal_safe,
)

__all__ = [
    "BucketLatency",
    "DomainFigures",
    "Fault",
    "LatencyDistribution",
    "Period",
    "Report",
    "SampleLatency",
    "Tally",
    "TriageError",
    "add_arguments",
    "analyse",
    "bucket_quantile",
    "domain_of_kind",
    "format_duration",
    "from_prometheus",
    "from_spans",
    "parse_duration",
    "render_text",
    "run",
    "triage",
]

# --- command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``chainsight triage`` options to ``parser``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--prometheus",
        metavar="URL",
        help="base URL of a Prometheus that scrapes chainsight metrics, e.g. http://127.0.0.1:9090",
    )
    source.add_argument(
        "--spans", metavar="PATH", help="a JSONL span file (configure(exporter='jsonl:PATH'))"
    )
    parser.add_argument(
        "--window",
        metavar="DURATION",
        help="the recent period to judge (PromQL duration: 30s, 10m, 1h). Default: 10m for "
        "Prometheus; for a span file a quarter of its time range, at most 10m",
    )
    parser.add_argument(
        "--baseline",
        metavar="DURATION",
        help="the period before the window to compare with. Default: 1h for Prometheus; "
        "everything before the window for a span file",
    )
    parser.add_argument(
        "--at",
        metavar="TIME",
        help="end of the window (Unix seconds or RFC 3339). Default: now for Prometheus, the "
        "last span for a span file. Use it to look back at an incident",
    )
    parser.add_argument(
        "--selector",
        default="",
        metavar="MATCHERS",
        help="extra PromQL label matchers for every query, e.g. 'job=\"support-bot\"'",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="HTTP timeout per Prometheus query (default 10)",
    )
    parser.add_argument(
        "--by",
        choices=("release",),
        help="also print a table by release: requests, error ratio by domain, p95 latency, "
        "cost per request and validation failures, now and in the baseline",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


def triage(args: argparse.Namespace) -> Report:
    """Run the triage the parsed ``args`` ask for; raise :class:`TriageError` on bad input."""
    window = parse_duration(args.window) if args.window else None
    baseline = parse_duration(args.baseline) if args.baseline else None
    at = _parse_time(args.at) if args.at else None
    if args.spans:
        return from_spans(args.spans, window=window, baseline=baseline, at=at)
    if not 0 < args.timeout <= _MAX_TIMEOUT:  # false for NaN too
        raise TriageError(
            f"--timeout must be a positive number of seconds up to {_MAX_TIMEOUT:.0f}, got "
            f"{args.timeout}; the default is 10"
        )
    return from_prometheus(
        args.prometheus,
        window=window or 600.0,
        baseline=baseline or 3600.0,
        at=at,
        selector=args.selector,
        timeout=args.timeout,
    )


#: Longest --timeout per Prometheus query; past a day it is a typo, not a slow server.
_MAX_TIMEOUT = 86400.0
#: Characters of the one error line; its values are bounded already, this bounds the rest.
_MAX_ERROR_LINE = 2000


def run(args: argparse.Namespace) -> int:
    """``chainsight triage``: print the report; exit 0 healthy, 1 fault found, 2 cannot judge."""
    try:
        report = triage(args)
    except TriageError as exc:
        _fail(str(exc))
        return 2
    except Exception as exc:
        # A bug of ours on input nobody foresaw. Exit 1 would read as "fault found" and a
        # traceback buries the message: say it in one line and exit 2, "cannot judge". Our own
        # tests set CHAINSIGHT_RAISE_INTERNAL_ERRORS so such bugs fail loudly there.
        if env_bool(n.ENV_RAISE_INTERNAL):
            raise
        _fail(
            f"internal error {type(exc).__name__}: {exc}; this is a bug in chainsight, please "
            "report it with the command and the input that caused it"
        )
        return 2
    if args.json:
        # Every string in the report is escaped and bounded; ensure_ascii (the default) keeps
        # the output ASCII whatever the terminal's encoding.
        _write(sys.stdout, json.dumps(report.to_dict(), indent=2))
    else:
        by = getattr(args, "by", None)
        _write(sys.stdout, terminal_safe(render_text(report, by_release=by == "release")))
    return 0 if report.healthy else 1


def _fail(message: str) -> None:
    """The one error line on stderr: escaped, newlines included, so it stays one line."""
    _write(sys.stderr, "chainsight triage: error: " + clean_text(message, _MAX_ERROR_LINE))


def _write(stream: TextIO, text: str) -> None:
    """Print ``text``; characters the stream's encoding lacks become escapes, not an error."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream)


def _parse_time(text: str) -> float:
    """Parse ``--at``: Unix seconds or an ISO 8601 / RFC 3339 timestamp, 1970 to 2262."""
    try:
        value = float(text)
    except ValueError:
        value = _parse_timestamp(text)
    if not 0 <= value < MAX_UNIX_SECONDS:  # false for NaN too
        raise TriageError(
            f"--at {shown(text)} is not a time triage can read; give a time from 1970 to 2262, "
            "as Unix seconds (1718000000) or an RFC 3339 timestamp (2024-06-10T06:13:20Z)"
        )
    return value


def _parse_timestamp(text: str) -> float:
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    except (ValueError, OverflowError):
        raise TriageError(
            f"--at {shown(text)} is not a time; give Unix seconds (1718000000) or an RFC 3339 "
            "timestamp (2024-06-10T06:13:20Z)"
        ) from None


# --- the human report ---------------------------------------------------------------------


def render_text(report: Report, *, by_release: bool = False) -> str:
    """The human report: what users saw, a table per fault domain (and per release with
    ``by_release``), the verdict line and the next steps."""
    when = datetime.fromtimestamp(report.at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    base = (
        f"the {format_duration(report.baseline_seconds)} before"
        if report.baseline_seconds
        else "everything before"
    )
    lines = [
        f"chainsight triage - {report.source}",
        f"window: last {format_duration(report.window_seconds)} to {when} "
        f"({format_count(report.requests)} requests); baseline: {base} "
        f"({format_count(report.requests_baseline)} requests)",
        *report.skipped.report_lines(),
        report.users_line(),
        "",
        f"{'domain':<13}{'errors now':>11}{'baseline':>10}{'users':>8}{'absorbed':>10}  "
        f"{'p95 now':>8}{'baseline':>10}{'fallbacks':>11}  top error types / most affected",
    ]
    lines += [_row(figures) for figures in report.domains.values()]
    if by_release:
        lines += ["", *release_table(report.releases, report.releases_baseline)]
    # The verdict stays the last line (`| tail -1`); what to do next comes just above it.
    lines += ["", *[f"note: {note}" for note in report.notes]]
    for fault in report.faults:
        if fault.next is not None:
            lines += [f"next for {fault.domain}:", *fault.next.lines()]
    lines += [report.verdict_line()]
    return "\n".join(line for i, line in enumerate(lines) if line or lines[i - 1])


def _row(figures: DomainFigures) -> str:
    """One domain's line of the table."""
    types = ", ".join(f"{t} {format_count(c)}" for t, c in figures.top_error_types) or "-"
    where = figures.stage or "-"
    if figures.component and figures.component != figures.stage:
        where += f" ({figures.component})"
    errors = format_percent(figures.error_ratio)
    errors_base = format_percent(figures.error_ratio_baseline)
    p95, p95_base = (
        format_seconds(figures.p95_seconds),
        format_seconds(figures.p95_seconds_baseline),
    )
    fallbacks = format_percent(figures.fallback_rate)
    users = format_percent(figures.impact.seen)
    absorbed = format_percent(figures.impact.absorbed)
    return (
        f"{figures.domain:<13}{errors:>11}{errors_base:>10}{users:>8}{absorbed:>10}  "
        f"{p95:>8}{p95_base:>10}{fallbacks:>11}  {types} / {where}"
    )
