"""Screenshot a full chainsight chain in a real Phoenix's trace view (docs/img/).

``.venv/bin/python tools/phoenix_screenshot.py [--out docs/img]``: installs Phoenix into its
cached environment if needed (tools/phoenix.py), starts it on loopback, sends the chain with
content capture on and ``conventions=("otel", "openinference")``, and has headless Chromium
(Debian's ``chromium``; ``apt-get install chromium`` where it is missing) take the trace view
with the LLM span selected, and again with the retriever selected.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tools import phoenix  # noqa: E402

PROJECT = "chainsight-support-bot"
SHOTS = {"phoenix-trace-llm.png": "LLM", "phoenix-trace-retriever.png": "RETRIEVER"}


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no chromium on PATH: apt-get install -y chromium")


def _shoot(browser: str, url: str, out: Path) -> None:
    subprocess.run(  # noqa: S603 - our own arguments
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1600,1000", "--virtual-time-budget=20000", f"--screenshot={out}", url],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Install and start Phoenix, send the chain, write the screenshots; prints what it did."""
    parser = argparse.ArgumentParser(prog="tools/phoenix_screenshot.py")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "img",
        help="where the PNGs go (default docs/img: it replaces the screenshots the docs show)",
    )
    args = parser.parse_args(argv)
    try:
        import anthropic  # noqa: F401, PLC0415 - the chain is built from its real response types
    except ImportError:
        raise SystemExit(
            "tools/phoenix_screenshot.py needs the dev extra (it builds the chain from the real "
            "anthropic SDK's types): run `make .venv/.installed-dev` (or "
            "`.venv/bin/pip install -e '.[dev]'`), then run it again"
        ) from None
    browser = _chromium()
    python, seconds = phoenix.ensure_venv()
    how = f"installed in {seconds:.0f} s" if seconds is not None else "cached environment"
    print(f"Phoenix {phoenix.PHOENIX_VERSION}: {how}")
    with tempfile.TemporaryDirectory() as work, phoenix.running(python, Path(work)) as server:
        os.environ.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=server.url,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_RESOURCE_ATTRIBUTES=f"openinference.project.name={PROJECT}",
        )
        import chainsight  # noqa: PLC0415 - after the environment points at Phoenix

        chainsight.configure(
            service="support-bot", capture_content=True, conventions=("otel", "openinference")
        )
        phoenix.send_chain()
        if not chainsight.shutdown(timeout=30):
            raise SystemExit("chainsight could not flush its spans to Phoenix")
        spans = server.wait_for_spans(PROJECT, 6)
        project_id = server.project_id(PROJECT)
        trace_id = spans[0]["context"]["trace_id"]
        args.out.mkdir(parents=True, exist_ok=True)
        for file, kind in SHOTS.items():
            span = next(s for s in spans if s["span_kind"] == kind)
            trace = f"{server.url}/projects/{project_id}/traces/{trace_id}"
            url = f"{trace}?selectedSpanNodeId={span['id']}"
            _shoot(browser, url, args.out / file)
            print(f"wrote {args.out / file} ({kind} span selected)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
