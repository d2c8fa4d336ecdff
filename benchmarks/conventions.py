"""What the conventions cost per call: the v1.41 cache-write alias, OpenInference, content.

``python -m benchmarks.conventions [--smoke] [--rounds N] [--output PATH]``: the numbers in
docs/conventions.md. R is the reference of ``python -m benchmarks`` (a raw OpenTelemetry SDK
span with ten attributes, batch processor, dropping exporter). The cases:

* ``R+1``: R with one more integer attribute: what the alias costs on a span written by hand;
* ``model``: a chainsight model stage recording Anthropic usage with cache reads and writes,
  which emits ``gen_ai.usage.cache_write.input_tokens`` *and* the v1.41 name;
* ``model_no_alias``: the same stage with the alias folded onto the current name (the same
  code path, one attribute fewer), so ``model - model_no_alias`` is the alias alone;
* ``model_openinference``: ``conventions=("otel", "openinference")``;
* ``model_content``: capture on, OpenInference on, a three-message prompt and its reply
  recorded with ``record_content`` (shaping, redaction and flattening included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

os.environ.setdefault("CHAINSIGHT_RAISE_INTERNAL_ERRORS", "1")

from prometheus_client import CollectorRegistry

import chainsight
from benchmarks._harness import BenchmarkError, Case, CaseResult, run_interleaved, run_once
from benchmarks._micro import R_ATTRIBUTES, REFERENCE, SPAN_NAME, Pipeline
from chainsight import _names as n

_ALIAS: Final = n.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
_PROMPT: Final = [
    {"role": "system", "content": "You answer support tickets."},
    {"role": "user", "content": "Where is order 1234? My email is a@example.com."},
    {"role": "assistant", "content": "Let me check."},
]
_REPLY: Final = [{"role": "assistant", "content": "It shipped yesterday."}]


class _Suite:
    def __init__(self) -> None:
        self.pipeline = Pipeline()
        self.registry = CollectorRegistry()
        self.tracer = self.pipeline.provider.get_tracer("bench.reference")
        self.active: tuple[object, ...] | None = None

    def use(self, alias: bool, **settings: Any) -> Callable[[], None]:
        key = (alias, *sorted(settings.items()))

        def setup() -> None:
            # The alias folded onto the current name: the same dict write, one attribute less.
            n.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = (  # type: ignore[misc]
                _ALIAS if alias else n.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS
            )
            if self.active != key:
                chainsight.configure(
                    tracer_provider=self.pipeline.provider, registry=self.registry, **settings
                )
                self.active = key

        return setup

    def raw(self, extra: int) -> Callable[[int], None]:
        attrs = dict(R_ATTRIBUTES)
        for i in range(extra):
            attrs[f"{_ALIAS}.{i}"] = 1000
        tracer = self.tracer

        def run(loops: int) -> None:
            for _ in range(loops):
                with tracer.start_as_current_span(SPAN_NAME, attributes=attrs):
                    pass

        return run

    def model(self, content: bool) -> Callable[[int], None]:
        def run(loops: int) -> None:
            for _ in range(loops):
                with chainsight.stage(
                    "model", provider="anthropic", model="claude-sonnet-4-5"
                ) as s:
                    if content:
                        s.record_content(input_messages=_PROMPT, output_messages=_REPLY)
                    s.record_usage(
                        input_tokens=3100,
                        output_tokens=50,
                        cached_input_tokens=2000,
                        cache_write_input_tokens=1000,
                    )

        return run

    def check(
        self, setup: Callable[[], None], alias: bool, names: Sequence[str]
    ) -> Callable[[], None]:
        def check() -> None:
            setup()
            self.model(content="input.value" in names)(1)
            self.pipeline.flush()
            span = self.pipeline.exporter.last
            attrs = dict(span.attributes or {}) if span is not None else {}
            missing = [name for name in names if name not in attrs]
            if missing or (_ALIAS in attrs) != alias:
                raise BenchmarkError(f"the model span lacks {missing} or has the alias wrongly")

        return check

    def cases(self) -> list[Case]:
        oi = {"conventions": ("otel", "openinference")}
        base = (n.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,)
        plain, no_alias = self.use(True), self.use(False)
        with_oi = self.use(True, **oi)
        content = self.use(True, capture_content=True, **oi)
        shown = (*base, "input.value", "llm.input_messages.0.message.content")
        return [
            Case(REFERENCE, "raw OTel span, ten attributes", self.raw(0)),
            Case("R+1", "raw OTel span, eleven attributes", self.raw(1)),
            Case("model", "model stage, cache writes under both names", self.model(False),
                 plain, self.check(plain, True, base)),
            Case("model_no_alias", "model stage, current name only", self.model(False),
                 no_alias, self.check(no_alias, False, base)),
            Case("model_openinference", "model stage + OpenInference", self.model(False),
                 with_oi, self.check(with_oi, True, (*base, n.OI_LLM_TOKEN_COUNT_CACHE_WRITE))),
            Case("model_content", "+ capture on, record_content", self.model(True),
                 content, self.check(content, True, shown)),
        ]  # fmt: skip

    def close(self) -> None:
        n.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = _ALIAS  # type: ignore[misc]
        chainsight.reset()
        self.pipeline.close()


def _table(results: dict[str, CaseResult]) -> str:
    lines = ["| case | ns/call (median) | ratio to R (median) |", "|---|---:|---:|"]
    for result in results.values():
        lines.append(f"| {result.name} | {result.median_ns:,.0f} | {result.median_ratio:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the cases (interleaved rounds, medians) and print a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conventions")
    parser.add_argument("--smoke", action="store_true", help="check each case, one call each")
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    suite = _Suite()
    try:
        cases = suite.cases()
        if args.smoke:
            results = run_once(cases, REFERENCE)
        else:
            for case in cases:
                if case.check is not None:
                    case.check()
            results = run_interleaved(cases, REFERENCE, rounds=args.rounds, target_ns=20_000_000)
    finally:
        suite.close()
    print(_table(results))
    if args.output is not None:
        data = {name: r.as_dict() for name, r in results.items()}
        args.output.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
