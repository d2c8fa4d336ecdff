"""The printed table, the targets verdicts and ``results.json``."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from benchmarks._harness import CaseResult, percentile

__all__ = [
    "SCHEMA",
    "environment",
    "format_report",
    "judge",
    "timestamp",
    "write_results",
]

SCHEMA: Final = "chainsight.bench/1"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, Any]:
    """The machine and library versions a result belongs to."""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            dist: _version(dist)
            for dist in (
                "chainsight",
                "opentelemetry-api",
                "opentelemetry-sdk",
                "opentelemetry-exporter-otlp-proto-http",
                "prometheus-client",
            )
        },
    }


def _net_ns(micro: Mapping[str, CaseResult], case: str, bare: str) -> float:
    # From the per-round ratios, which cancel the noise the raw medians carry.
    ref = micro["R"].median_ns
    return (micro[case].median_ratio - micro[bare].median_ratio) * ref


def judge(
    micro: Mapping[str, CaseResult],
    outage: Mapping[str, Any],
    concurrent: Mapping[str, Mapping[str, Any]],
    imports: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Each target of the benchmark issue with the measured value and whether it was met."""
    variants = {
        "sync": _net_ns(micro, "cs_sync", "bare_call"),
        "async": _net_ns(micro, "cs_async", "bare_async"),
        "generator": _net_ns(micro, "cs_generator", "bare_generator"),
    }
    spread = (max(variants.values()) - min(variants.values())) / min(variants.values())
    # "Unchanged within noise": the p99 may move as much as it moved between the healthy
    # phases, or 10 % of it, whichever is larger.
    allowance = max(outage["p99_noise_ms"], 0.1 * outage["p99_healthy_ms"])
    in_request = micro["cs_sync_parent"].median_ratio / micro["R_parent"].median_ratio
    cs_import = imports["chainsight"]
    return [
        {
            "target": "complete stage <= 1.2 R (aim <= 1.0 R)",
            "measured": f"{micro['cs_sync'].median_ratio:.2f} R",
            "met": micro["cs_sync"].median_ratio <= 1.2,
        },
        {
            # Not in the issue: the same target for a stage inside a request, against the raw
            # child span it replaces (a child span costs the SDK more than a root span).
            "target": "stage in a request <= 1.2 x R_parent",
            "measured": f"{in_request:.2f} x R_parent",
            "met": in_request <= 1.2,
        },
        {
            "target": "sync/async/generator overheads within 10 % of each other",
            "measured": f"spread {spread * 100:.0f} % "
            + " / ".join(f"{k} {v / 1000:.1f} us" for k, v in variants.items()),
            "met": spread <= 0.10,
        },
        {
            "target": "disabled < 1 us per call",
            "measured": f"{micro['cs_disabled'].median_ns:.0f} ns",
            "met": micro["cs_disabled"].median_ns < 1000,
        },
        {
            "target": "sampled out <= 0.5 R (metrics still recorded)",
            "measured": f"{micro['cs_sampled_out'].median_ratio:.2f} R",
            "met": micro["cs_sampled_out"].median_ratio <= 0.5,
        },
        {
            "target": "exporter down: request p99 unchanged within noise",
            "measured": f"{outage['p99_delta_down_ms']:+.2f} ms (allowance {allowance:.2f} ms)",
            "met": outage["p99_delta_down_ms"] <= allowance,
        },
        {
            "target": "exporter slow: request p99 unchanged within noise",
            "measured": f"{outage['p99_delta_slow_ms']:+.2f} ms (allowance {allowance:.2f} ms)",
            "met": outage["p99_delta_slow_ms"] <= allowance,
        },
        *(
            {
                "target": f"{row['requests']} concurrent requests x 6 stages, "
                f"{row['io_per_stage_ms']:g} ms I/O per stage: throughput >= 85 % of without",
                "measured": f"{row['ratio'] * 100:.0f} %",
                "met": row["ratio"] >= 0.85,
            }
            for row in concurrent.values()
        ),
        {
            "target": "import + configure() <= 0.3 s",
            "measured": f"{cs_import['inside_s']:.3f} s",
            "met": cs_import["inside_s"] <= 0.3,
        },
        {
            "target": "import + configure() <= +30 MiB RSS",
            "measured": f"+{cs_import['added_rss_mib']:.1f} MiB",
            "met": cs_import["added_rss_mib"] <= 30,
        },
    ]


