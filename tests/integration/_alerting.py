"""Real alerting for integration tests: Prometheus that sends to a real Alertmanager, and a
webhook receiver that records every notification Alertmanager delivers.

Alertmanager is the Debian package's ``prometheus-alertmanager`` binary, started on 127.0.0.1
with clustering off (no gossip port) and its own storage directory; nothing here talks to a
system service.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.integration._servers import (
    HOST,
    LoggedProcess,
    PrometheusServer,
    ServerStartError,
    free_port,
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


class AlertmanagerServer(LoggedProcess):
    """``prometheus-alertmanager`` on 127.0.0.1, routing everything to one webhook at once."""

    def __init__(self, webhook_url: str, *, workdir: Path) -> None:
        self.binary = require_binary("prometheus-alertmanager")
        self.webhook_url = webhook_url
        self.workdir = workdir
        self.config_path = workdir / "alertmanager.yml"
        super().__init__(workdir / "alertmanager.log")
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

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
            args = [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address={HOST}:{self.port}",
                # No gossip: one instance, and no second port to collide on.
                "--cluster.listen-address=",
            ]
            if self._launch_until_ready(args, self.url, timeout):
                return self
            if "address already in use" not in self.log_tail().lower():
                break
        raise ServerStartError(
            f"alertmanager did not become ready on {self.url} within {timeout} s "
            f"(config {self.config_path}); log tail:\n{self.log_tail()}"
        )


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
