"""configure() / reset() / shutdown(): validation, env fallbacks, reconfiguration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import chainsight
from chainsight import ConfigurationError
from chainsight.config import lifecycle
from chainsight.config import state as _config
from chainsight.testing import Capture


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_ratio": 1.5}, "sample_ratio must be a number from 0.0 to 1.0, got 1.5"),
        ({"sample_ratio": "all"}, "sample_ratio"),
        ({"exporter": "zipkin"}, "unknown exporter 'zipkin'"),
        ({"exporter": "jsonl:"}, "names no file"),
        ({"exporter": "jsonl:/no/such/dir/spans.jsonl"}, "does not exist"),
        ({"release": {"bad key": "x"}}, "release key 'bad key'"),
        ({"release": {"model": object()}}, "release['model']"),
        ({"release": 7}, "release must be a string or a mapping"),
        ({"enabled": "yes"}, "enabled must be True or False"),
        ({"service": 5}, "service must be a string"),
        ({"label_limits": {"tenant": 0}}, "label_limits"),
        ({"registry": "global"}, "registry must be a prometheus_client.CollectorRegistry"),
        ({"classifiers": [42]}, "classifiers must be callables"),
        ({"metrics_port": "9464"}, "metrics_port must be an integer"),
        ({"budgets": [1]}, "not a chainsight.Budget"),
        ({"colour": "blue"}, "unknown setting(s) colour"),
    ],
)
def test_bad_settings_raise_and_change_nothing(kwargs: dict[str, object], message: str) -> None:
    before = _config.current()
    with pytest.raises(ConfigurationError) as info:
        chainsight.configure(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert _config.current() is before


def test_none_means_unchanged_and_release_switch(chainsight_capture: Capture) -> None:
    chainsight.configure(release={"model": "m1", "prompt": "p@1"}, service="svc")
    with chainsight.stage("tool", name="a"):
        chainsight.configure(release={"model": "m2", "prompt": "p@2"})  # mid-flight
        with chainsight.stage("tool", name="b"):
            pass
    assert _config.current().service == "svc"
    a = chainsight_capture.stage(name="a")
    b = chainsight_capture.stage(name="b")
    assert a.attributes["chainsight.release.model"] == "m1"
    assert b.attributes["chainsight.release.model"] == "m2"
    assert a.outcome == "ok"  # the stage in flight finished intact
    assert chainsight_capture.metric(
        "chainsight_release_info",
        {"release": "model=m2,prompt=p@2", "model": "m2", "prompt": "p@2", "service": "svc",
         "environment": ""},
    ) == 1.0  # fmt: skip


def test_release_id_explicit_and_string() -> None:
    chainsight.configure(release={"id": "v1.4.2", "model": "gpt-4o"})
    assert _config.current().release_id == "v1.4.2"
    assert _config.current().release == {"model": "gpt-4o"}
    chainsight.configure(release="2026.11.24")
    assert _config.current().release_id == "2026.11.24"


def test_env_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-otel")
    monkeypatch.setenv("CHAINSIGHT_SAMPLE_RATIO", "0.25")
    chainsight.configure()
    assert _config.current().service == "from-otel"
    assert _config.current().sample_ratio == 0.25
    monkeypatch.setenv("CHAINSIGHT_SERVICE", "ours")
    chainsight.configure(sample_ratio=1.0)
    assert _config.current().service == "ours"  # CHAINSIGHT_* wins over OTEL_*
    chainsight.configure(service="arg")
    assert _config.current().service == "arg"  # the argument wins over both


def test_default_exporter_is_otlp_when_endpoint_set(monkeypatch: pytest.MonkeyPatch) -> None:
    chainsight.configure()
    assert _config.current().exporter == "none"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    chainsight.reset()
    chainsight.configure()
    assert _config.current().exporter == "otlp"


def test_sampled_out_spans_still_count_metrics() -> None:
    from chainsight.testing import capture

    cap = capture(sample_ratio=0.0)
    with chainsight.request("r"), chainsight.stage("tool", name="t") as s:
        assert s.trace_id is None
        s.set(a=1)
    assert cap.spans == []
    labels = {"request": "r", "feature": "", "outcome": "ok", "fault": "none",
              "release": "unknown"}  # fmt: skip
    assert cap.metric("chainsight_requests_total", labels) == 1.0


def test_uses_app_tracer_provider_and_installs_nothing() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    chainsight.configure(tracer_provider=provider, registry=CollectorRegistry())
    assert _config.current().owned_provider is None
    with chainsight.stage("tool", name="t"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["execute_tool t"]
    assert not isinstance(trace.get_tracer_provider(), TracerProvider) or (
        trace.get_tracer_provider() is not _config.current().owned_provider
    )


def test_exporter_none_with_an_app_provider_still_records_into_that_provider() -> None:
    # The decision (docs/api.md, tracer_provider): a given provider is what the app wants its
    # spans in; exporter= and sample_ratio= shape chainsight's own pipeline only.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    chainsight.configure(tracer_provider=provider, exporter="none", registry=CollectorRegistry())
    with chainsight.request("r"), chainsight.stage("tool", name="t") as s:
        assert s.trace_id is not None
    assert [s.name for s in exporter.get_finished_spans()] == [
        "execute_tool t",
        "invoke_workflow r",
    ]
    chainsight.reset()
    chainsight.configure(exporter="none")
    with chainsight.stage("tool", name="t") as s:
        assert s.trace_id is None  # chainsight's own pipeline with no exporter records nothing


def test_reset_undoes_configure(tmp_path: object) -> None:
    chainsight.configure(service="x", release="r1", enabled=False)
    chainsight.reset()
    assert _config.current().service == "unknown_service"
    assert _config.current().enabled is True
    assert _config.current().release_id == "unknown"


def test_shutdown_without_owned_provider_is_immediate() -> None:
    assert chainsight.shutdown(timeout=0.1) is True


def test_span_outliving_its_retired_provider_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    registry = CollectorRegistry()
    monkeypatch.setattr(lifecycle, "RETIRE_GRACE_S", 0.0)
    chainsight.configure(exporter=f"jsonl:{tmp_path / 'a.jsonl'}", registry=registry)
    old_processor = _config.current().processor
    assert old_processor is not None
    with chainsight.stage("tool", name="long"):
        chainsight.configure(exporter=f"jsonl:{tmp_path / 'b.jsonl'}")  # retires the provider
        deadline = time.monotonic() + 30  # a wait for a condition, generous: it exits when met
        while not old_processor._closed and time.monotonic() < deadline:
            time.sleep(0.01)
    assert (
        registry.get_sample_value("chainsight_export_failures_total", {"signal": "traces"}) == 1.0
    )


def test_a_refused_configure_leaves_release_limits_and_threads_alone() -> None:
    import threading

    chainsight.configure(release="v1", label_limits={"tenant": 50})
    metrics = _config.current().metrics
    threads = threading.active_count()
    for bad in (
        {"release": "v2", "label_limits": {"tenant": 3}, "capture_content": "maybe"},
        {"release": "v2", "service": "other", "exporter": "jsonl:/no/such/dir/x.jsonl"},
        {"release": "v2", "conventions": ("openinference",)},
    ):
        with pytest.raises(ConfigurationError):
            chainsight.configure(**bad)  # type: ignore[arg-type]
    assert metrics.release_collector.labels["release"] == "v1"
    assert metrics.guard._limits == {"tenant": 50}
    assert threading.active_count() == threads


@pytest.mark.parametrize(
    ("variable", "value", "also"),
    [
        ("CHAINSIGHT_SAMPLE_RATIO", "abc", {}),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0", {}),
        ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "maybe", {}),
        # The SDK's own exception, not ours: it must not escape either.
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "bogus", {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}),
    ],
)
def test_a_bad_environment_variable_never_breaks_import(
    variable: str, value: str, also: dict[str, str]
) -> None:
    # `import chainsight` runs inside the app's own import: it must not raise. chainsight stays
    # off, says why, and configure() raises a ConfigurationError where the app can handle it.
    script = (
        "import chainsight\n"
        "from chainsight.config import state as _config\n"
        "assert _config.current().enabled is False\n"
        "try:\n"
        "    chainsight.configure()\n"
        "except chainsight.ConfigurationError as exc:\n"
        "    print('refused:', exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHAINSIGHT_"))}
    env.update({variable: value, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", **also})
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    warning = done.stderr.partition("chainsight is off until configure() succeeds: ")[2]
    assert variable in warning, done.stderr
    assert done.stdout.startswith("refused: "), done.stdout
    assert variable in done.stdout, done.stdout


def test_batch_settings_follow_the_standard_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from chainsight.export.traces import BATCH_SIZE, QUEUE_SIZE, SCHEDULE_DELAY_MS, batch_settings

    assert batch_settings() == (QUEUE_SIZE, SCHEDULE_DELAY_MS, BATCH_SIZE)
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "1000")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "500")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", " 512 ")
    assert batch_settings() == (1000, 500, 512)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    chainsight.configure()
    processor = _config.current().processor
    assert processor is not None
    assert processor.pending == 0
    assert processor._limit == 1000  # the counted queue is the one the variable sets

    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2000")
    with pytest.raises(chainsight.ConfigurationError, match=r"2000 is larger than the queue"):
        chainsight.configure(service="other")  # a new provider reads the variables again
    assert _config.current().processor is processor  # refused: nothing changed
    for bad in ("-1", "1.5", "lots"):
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", bad)
        with pytest.raises(chainsight.ConfigurationError, match=r"OTEL_BSP_SCHEDULE_DELAY="):
            batch_settings()


def test_a_changed_batch_variable_applies_whatever_else_configure_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    chainsight.configure()
    first = _config.current().processor
    assert first is not None
    chainsight.configure(release="v2")
    assert _config.current().processor is first  # nothing changed: the pipeline is kept

    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
    chainsight.configure(release="v3")  # an unrelated change still picks the new value up
    second = _config.current().processor
    assert second is not None
    assert second is not first
    assert second._limit == 100

    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0")
    with pytest.raises(ConfigurationError, match=r"OTEL_BSP_MAX_EXPORT_BATCH_SIZE='0'"):
        chainsight.configure(sample_ratio=0.5)
    assert _config.current().processor is second
    assert _config.current().sample_ratio == 1.0


def test_bad_otlp_metric_settings_are_refused_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "abc")
    registry = CollectorRegistry()
    with pytest.raises(ConfigurationError, match=r"OTEL_METRIC_EXPORT_INTERVAL='abc'"):
        chainsight.configure(metrics_port=port, release="v9", otlp_metrics=True, registry=registry)
    # Refused means nothing changed: no /metrics server, no release published.
    with pytest.raises(OSError, match="Connection refused"):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)
    assert registry.get_sample_value("chainsight_release_info", {"release": "v9"}) is None