def format_report(
    *,
    smoke: bool,
    env: Mapping[str, Any],
    micro: Mapping[str, CaseResult],
    outage: Mapping[str, Any],
    concurrent: Mapping[str, Mapping[str, Any]],
    imports: Mapping[str, Any],
    verdicts: list[dict[str, Any]],
) -> str:
    """The human-readable report printed at the end of a run."""
    lines: list[str] = []
    add = lines.append
    add(
        f"chainsight benchmarks ({'SMOKE: one run each, timings meaningless' if smoke else 'full'})"
        f" — Python {env['python']}, {env['cpus']} CPU {env['cpu']}, "
        f"otel-sdk {env['versions']['opentelemetry-sdk']}, "
        f"prometheus-client {env['versions']['prometheus-client']}"
    )
    ref = micro["R"].median_ns
    add(f"R = {ref / 1000:.2f} us per call (raw SDK span, 10 attributes, BSP, dropping exporter)")
    add("")
    add(f"{'case':<22} {'ns/call':>10} {'p25..p75':>17} {'x R':>6}  what")
    for res in micro.values():
        spread = f"{_p(res, 25):.0f}..{_p(res, 75):.0f}"
        add(
            f"{res.name:<22} {res.median_ns:>10.0f} {spread:>17} {res.median_ratio:>6.2f}  "
            f"{res.description}"
        )
    add("")
    add(f"exporter outage — {outage['fake_request']}; {outage['load']}")
    add(f"{'phase':<16} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'lost':>7} "
        f"{'SDK logs':>8}  shutdown")  # fmt: skip
    for name, phase in outage["phases"].items():
        shutdown = (
            f"{phase['shutdown_s']:.2f} s ({'done' if phase['shutdown_finished'] else 'cut'})"
            if "shutdown_s" in phase
            else "-"
        )
        lost = phase.get("spans_dropped_or_failed")
        add(
            f"{name:<16} {phase['requests']:>8} {phase['p50_ms']:>8.2f} {phase['p99_ms']:>8.2f} "
            f"{phase['max_ms']:>8.2f} {'-' if lost is None else f'{lost:.0f}':>7} "
            f"{phase['sdk_log_lines']:>8}  {shutdown}"
        )
    add(
        f"median p99: healthy {outage['p99_healthy_ms']:.2f} ms (spread "
        f"{outage['p99_noise_ms']:.2f}), down {outage['p99_down_ms']:.2f} ms, "
        f"slow {outage['p99_slow_ms']:.2f} ms"
    )
    add("")
    add("concurrency — asyncio requests x 6 stages, all in flight at once")
    for name, row in concurrent.items():
        add(
            f"  {name:<15} {row['requests']} requests, {row['io_per_stage_ms']:>3g} ms I/O per "
            f"stage: without {row['without_rps']:>6.0f} req/s, chainsight {row['with_rps']:>5.0f}"
            f" ({row['ratio']:.2f}), raw OTel spans {row['raw_otel_rps']:>5.0f} "
            f"({row['raw_otel_ratio']:.2f}); chainsight / raw OTel {row['ratio_to_raw_otel']:.2f}"
        )
    add("")
    add("import cost (fresh process)   statement s   process s   RSS MiB   +process s   +RSS MiB")
    for name in ("bare", "dependencies", "chainsight"):
        row = imports[name]
        add(
            f"{name:<29} {row['inside_s']:>11.3f} {row['process_s']:>11.3f} "
            f"{row['rss_mib']:>9.1f} {row.get('added_process_s', 0.0):>12.3f} "
            f"{row.get('added_rss_mib', 0.0):>10.1f}"
        )
    add("")
    add("targets" + (" (smoke run: not judged)" if smoke else ""))
    for verdict in verdicts:
        mark = "-" if smoke else ("met" if verdict["met"] else "MISSED")
        add(f"  [{mark:>6}] {verdict['target']}: {verdict['measured']}")
    return "\n".join(lines)


def _p(res: CaseResult, pct: float) -> float:
    return percentile(res.ns_per_call, pct)


def write_results(path: Path, payload: Mapping[str, Any]) -> None:
    """Write the results JSON atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"schema": SCHEMA, **payload}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def timestamp() -> str:
    """Now, UTC, ISO 8601."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
