"""Real alerting for integration tests: Prometheus that sends to a real Alertmanager, and a
webhook receiver that records every notification Alertmanager delivers.

Alertmanager is the Debian package's ``prometheus-alertmanager`` binary, started on 127.0.0.1
with clustering off (no gossip port) and its own storage directory; nothing here talks to a
system service.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from tests.integration._servers import (
    HOST,
    PrometheusServer,
    ServerStartError,
    _stop_process,
    _tail,
    _wait_until,
    free_port,
    ready_or_exited,
    require_binary,
)

__all__ = ["AlertingPrometheus", "AlertmanagerServer", "Notification", "WebhookReceiver"]


@dataclass(frozen=True)
class Notification:
    """One webhook delivery: when it arrived (wall clock) and Alertmanager's JSON payload."""

    received: float
    payload: dict[str, Any]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts of the delivery (Alertmanager groups several in one)."""
        return list(self.payload.get("alerts", []))


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.notifications.append(Notification(time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Silence the per-request log line."""

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Where Alertmanager should POST."""
        return f"http://{HOST}:{self._server.server_address[1]}/alerts"

    def start(self) -> WebhookReceiver:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def received(self) -> list[Notification]:
        """A copy of the notifications so far."""
        with self._lock:
            return list(self.notifications)


class AlertmanagerServer:
    """``prometheus-alertmanager`` on 127.0.0.1, routing everything to one webhook at once."""

    def __init__(self, webhook_url: str, *, workdir: Path) -> None:
        self.binary = require_binary("prometheus-alertmanager")
        self.webhook_url = webhook_url
        self.workdir = workdir
        self.config_path = workdir / "alertmanager.yml"
        self.log_path = workdir / "alertmanager.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the Alertmanager log, for failure messages."""
        return _tail(self.log_path, lines)

    def write_config(self) -> None:
        """One route to the webhook; short waits so that a test sees a notification in seconds."""
        config = {
            "route": {
                "receiver": "webhook",
                "group_by": ["alertname", "job"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "webhook",
                    "webhook_configs": [{"url": self.webhook_url, "send_resolved": False}],
                }
            ],
        }
        self.config_path.write_text(json.dumps(config, indent=2))

    def start(self, timeout: float = 30.0) -> AlertmanagerServer:
        """Start and wait for ``/-/ready``; raise ServerStartError with its log."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        for _attempt in range(3):
            self.port = free_port()
            self._close_log()
            self._log = self.log_path.open("ab")
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.path={self.workdir / 'data'}",
                    f"--web.listen-address={HOST}:{self.port}",
                    # No gossip: one instance, and no second port to collide on.
                    "--cluster.listen-address=",
                ],
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            proc = self._proc
            ready = ready_or_exited(proc, self.url)
            _wait_until(ready, timeout, interval=0.1)
            if proc.poll() is None and ready():
                return self
            _stop_process(proc)
            if "address already in use" not in self.log_tail().lower():
                break
        raise ServerStartError(
            f"alertmanager did not become ready on {self.url} within {timeout} s "
            f"(config {self.config_path}); log tail:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after 5 s."""
        if self._proc is not None:
            _stop_process(self._proc)
            self._proc = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class AlertingPrometheus(PrometheusServer):
    """A :class:`PrometheusServer` that sends its alerts to an Alertmanager."""

    def __init__(self, *args: Any, alertmanager: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alertmanager = alertmanager

    def api(self, path: str) -> Any:
        """``data`` of a GET on a Prometheus API path such as ``/api/v1/rules``."""
        return self._api(path)

    def write_config(self) -> None:
        """The base config plus the ``alerting`` section."""
        super().write_config()
        config = json.loads(self.config_path.read_text())
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [self.alertmanager]}]}]
        }
        self.config_path.write_text(json.dumps(config, indent=2))
