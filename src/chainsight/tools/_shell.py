"""Commands the tools print for the user to run: each must run as printed, from where it was
printed, with this installation (a venv that is not activated, an editable checkout).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from importlib import metadata
from urllib.parse import unquote, urlparse

__all__ = ["chainsight_command", "install_command", "runnable_path"]


def runnable_path(path: str) -> str:
    """``path`` as a shell word that runs it from the working directory.

    Relative when it lies below the working directory (``.venv/bin/chainsight``), absolute
    otherwise; a bare name gets ``./``, or the shell would look it up on PATH instead.
    """
    relative = os.path.relpath(path)
    if relative.startswith(os.pardir):
        return shlex.quote(path)
    return shlex.quote(relative if os.sep in relative else os.path.join(os.curdir, relative))


def chainsight_command() -> str:
    """How to run ``chainsight`` from here.

    ``chainsight`` when the one on PATH is this interpreter's; otherwise this environment's
    script (``.venv/bin/chainsight`` after ``make demo``, whose venv is not activated);
    otherwise ``python -m chainsight`` with this interpreter.
    """
    script = os.path.join(os.path.dirname(sys.executable), "chainsight")
    on_path = shutil.which("chainsight")
    if os.path.exists(script):
        if on_path is not None and os.path.samefile(on_path, script):
            return "chainsight"
        return runnable_path(script)
    return f"{runnable_path(sys.executable)} -m chainsight"


def _editable_checkout() -> str | None:
    """The source directory chainsight is installed from in editable mode, if it is."""
    try:
        raw = metadata.distribution("chainsight").read_text("direct_url.json")
        origin = json.loads(raw) if raw else {}
    except (metadata.PackageNotFoundError, ValueError):
        return None
    if not isinstance(origin, dict) or not (origin.get("dir_info") or {}).get("editable"):
        return None
    url = urlparse(str(origin.get("url", "")))
    return unquote(url.path) if url.scheme == "file" and url.path else None


def install_command(extra: str) -> str:
    """The pip command that installs ``chainsight[extra]`` into this interpreter's environment.

    From a checkout installed in editable mode (``make demo``, ``pip install -e .``), the
    checkout with the extra; otherwise the package from the index.
    """
    python = runnable_path(sys.executable)
    checkout = _editable_checkout()
    if checkout is not None:
        where = os.path.relpath(checkout)
        where = checkout if where.startswith(os.pardir) else where
        return f"{python} -m pip install -e {shlex.quote(f'{where}[{extra}]')}"
    return f"{python} -m pip install {shlex.quote(f'chainsight[{extra}]')}"
