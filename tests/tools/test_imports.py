"""What the tools import: nothing on the request path, and PyYAML only for ``chainsight slo``.

Each check runs in a fresh interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )


def test_import_chainsight_loads_no_tool_nor_its_libraries() -> None:
    result = _run(
        "import sys, chainsight\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('yaml', 'argparse')\n"
        "             or m.startswith('chainsight.tools')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_command_but_slo_runs_without_pyyaml() -> None:
    result = _run(
        "import sys\n"
        "sys.modules['yaml'] = None\n"
        "import chainsight.tools.cli, chainsight.tools.demo, chainsight.tools.triage\n"
        "import chainsight.tools.prices_cli, chainsight.tools.slo_spec, chainsight.tools.slo_rules"
    )
    assert result.returncode == 0, result.stderr
