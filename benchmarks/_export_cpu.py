"""Export CPU per span: the SDK's OTLP encoder against chainsight's, through the real exporter.

``python -m benchmarks._export_cpu [--rounds N] [--spans N]`` runs this case alone; the suite
(``python -m benchmarks``) runs it too.

The spans are chainsight's own: realistic requests (request, retrieval, rerank, prompt, model
with usage and cost, validation) recorded once, in memory. Each measurement hands the same
spans, in batches of 64, 256 or 512, to an ``OTLPSpanExporter`` that sends them over HTTP to a
real OTLP receiver in another process (``benchmarks._sink``, which decodes every request with
the official protobuf classes), and takes the CPU time this process spent: ``process_time``,
not wall time, because on a loaded machine the wall clock measures the neighbours. The two
encoders alternate within each round, in a shuffled order, and the ratio is taken per round.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import chainsight
from benchmarks._harness import BenchmarkError
from chainsight.export.otlp_encode import SpanEncoder
from chainsight.export.otlp_http import FastOTLPSpanExporter

__all__ = ["BATCH_SIZES", "export_cpu", "format_lines", "verdict"]

BATCH_SIZES: Final = (64, 256, 512)
ENCODERS: Final = ("sdk", "chainsight")
# The target: at most half the SDK encoder's CPU per span (about 40 us here).
TARGET_RATIO: Final = 0.5


@chainsight.traced_stage("retrieval", name="kb_search", system="qdrant", collection="kb")
def _retrieve(query: str) -> list[str]:
    chainsight.current_stage().record_documents(
        count=3, scores=[0.91, 0.72, 0.4], ids=["kb-1", "kb-7", "kb-9"]
    )
    return ["kb-1", "kb-7", "kb-9"]


@chainsight.traced_stage("rerank", name="rerank", provider="cohere", model="rerank-v3.5")
def _rerank(docs: list[str]) -> list[str]:
    return docs[:2]


@chainsight.traced_stage("prompt", name="build_prompt", prompt_name="answer", prompt_version="7")
def _prompt(docs: list[str]) -> str:
    return "answer using " + ", ".join(docs)


@chainsight.traced_stage("model", name="generate", provider="openai", model="gpt-4o")
def _model(prompt: str, turn: int) -> str:
    chainsight.current_stage().record_usage(
        input_tokens=800 + turn % 97, output_tokens=120 + turn % 31, cached_input_tokens=512
    )
    return prompt.upper()


@chainsight.traced_stage("validation", name="check_answer", validator="json_schema")
def _validate(answer: str) -> None:
    chainsight.current_stage().record_validation(passed=bool(answer))


def capture_spans(count: int) -> list[ReadableSpan]:
    """At least ``count`` finished spans of realistic six-span requests, recorded in memory."""
    memory = InMemorySpanExporter()
    chainsight.configure(
        service="support-bot",
        environment="bench",
        release={"model": "gpt-4o-2024-08-06", "prompt": "answer@7", "retrieval": "kb@3"},
        exporter=memory,
        registry=CollectorRegistry(),
    )
    try:
        turn = 0
        while len(memory.get_finished_spans()) < count:
            with chainsight.request("answer_ticket", tenant=f"t{turn % 5}", feature="copilot"):
                docs = _rerank(_retrieve("how do I reset my password?"))
                _validate(_model(_prompt(docs), turn))
            turn += 1
        chainsight.shutdown(timeout=5.0)
    finally:
        chainsight.reset()
    return list(memory.get_finished_spans())[:count]


def _batches(spans: Sequence[ReadableSpan], size: int) -> list[Sequence[ReadableSpan]]:
    return [spans[i : i + size] for i in range(0, len(spans) - size + 1, size)]


def _cpu_per_span(export: Callable[[Sequence[ReadableSpan]], object], batches: list[Any]) -> float:
    """Process CPU microseconds per span to hand ``batches`` to ``export``, one after another."""
    spans = sum(len(b) for b in batches)
    started = time.process_time()
    for batch in batches:
        if export(batch) is not SpanExportResult.SUCCESS:
            raise BenchmarkError("the OTLP sink refused a batch; the measurement is void")
    return (time.process_time() - started) / spans * 1e6


def _encode_only(encoder: str) -> Callable[[Sequence[ReadableSpan]], object]:
    if encoder == "sdk":

        def sdk(batch: Sequence[ReadableSpan]) -> object:
            encode_spans(batch).SerializePartialToString()
            return SpanExportResult.SUCCESS

        return sdk
    ours = SpanEncoder()

    def chainsight_encoder(batch: Sequence[ReadableSpan]) -> object:
        ours.encode(batch)
        return SpanExportResult.SUCCESS

    return chainsight_encoder


def export_cpu(*, rounds: int, spans: int, smoke: bool = False) -> dict[str, Any]:
    """Export CPU per span for each encoder and batch size, ``rounds`` shuffled rounds each."""
    from benchmarks._scenarios import _sink

    recorded = capture_spans(spans)
    per_size = {size: _batches(recorded, size) for size in BATCH_SIZES}
    found: dict[str, Any] = {"spans_per_measurement": len(recorded), "rounds": rounds}
    sent = 0
    with _sink() as (port, received):
        url = f"http://127.0.0.1:{port}/v1/traces"
        exporters: dict[str, SpanExporter] = {
            "sdk": OTLPSpanExporter(endpoint=url, timeout=10),
            "chainsight": FastOTLPSpanExporter(endpoint=url, timeout=10),
        }
        if not smoke and not getattr(exporters["chainsight"], "fast", False):
            raise BenchmarkError("this SDK lacks what the fast exporter reuses; nothing to compare")
        for size, batches in per_size.items():
            rows: dict[str, list[float]] = {f"{e}_us": [] for e in ENCODERS}
            rows.update({f"{e}_encode_only_us": [] for e in ENCODERS})
            for exporter in exporters.values():  # connections open, caches warm
                exporter.export(batches[0])
                sent += len(batches[0])
            for _ in range(rounds):
                order = list(ENCODERS)
                random.shuffle(order)
                for name in order:
                    rows[f"{name}_us"].append(_cpu_per_span(exporters[name].export, batches))
                    sent += sum(len(b) for b in batches)
                    rows[f"{name}_encode_only_us"].append(
                        _cpu_per_span(_encode_only(name), batches)
                    )
            ratios = [c / s for c, s in zip(rows["chainsight_us"], rows["sdk_us"], strict=True)]
            found[f"batch_{size}"] = {
                **{k: [round(v, 2) for v in vals] for k, vals in rows.items()},
                "ratio": [round(r, 3) for r in ratios],
                **{f"median_{k}": round(statistics.median(v), 2) for k, v in rows.items()},
                "median_ratio": round(statistics.median(ratios), 3),
            }
        for exporter in exporters.values():
            exporter.shutdown()
    found["spans_sent"] = sent
    found["spans_received"] = received[0] if received else None
    if found["spans_received"] != sent:
        raise BenchmarkError(
            f"the OTLP sink decoded {found['spans_received']} spans of the {sent} sent"
        )
    return found


def format_lines(found: Any) -> list[str]:
    """The report's lines for this case."""
    lines = [
        "export CPU per span (us, process CPU, OTLP/HTTP to a receiver in another process; "
        "median of rounds, encoding alone in brackets)"
    ]
    for size in BATCH_SIZES:
        row = found[f"batch_{size}"]
        lines.append(
            f"  batch {size:>3}: SDK {row['median_sdk_us']:6.1f} "
            f"[{row['median_sdk_encode_only_us']:5.1f}]  chainsight "
            f"{row['median_chainsight_us']:6.1f} [{row['median_chainsight_encode_only_us']:5.1f}]"
            f"  ratio {row['median_ratio']:.2f} (rounds {min(row['ratio']):.2f}-"
            f"{max(row['ratio']):.2f})"
        )
    return lines


def verdict(found: Any) -> dict[str, Any]:
    """The issue's target, judged at chainsight's default batch size (64) and at 512."""
    ratios = {size: found[f"batch_{size}"]["median_ratio"] for size in (64, 512)}
    ours = {size: found[f"batch_{size}"]["median_chainsight_us"] for size in (64, 512)}
    return {
        "target": f"export CPU per span <= {TARGET_RATIO} x the SDK encoder's (OTLP/HTTP)",
        "measured": ", ".join(
            f"batch {s}: {ours[s]:.1f} us, {ratios[s]:.2f} x the SDK" for s in ratios
        ),
        "met": all(r <= TARGET_RATIO for r in ratios.values()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run this case alone and print its lines and the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks._export_cpu")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--spans", type=int, default=2048)
    args = parser.parse_args(argv)
    found = export_cpu(rounds=args.rounds, spans=args.spans)
    print("\n".join(format_lines(found)))
    judged = verdict(found)
    print(f"  [{'met' if judged['met'] else 'MISSED':>6}] {judged['target']}: {judged['measured']}")
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
