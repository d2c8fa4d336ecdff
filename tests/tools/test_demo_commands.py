"""What ``chainsight demo`` prints for the user to run runs as printed, and its /metrics port is
not called busy while a scraped demo's connections linger in TIME_WAIT."""

from __future__ import annotations

import io
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import chainsight
from chainsight.tools import demo
from chainsight.tools._shell import chainsight_command, install_command
from tests.integration._servers import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = os.path.dirname(sys.executable)


def _env(path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = path
    return env


def _scrape(port: int) -> None:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False)
    assert response.status_code == 200


def _scrape_until_the_server_closes(port: int) -> None:
    """A scrape whose connection the server closes first (the client reads to the end before
    closing its side), as Prometheus's scrapes of the demo end: the server's end of it then
    lingers in TIME_WAIT."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.0 200"), received[:80]


def test_the_next_demo_serves_metrics_on_the_port_a_scraped_demo_just_left() -> None:
    # A demo serves /metrics and is scraped: the server closes each scrape's connection first,
    # so when the demo exits its end of those connections lingers in TIME_WAIT for a minute.
    scenario = demo.Scenario(metrics_port=free_port(), spans=os.devnull)
    port = scenario.metrics_port
    assert port is not None
    assert demo._configure(scenario, io.StringIO()) == port
    _scrape_until_the_server_closes(port)
    chainsight.reset()  # the first demo exits
    # A probe bind without SO_REUSEADDR (the old way) calls the port busy ...
    with socket.socket() as probe, pytest.raises(OSError, match="in use"):
        probe.bind(("127.0.0.1", port))
    # ... the next demo serves /metrics on it.
    out = io.StringIO()
    assert demo._configure(scenario, out) == port, out.getvalue()
    assert out.getvalue() == ""
    _scrape(port)


def test_a_port_really_in_use_is_reported_and_the_demo_goes_on_without_metrics() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = io.StringIO()
        assert demo._configure(demo.Scenario(metrics_port=port, spans=os.devnull), out) is None
    assert f"port {port} is busy (Address already in use): continuing without /metrics" in (
        out.getvalue()
    )


def test_chainsight_is_named_plainly_when_the_one_on_path_is_this_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", BIN + os.pathsep + "/usr/bin:/bin")
    assert chainsight_command() == "chainsight"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(REPO)
    assert chainsight_command() == shlex.quote(os.path.relpath(os.path.join(BIN, "chainsight")))


@pytest.mark.slow
def test_the_closing_hint_runs_verbatim_from_the_repo_without_an_activated_venv(
    tmp_path: Path,
) -> None:
    # As after `make demo`: the venv's bin is not on PATH, the user is in the repo.
    env = _env("/usr/bin:/bin")
    spans = tmp_path / "demo spans.jsonl"  # a space: the hint must quote it
    proc = subprocess.run(
        [sys.executable, "-m", "chainsight", "demo", "--duration", "20", "--time-scale", "4",
         "--fault", "provider-ratelimit", "--fault-start", "10", "--metrics-port", "0",
         "--spans", str(spans), "--seed", "2", "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    hints = [line for line in proc.stdout.splitlines() if line.startswith("re-run the triage: ")]
    assert len(hints) == 1, proc.stdout
    hint = hints[0].removeprefix("re-run the triage: ")
    assert not hint.startswith("chainsight "), hint  # not on PATH: it would not run
    # Through a shell, verbatim, as the user would paste it.
    rerun = subprocess.run(  # noqa: S602
        hint, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert rerun.returncode == 1, rerun.stderr  # a fault was found
    assert "verdict: provider in simai/sim-gpt-4o" in rerun.stdout


def test_without_the_demo_extra_the_demo_says_in_one_line_what_to_run(tmp_path: Path) -> None:
    # openai missing: `import openai` raises ImportError, as in an environment without it.
    code = (
        "import sys\n"
        "sys.modules['openai'] = None\n"
        "from chainsight.tools.cli import main\n"
        "sys.exit(main(['demo', '--duration', '1']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=_env("/usr/bin:/bin"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "needs openai and qdrant-client (the chainsight[demo] extra)" in lines[0]
    command = lines[0].split("install it with: ", 1)[1]
    assert command == shlex.join(
        [os.path.relpath(sys.executable, REPO), "-m", "pip", "install", "-e", ".[demo]"]
    )
    # It names this environment's interpreter and pip, reachable from where it was printed.
    words = shlex.split(command)
    check = subprocess.run(
        [*words[:3], "--version"], cwd=REPO, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert str(Path(sys.prefix).resolve()) in str(Path(check.stdout.split(" from ")[1]).resolve())


def test_the_install_command_is_for_this_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    command = shlex.split(install_command("demo"))
    assert os.path.samefile(command[0], sys.executable)
    assert command[1:4] == ["-m", "pip", "install"]
    assert command[-1].endswith("[demo]")
