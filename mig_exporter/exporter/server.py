"""The HTTP server: one event loop accepting connections, TLS included, and bounding them.

Why an event loop (asyncio, with h11 parsing HTTP/1.1) and not the standard library's
``ThreadingHTTPServer``: that one costs a thread per connection, with no cap on connections and
no deadline on a request, so 3,000 clients trickling bytes cost 3,000 threads, idle connections
could take every file descriptor, and clients that never read their answers held the request
slots. A scrape here is a copy of bytes rendered once per collection (``state.py``), which an
event loop serves without threads; bounding what each connection may cost is then a matter of a
cap and deadlines, the ones production servers use (``connection.py`` lists them). bcrypt, the
one slow step, runs in a single worker thread, one check at a time as exporter-toolkit does.
prometheus_client's own server is no answer: it renders the registry per scrape and is itself a
ThreadingHTTPServer. aiohttp or uvicorn would bring a framework for three routes and still lack
the header deadline, the connection cap and the TLS-port sniffing below.

The cap on connections is ``ServerLimits.max_connections`` (``--web.max-connections``), lowered
to fit the process's file descriptor limit; at the cap (or should accept run out of descriptors
anyway), an idle connection is closed to admit the new one (``connection.py`` says which).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mig_exporter.errors import InputError
from mig_exporter.exporter.connection import ConnectionTable, HttpConnection, RequestSlots, ServerLimits, Site
from mig_exporter.exporter.flags import ListenAddress
from mig_exporter.exporter.heads import ResponseHeads
from mig_exporter.exporter.state import ExporterState
from mig_exporter.exporter.webconfig import WebConfig

log = logging.getLogger(__name__)

# Descriptors kept for everything else: NVML, the kubelet socket, logs, the TLS files.
RESERVED_DESCRIPTORS = 64
# What Go's net/http answers plain HTTP sent to a TLS port with, and the first bytes it takes
# as plain HTTP (crypto/tls RecordHeaderError, net/http server.go).
_PLAIN_HTTP_TO_TLS = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
_HTTP_STARTS = (b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO")
_TLS_HANDSHAKE = 0x16
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_ACCEPTS_PER_WAKEUP = 64


def connection_cap(wanted: int) -> int:
    """``wanted``, lowered so that the connections leave ``RESERVED_DESCRIPTORS`` free."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVED_DESCRIPTORS))


