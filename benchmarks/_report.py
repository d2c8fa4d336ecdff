"""The printed table, the targets verdicts and ``results.json``."""

from __future__ import annotations

import json
import os
import platform
import statistics
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


def _paired_ratio(micro: Mapping[str, CaseResult], case: str, base: str) -> float:
    """Median over rounds of (case / base), each round's pair measured together."""
    pairs = zip(micro[case].ratios, micro[base].ratios, strict=True)
    return statistics.median(a / b for a, b in pairs)


def _paired_median(micro: Mapping[str, CaseResult], case: str, base: str) -> float:
    """Median over rounds of (case - base), each round's pair measured together."""
    pairs = zip(micro[case].ratios, micro[base].ratios, strict=True)
    return statistics.median(a - b for a, b in pairs)


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
    # The "unchanged within noise (<= 5 % or 100 us)". Judged against both a healthy
    # collector (what an outage replaces) and the in-memory pipeline, which encodes nothing and
    # so is the stricter baseline: an outage must cost nothing over either.
    baselines = {"healthy OTLP": outage["p99_healthy_ms"], "in-memory": outage["p99_dropping_ms"]}

    def outage_verdict(kind: str, baseline: str) -> dict[str, Any]:
        p99, base = outage[f"p99_{kind}_ms"], baselines[baseline]
        allowance = max(0.05 * base, 0.1)
        what = (
            "unchanged within noise (<= 5 % or 100 us) vs a healthy collector"
            if baseline == "healthy OTLP"
            # Not in the issue: the same allowance against a pipeline that encodes nothing.
            else "also within 5 % / 100 us of the in-memory pipeline (ours, stricter)"
        )
        return {
            "target": f"exporter {kind}: request p99 {what}",
            "measured": f"p99 {p99:.2f} ms vs {base:.2f} ms: {p99 - base:+.2f} ms "
            f"(allowance {allowance:.2f} ms)",
            "met": p99 - base <= allowance,
        }

    in_request = _paired_ratio(micro, "cs_sync_parent", "R_parent")
    chain6 = _paired_ratio(micro, "cs_chain6", "R_chain6")
    chain6_manual = _paired_ratio(micro, "cs_chain6", "manual_chain6")
    model = _paired_ratio(micro, "cs_model_usage", "R2")
    cs_import = imports["chainsight"]
    otlp_import = imports["chainsight_otlp"]
    chain = concurrent["ai_chain"]
    otlp_extra = micro["cs_otlp_metrics"].median_ratio - micro["cs_sync"].median_ratio
    # Paired within each round: the SDK call (~30 R) varies more between rounds than the
    # 0.1 R judged, and both cases of a round share its conditions.
    integration_extra = _paired_median(micro, "cs_openai_integration", "cs_openai_by_hand")
    wrapper_extra = _paired_median(micro, "cs_openai_stub_integration", "cs_openai_stub_by_hand")
    return [
        {
            "target": "openai integration <= hand-written stage + 0.1 R",
            "measured": f"{integration_extra:+.2f} R through the real client (integration "
            f"{micro['cs_openai_integration'].median_ratio:.2f} R, by hand "
            f"{micro['cs_openai_by_hand'].median_ratio:.2f} R, the SDK call alone "
            f"{micro['openai_call'].median_ratio:.2f} R); the wrapper alone "
            f"{wrapper_extra:+.2f} R",
            "met": integration_extra <= 0.1 and wrapper_extra <= 0.1,
        },
        {
            "target": "six-stage request <= 1.1 x the same six raw spans",
            "measured": f"{chain6:.2f} x six raw spans ({chain6_manual:.2f} x the same spans "
            "with metrics by hand)",
            "met": chain6 <= 1.1,
        },
        {
            "target": "a request span alone <= 1.1 R",
            "measured": f"{micro['cs_request'].median_ratio:.2f} R",
            "met": micro["cs_request"].median_ratio <= 1.1,
        },
        {
            "target": "complete stage, with its metrics, <= 1.0 R",
            "measured": f"{micro['cs_sync'].median_ratio:.2f} R (by hand: "
            f"{micro['manual_stage'].median_ratio:.2f} R)",
            "met": micro["cs_sync"].median_ratio <= 1.0,
        },
        {
            # A child span costs the SDK more than a root span: judged against the raw child.
            "target": "stage in a request <= 1.0 x R_parent",
            "measured": f"{in_request:.2f} x R_parent",
            "met": in_request <= 1.0,
        },
        {
            "target": "model stage with usage and cost <= 1.0 x R2 (the same by hand)",
            "measured": f"{model:.2f} x R2 (R2 = {micro['R2'].median_ratio:.2f} R)",
            "met": model <= 1.0,
        },
        {
            "target": "sync/async/generator overheads within 10 % of each other",
            "measured": f"spread {spread * 100:.0f} % "
            + " / ".join(f"{k} {v / 1000:.1f} us" for k, v in variants.items()),
            "met": spread <= 0.10,
        },
        {
            "target": "disabled <= 100 ns per call",
            "measured": f"{micro['cs_disabled'].median_ns:.0f} ns (bare call "
            f"{micro['bare_call'].median_ns:.0f} ns)",
            "met": micro["cs_disabled"].median_ns <= 100,
        },
        {
            "target": "sampled out <= 0.5 R (metrics still recorded)",
            "measured": f"{micro['cs_sampled_out'].median_ratio:.2f} R",
            "met": micro["cs_sampled_out"].median_ratio <= 0.5,
        },
        {
            "target": "OTLP metrics on: no second per-call recording cost above 0.15 R",
            "measured": f"{otlp_extra:+.2f} R over the same stage with OTLP metrics off",
            "met": otlp_extra <= 0.15,
        },
        outage_verdict("down", "healthy OTLP"),
        outage_verdict("slow", "healthy OTLP"),
        outage_verdict("down", "in-memory"),
        outage_verdict("slow", "in-memory"),
        {
            "target": f"{chain['requests']} concurrent requests x 6 stages (AI chain, "
            f"{chain['io_per_request_ms']:g} ms of I/O per request): throughput >= 85 % of without",
            "measured": f"{chain['ratio']:.0%} (raw OTel spans {chain['raw_otel_ratio']:.0%})",
            "met": chain["ratio"] >= 0.85,
        },
        {
            "target": "the same: throughput >= 0.95 x with raw OpenTelemetry spans",
            "measured": f"{chain['ratio_to_raw_otel']:.2f} x raw OTel spans",
            "met": chain["ratio_to_raw_otel"] >= 0.95,
        },
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
        {
            "target": 'import + configure(exporter="otlp:http") <= 0.3 s',
            "measured": f"{otlp_import['inside_s']:.3f} s, +{otlp_import['added_rss_mib']:.1f} MiB",
            "met": otlp_import["inside_s"] <= 0.3,
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
    add(
        "a whole request, paired per round: six-stage request "
        f"{_paired_ratio(micro, 'cs_chain6', 'R_chain6'):.2f} x six raw spans, "
        f"{_paired_ratio(micro, 'cs_chain6', 'manual_chain6'):.2f} x the same by hand with metrics;"
        f" model stage + usage {_paired_ratio(micro, 'cs_model_usage', 'R2'):.2f} x R2; "
        f"stage in a request {_paired_ratio(micro, 'cs_sync_parent', 'R_parent'):.2f} x R_parent"
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
        f"p99 over each kind's requests pooled: off {outage['p99_off_ms']:.2f} ms, in-memory "
        f"{outage['p99_dropping_ms']:.2f} ms, healthy OTLP {outage['p99_healthy_ms']:.2f} ms "
        f"(healthy phases' spread {outage['p99_noise_ms']:.2f}), "
        f"down {outage['p99_down_ms']:.2f} ms, slow {outage['p99_slow_ms']:.2f} ms"
    )
    add("")
    add("concurrency — asyncio requests x 6 stages, each worker back to back (steady state)")
    for name, row in concurrent.items():
        io = row["io_per_stage_ms"]
        shape = (
            f"{next(iter(io.values())):g} ms I/O per stage"
            if len(set(io.values())) == 1
            else "I/O " + "/".join(f"{v:g}" for v in io.values()) + " ms"
        )
        add(
            f"  {name:<9} {row['requests']} concurrent, {shape:<28} without "
            f"{row['without_rps']:>6.0f} req/s, chainsight {row['with_rps']:>5.0f} "
            f"({row['ratio']:.2f}), raw OTel spans {row['raw_otel_rps']:>5.0f} "
            f"({row['raw_otel_ratio']:.2f}); chainsight / raw OTel {row['ratio_to_raw_otel']:.2f}"
        )
    add("")
    add("import cost (fresh process)   statement s   process s   RSS MiB   +process s   +RSS MiB")
    for name in ("bare", "dependencies", "chainsight", "chainsight_otlp"):
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
