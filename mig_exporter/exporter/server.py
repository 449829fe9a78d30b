"""The HTTP side: ``/metrics`` (the telemetry path), ``/health`` and a landing page at ``/``.

Why the standard library's ``ThreadingHTTPServer`` and not prometheus_client's own server: that
one renders the registry on every scrape, and its WSGI app has no health endpoint, basic auth or
concurrency cap. Here a scrape only copies bytes rendered once per collection (``state.py``), so
the server needs nothing but a thread per connection and a few routes, which the standard library
gives without another dependency. TLS is negotiated in the connection's thread, so a slow or
hostile client cannot hold up the accept loop.
"""

from __future__ import annotations

import html
import logging
import socket
import socketserver
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from mig_exporter import __version__
from mig_exporter.errors import InputError
from mig_exporter.exporter.flags import ListenAddress
from mig_exporter.exporter.state import ExporterState
from mig_exporter.exporter.webconfig import WebConfig

log = logging.getLogger(__name__)

HEALTH_PATH = "/health"
# A client that sends nothing for this long is dropped (a slow-loris client must not hold a thread).
CLIENT_TIMEOUT_SECONDS = 30


class ExporterHTTPServer(ThreadingHTTPServer):
    """Serves the state's pre-rendered exposition; never touches NVML."""

    daemon_threads = True
    request_queue_size = socket.SOMAXCONN  # the default 5 drops SYNs when scrapers connect at once

    def __init__(
        self, address: ListenAddress, state: ExporterState, telemetry_path: str,
        web_config: WebConfig | None = None, max_requests: int = 0,
    ) -> None:
        self.state = state
        self.telemetry_path = telemetry_path
        self.web_config = web_config or WebConfig()
        # 0: no cap (node_exporter's --web.max-requests meaning).
        self.request_slots = threading.BoundedSemaphore(max_requests) if max_requests else None
        family, host = _family_and_host(address)
        self.address_family = family
        try:
            super().__init__((host, address.port), _Handler)
        except OSError as error:
            raise InputError(f"--web.listen-address: cannot listen on {host or '*'}:{address.port}: "
                             f"{error.strerror}") from None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host (slow where DNS is not
        reachable), and accept IPv4 too on an IPv6 wildcard socket."""
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client going away mid-request is routine (a scraper timing out, a health probe
        closing early): a debug line. Anything else is a bug worth its traceback in the log."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, ssl.SSLError)):
            log.debug("connection from %s ended: %s", client_address, error)
        else:
            log.exception("error while serving %s", client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        context = self.web_config.ssl_context
        if context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(CLIENT_TIMEOUT_SECONDS)
        try:
            tls_request = context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            log.debug("TLS handshake with %s failed: %s", client_address, error)
            return
        try:
            super().finish_request(tls_request, client_address)
        finally:
            tls_request.close()


def _family_and_host(address: ListenAddress) -> tuple[socket.AddressFamily, str]:
    """Every interface means IPv6 and IPv4 where the host has IPv6 (node_exporter's ``:9458``).
    A name with both kinds of address (``localhost``) listens on its IPv4 one, as Go's
    ``net.Listen`` does for node_exporter, so a Prometheus scraping ``127.0.0.1`` finds it."""
    if not address.host:
        return (socket.AF_INET6, "::") if socket.has_dualstack_ipv6() else (socket.AF_INET, "0.0.0.0")
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise InputError(f"--web.listen-address: cannot resolve {address.host!r}: {error.strerror}") from None
    family, _, _, _, sockaddr = next((info for info in infos if info[0] == socket.AF_INET), infos[0])
    return family, str(sockaddr[0])


class _Handler(BaseHTTPRequestHandler):
    server: ExporterHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses its connection every scrape
    # Headers and body go out in two writes; with Nagle's algorithm the body then waits for the
    # client's delayed ACK of the headers (40 ms on Linux) on a kept-alive connection.
    disable_nagle_algorithm = True
    server_version = f"mig-exporter/{__version__}"
    timeout = CLIENT_TIMEOUT_SECONDS

    def do_GET(self) -> None:
        slots = self.server.request_slots
        if slots is not None and not slots.acquire(blocking=False):
            self._send(503, b"too many concurrent requests (--web.max-requests)\n")
            return
        try:
            self._route()
        finally:
            if slots is not None:
                slots.release()

    def do_HEAD(self) -> None:
        """As GET, headers only (RFC 9110 asks general-purpose servers for both; some probes use it)."""
        self.do_GET()

    def _route(self) -> None:
        basic_auth = self.server.web_config.basic_auth
        if basic_auth is not None and not basic_auth.allows(self.headers.get("Authorization")):
            self._send(401, b"unauthorized\n", {"WWW-Authenticate": 'Basic realm="mig-exporter"'})
            return
        path = urlsplit(self.path).path
        if path == self.server.telemetry_path:
            self._send_metrics()
        elif path == HEALTH_PATH:
            health = self.server.state.health()
            self._send(200 if health.healthy else 503, health.reason.encode() + b"\n")
        elif path == "/":
            self._send(200, _landing_page(self.server.telemetry_path),
                       {"Content-Type": "text/html; charset=utf-8"})
        else:
            self._send(404, b"not found; the metrics are at " + self.server.telemetry_path.encode() + b"\n")

    def _send_metrics(self) -> None:
        exposition = self.server.state.exposition
        headers = {"Content-Type": CONTENT_TYPE_PLAIN_0_0_4}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            self._send(200, exposition.gzipped, headers)
        else:
            self._send(200, exposition.plain, headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _landing_page(telemetry_path: str) -> bytes:
    path = html.escape(telemetry_path, quote=True)
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>mig-exporter</title></head>
<body>
<h1>mig-exporter</h1>
<p>GPU, MIG and process metrics from NVML, for Prometheus.</p>
<ul>
<li><a href="{path}">Metrics</a></li>
<li><a href="{HEALTH_PATH}">Health</a></li>
</ul>
<p>Version {html.escape(__version__)}</p>
</body>
</html>
""".encode()
