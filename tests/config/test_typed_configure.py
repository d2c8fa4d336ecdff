"""configure() is typed: one keyword per setting, misspellings refused by mypy and at run time."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import chainsight
from chainsight.config.settings import Settings


def test_every_setting_is_a_keyword_of_configure_in_the_same_order() -> None:
    params = inspect.signature(chainsight.configure).parameters
    keywords = [p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert keywords == [f.name for f in dataclasses.fields(Settings)]
    assert all(params[name].default is None for name in keywords)


def test_every_setting_has_a_line_in_the_docstring() -> None:
    doc = chainsight.configure.__doc__ or ""
    for field in dataclasses.fields(Settings):
        assert f"        {field.name}: " in doc, field.name


def test_a_misspelt_setting_is_refused_with_a_suggestion_and_changes_nothing() -> None:
    chainsight.configure(service="before")
    with pytest.raises(chainsight.ConfigurationError) as info:
        chainsight.configure(servce="after", environment="prod")  # type: ignore[call-arg]
    message = str(info.value)
    assert "servce (did you mean service?)" in message
    assert "known settings are: budget_store, budgets," in message
    from chainsight.config import state

    assert state.current().service == "before"
    assert state.current().environment is None


@pytest.mark.slow
def test_mypy_catches_a_misspelt_setting_in_user_code(tmp_path: Path) -> None:
    user = tmp_path / "app.py"
    user.write_text(
        "import chainsight\n"
        "chainsight.configure(service='ok', exporter='none')\n"
        "chainsight.configure(sample_rate=0.5)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(user)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, done.stdout
    assert "app.py:3:" in errors[0]
    assert '"sample_rate"' in errors[0]


def test_an_exporter_that_is_neither_a_spec_nor_an_exporter_object_is_refused() -> None:
    with pytest.raises(chainsight.ConfigurationError) as info:
        chainsight.configure(exporter=42)  # type: ignore[arg-type]
    assert "a string or an OpenTelemetry SpanExporter, got 42 (int)" in str(info.value)
