"""gunicorn settings for an app instrumented with chainsight, with one /metrics for all workers.

prometheus-client switches to multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set before it
is imported: every worker then writes its metric values to files in that directory, and a scrape
of ``chainsight.metrics_app()`` served by any worker sums them all. Set the variable in the
environment that starts gunicorn (this file imports prometheus-client in the master)::

    export PROMETHEUS_MULTIPROC_DIR=/run/support-bot/metrics
    gunicorn -c examples/gunicorn.conf.py --pythonpath examples wsgi_app:app

See docs/deployment.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client import multiprocess

_multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if not _multiproc_dir:
    raise RuntimeError(
        "PROMETHEUS_MULTIPROC_DIR is not set: without it every gunicorn worker keeps its own "
        "metrics and each scrape sees one worker at random. Set it to an empty directory "
        "writable by the workers, e.g. PROMETHEUS_MULTIPROC_DIR=/run/support-bot/metrics"
    )

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# Each worker imports the app after the fork, so each opens its own metric files and its own
# OpenTelemetry exporter thread (a preloaded app would share the master's, which a fork breaks).
preload_app = False
graceful_timeout = 10


def on_starting(server: Any) -> None:
    """Before any worker starts: empty the metrics directory.

    Files left by a previous run would otherwise be summed into this run's counters.
    """
    directory = Path(str(_multiproc_dir))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: drop its live gauges (in-flight requests) from the sum.

    Its counters and histograms stay, so totals never go backwards when a worker is recycled.
    """
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