class ExporterHTTPServer:
    """Serves the state's pre-rendered exposition; never touches NVML. Binds on construction;
    ``serve_forever`` runs the loop in the calling thread until ``shutdown`` from another."""

    def __init__(
        self, address: ListenAddress, state: ExporterState, telemetry_path: str,
        web_config: WebConfig | None = None, max_requests: int = 0, limits: ServerLimits | None = None,
    ) -> None:
        limits = limits or ServerLimits()
        self.web_config = web_config or WebConfig()
        self._socket = _listening_socket(address)
        self.server_address = self._socket.getsockname()
        self.request_slots = RequestSlots(max_requests)
        self.connections = ConnectionTable(connection_cap(limits.max_connections))
        if self.connections.limit < limits.max_connections:
            log.info("serving at most %d connections (--web.max-connections %d), to fit the file "
                     "descriptor limit", self.connections.limit, limits.max_connections)
        self._auth_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-auth")
        self._site = Site(state, telemetry_path, self.web_config, self.request_slots, limits,
                          self.connections, self._auth_executor,
                          ResponseHeads(self.web_config.response_headers))
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_log_loop_error)
        self._stopped = threading.Event()
        self._serving = False

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def serve_forever(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._serving = True
        try:
            self._loop.add_reader(self._socket.fileno(), self._accept)
            self._loop.run_forever()
        finally:
            try:
                self._loop.remove_reader(self._socket.fileno())
                self.connections.close_all()
                pending = asyncio.all_tasks(self._loop)
                for task in pending:
                    task.cancel()
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self._loop.run_until_complete(asyncio.sleep(0))  # let the transports finish closing
            finally:
                self._stopped.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` and wait for it (from another thread)."""
        if self._serving and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._stopped.wait()

    def server_close(self) -> None:
        self._socket.close()
        self._auth_executor.shutdown(wait=False, cancel_futures=True)
        if not self._loop.is_running():
            self._loop.close()

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                client, peer = self._socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno not in _OUT_OF_DESCRIPTORS:
                    log.debug("accept failed: %s", error)
                    return
                # Out of descriptors with connections below the cap (other files took them):
                # free one by closing the longest-idle connection, or wait a moment.
                if not self.connections.evict_longest_idle():
                    log.warning("accept failed: %s; no idle connection to close", error.strerror)
                    self._pause_accepting()
                    return
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = HttpConnection(self._site, peer)
            if not self.connections.admit(connection):
                log.debug("refusing %s: %d connections open, none idle", peer, self.connections.limit)
                connection.close("no room")
                client.close()
                continue
            connection.opening(client, self._loop.create_task(self._open(connection, client)))

    def _pause_accepting(self) -> None:
        fileno = self._socket.fileno()
        self._loop.remove_reader(fileno)
        self._loop.call_later(0.1, self._loop.add_reader, fileno, self._accept)

    async def _open(self, connection: HttpConnection, client: socket.socket) -> None:
        """Hand the socket to the connection, after the TLS handshake when TLS is configured.
        Cancelled (by the connection's deadline or an eviction) before then, the socket is closed."""
        try:
            if self.web_config.tls is not None:
                first = await self._first_bytes(client)
                if not first.startswith(bytes([_TLS_HANDSHAKE])):
                    if first.startswith(_HTTP_STARTS):
                        _refuse_plain_http(client)
                    connection.close("not a TLS handshake")
                    client.close()
                    return
                context = self.web_config.tls.context()
                await self._loop.connect_accepted_socket(lambda: connection, client, ssl=context,
                                                         ssl_handshake_timeout=self._site.limits.header_seconds)
            else:
                await self._loop.connect_accepted_socket(lambda: connection, client)
        except asyncio.CancelledError:
            client.close()
        except (OSError, ssl.SSLError) as error:
            log.debug("connection from %s failed before its first request: %s", connection.peer, error)
            connection.close(None)
            client.close()
        except Exception:
            log.exception("error while opening the connection from %s", connection.peer)
            connection.close(None)
            client.close()

    async def _first_bytes(self, client: socket.socket) -> bytes:
        """Up to five bytes, peeked: enough to tell a TLS ClientHello from a plain HTTP request."""
        while True:
            try:
                first = client.recv(5, socket.MSG_PEEK)
            except BlockingIOError:
                first = None
            if first is not None and (len(first) == 5 or not first or first[0] == _TLS_HANDSHAKE):
                return first
            if first:  # a few bytes of something else: they stay readable, so poll instead of spinning
                await asyncio.sleep(0.05)
                continue
            readable = self._loop.create_future()
            descriptor = client.fileno()
            self._loop.add_reader(descriptor, readable.set_result, None)
            try:
                await readable
            finally:
                self._loop.remove_reader(descriptor)


def _refuse_plain_http(client: socket.socket) -> None:
    """Go's 400. The request read first: closing with unread bytes would reset the connection
    and lose the answer."""
    try:
        client.recv(65536)
        client.send(_PLAIN_HTTP_TO_TLS)
        client.shutdown(socket.SHUT_WR)
    except OSError as error:
        log.debug("plain HTTP to the TLS port: %s", error)


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A client going away mid-request is routine (a scraper timing out, a probe closing early):
    a debug line. Anything else is a bug worth its traceback in the log."""
    error = context.get("exception")
    if isinstance(error, (ConnectionError, TimeoutError, ssl.SSLError)):
        log.debug("connection ended: %s", error)
    else:
        log.error("error while serving: %s", context.get("message"), exc_info=error)


def _listening_socket(address: ListenAddress) -> socket.socket:
    family, host = _family_and_host(address)
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too on "::"
        listener.bind((host, address.port))
        listener.listen(socket.SOMAXCONN)  # a short backlog drops SYNs when scrapers connect at once
    except OSError as error:
        listener.close()
        raise InputError(f"--web.listen-address: cannot listen on {host or '*'}:{address.port}: "
                         f"{error.strerror}") from None
    listener.setblocking(False)
    return listener


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
