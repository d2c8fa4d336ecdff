"""Instructions per call of the micro cases, counted by callgrind: an A/B that a busy machine
cannot blur.

Wall-clock ratios on a shared 2-core machine move by 10-20 % with the neighbours' load;
valgrind's instruction counts for the same code move by well under 1 %. For each case this runs
the interpreter twice under ``valgrind --tool=callgrind`` (export thread included), once with
the case's setup and warm-up only and once with ``--calls`` more calls, and divides the
difference by the calls::

    .venv/bin/python -m benchmarks.instructions R cs_sync cs_request R_chain6 cs_chain6
    .venv/bin/python -m benchmarks.instructions --calls 2000 bare_call cs_disabled

Instructions are not time (cache misses and the cyclic GC's scans of a larger heap cost more
than their count says), so they judge a change, and ``make bench`` judges the targets.
``--run CASE N`` is what each valgrind process executes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence

os.environ.setdefault("CHAINSIGHT_RAISE_INTERNAL_ERRORS", "1")

__all__ = ["count", "main"]

_WARM_UP = 200


def _run(name: str, calls: int) -> None:
    """Set the case up, warm it up, then run it ``calls`` times (what valgrind measures)."""
    import chainsight
    from benchmarks._micro import MicroSuite

    suite = MicroSuite()
    try:
        cases = {case.name: case for case in suite.cases()}
        if name not in cases:
            raise SystemExit(f"no micro case {name!r}; choose from {', '.join(cases)}")
        case = cases[name]
        case.setup()
        case.run(_WARM_UP)
        suite.sampled.flush()
        if calls:
            case.run(calls)
        suite.sampled.flush()
        suite.sampled_out.flush()
    finally:
        suite.close()
        chainsight.reset()


def _instructions(name: str, calls: int) -> int:
    valgrind = shutil.which("valgrind") or "valgrind"
    done = subprocess.run(  # noqa: S603 - valgrind and our own interpreter
        [
            valgrind,
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--run",
            name,
            str(calls),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run of {name!r} failed: {done.stderr[-2000:]}")
    return int(found.group(1))


def count(name: str, calls: int) -> float:
    """Instructions per call of micro case ``name`` (the difference of two runs)."""
    return (_instructions(name, calls) - _instructions(name, 0)) / calls


def main(argv: Sequence[str] | None = None) -> int:
    """Print instructions per call and the ratio to R (when R is among the cases)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("cases", nargs="*", help="micro case names (as in make bench)")
    parser.add_argument("--calls", type=int, default=300, help="calls counted per case (300)")
    parser.add_argument("--run", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run is not None:
        _run(args.run[0], int(args.run[1]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    results = {name: count(name, args.calls) for name in args.cases}
    reference = results.get("R")
    for name, per_call in results.items():
        ratio = f"{per_call / reference:6.3f} R" if reference else ""
        print(f"{name:<22} {per_call:>12,.0f} instructions/call {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
