"""A webhook receiver for Alertmanager: records each notification it is sent, with the receiver's name.

Alertmanager posts one JSON document per notification (``receiver``, ``status``, ``alerts``…); the
test stands it in for the pager and the ticket system of ``alerts/alertmanager.yml``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    # Alertmanager sends each group's notification at once: 500 groups are 500 connections in the
    # same instant, far past socketserver's default backlog of 5.
    request_queue_size = 1024
    daemon_threads = True


class WebhookSink:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notifications: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with sink._lock:
                    sink._notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the test asserts instead
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def notifications(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._notifications)
