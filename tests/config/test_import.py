"""Nothing happens at import: no metric family, no file read, no thread, no tool module.

Each check runs in a fresh interpreter, since this test process imported chainsight long ago.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_PROBE = """
import json, sys, threading
threads = threading.active_count()
import prometheus_client
import chainsight
families = [n for n in prometheus_client.REGISTRY._names_to_collectors if "chainsight" in n]
print(json.dumps({
    "threads_before": threads,
    "threads_after": threading.active_count(),
    "families": families,
    "modules": sorted(sys.modules),
}))
"""


def _run(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHAINSIGHT_"))}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", script],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_registers_nothing_and_starts_no_thread_even_with_an_otlp_endpoint() -> None:
    # An endpoint nobody listens on: before this redesign, import started the export thread.
    done = _run(_PROBE, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["threads_after"] == seen["threads_before"]
    assert seen["families"] == []
    tools = [m for m in seen["modules"] if m.startswith("chainsight.tools")]
    assert tools == []
    for heavy in ("yaml", "argparse", "chainsight.cost.prices", "difflib"):
        assert heavy not in seen["modules"], heavy


def test_a_stage_before_any_configure_honours_the_environment(tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    script = (
        "import chainsight\n"
        "with chainsight.request('answer'):\n"
        "    with chainsight.stage('retrieval'):\n"
        "        pass\n"
        "assert chainsight.shutdown(10.0)\n"
    )
    done = _run(script, CHAINSIGHT_EXPORTER=f"jsonl:{spans}", CHAINSIGHT_SERVICE="env-only")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in spans.read_text().splitlines()]
    kinds = sorted(line["attributes"]["chainsight.stage.kind"] for line in lines)
    assert kinds == ["request", "retrieval"]
    assert all(line["resource"]["service.name"] == "env-only" for line in lines)


def test_the_first_stage_registers_the_metric_families() -> None:
    script = (
        "import prometheus_client, chainsight\n"
        "with chainsight.stage('prompt'):\n"
        "    pass\n"
        "names = prometheus_client.REGISTRY._names_to_collectors\n"
        "assert any(n.startswith('chainsight_stage') for n in names), sorted(names)\n"
    )
    done = _run(script)
    assert done.returncode == 0, done.stderr
