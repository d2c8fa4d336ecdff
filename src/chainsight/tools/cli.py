"""The ``chainsight`` command line: ``demo``, ``triage``, ``slo``, ``prices``.

Each subcommand lives in its own module, imported only when that subcommand runs, so that
``chainsight --help`` stays fast and the request path never imports CLI code. A subcommand
module provides ``add_arguments(parser)`` and ``run(args) -> int``.

A subcommand may need a library the core install leaves out (``chainsight slo`` needs PyYAML,
from the ``chainsight[tools]`` extra; ``chainsight demo`` openai and qdrant-client, from
``chainsight[demo]``); without it the command prints, in one line, the pip command that installs
it into this environment, and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Final

from chainsight.tools._shell import install_command

__all__ = ["main"]

# subcommand -> (module, one-line help)
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("chainsight.tools.demo", "run a simulated RAG assistant with fault injection"),
    "triage": (
        "chainsight.tools.triage",
        "name the failing fault domain from Prometheus or a span file",
    ),
    "slo": ("chainsight.tools.slo", "generate Prometheus SLO rules from an SLO spec"),
    "prices": ("chainsight.tools.prices_cli", "show the price table and where each row came from"),
}

# Libraries outside the core dependencies that a subcommand's module imports:
# import name -> (distribution to name in the message, extra that installs it).
_EXTRAS: Final[Mapping[str, tuple[str, str]]] = {
    "yaml": ("PyYAML", "tools"),
    # `chainsight demo` calls its simulated provider with the real OpenAI SDK and searches an
    # embedded Qdrant.
    "openai": ("openai and qdrant-client", "demo"),
    "qdrant_client": ("openai and qdrant-client", "demo"),
}


class _MissingExtra(Exception):
    """A subcommand's module needs a library from an extra that is not installed."""


def _import_command(name: str, module_name: str) -> ModuleType:
    """Import the module of subcommand ``name``; say which extra to install if it cannot."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        needed = _EXTRAS.get(exc.name or "")
        if needed is None:
            raise
        distribution, extra = needed
        raise _MissingExtra(
            f"the `chainsight {name}` command needs {distribution} (the chainsight[{extra}] "
            f"extra), not installed here; install it with: {install_command(extra)}"
        ) from None


def _parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chainsight",
        description="Instrumentation for AI request chains: demo, triage, SLO rules, prices.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in _COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            # Only the chosen subcommand's module is imported: --help stays fast, and one
            # subcommand's heavy imports never slow another.
            module = _import_command(name, module_name)
            module.add_arguments(cmd)
            cmd.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``chainsight`` command line; return the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if a in _COMMANDS), None)
    try:
        parser = _parser(chosen)
    except _MissingExtra as exc:
        print(f"chainsight: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        result: int = args._module.run(args)
    except BrokenPipeError:
        # `chainsight triage --json | head`: the reader left; that is not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
