"""The clients ``bench_http_load.py`` plays against ``serve``: Prometheus-like scrapers, and the
hostile kinds issue 11 names (pipelining without reading, trickling, idle)."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

PIPELINED_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: identity\r\n\r\n"
TRICKLE_SECONDS = 0.5


@dataclass(frozen=True)
class Target:
    """Where serve listens, and the client's TLS context when it speaks TLS."""

    port: int
    tls: ssl.SSLContext | None = None

    def http(self, timeout: float) -> http.client.HTTPConnection:
        if self.tls is None:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.tls)

    def trickle_bytes(self) -> tuple[bytes, bytes]:
        """The first bytes and then each byte a trickler sends: a request head, or a TLS handshake
        record announcing 512 bytes of ClientHello, which never come in time."""
        return (b"G", b"E") if self.tls is None else (b"\x16\x03\x01\x02\x00", b"\x00")


class Scraper:
    """One keep-alive connection, as Prometheus keeps one per target. Like Go's client (and so
    Prometheus), a request that finds its reused connection closed by the server before any byte
    of an answer came is sent once more on a new connection: counted as such, not as an error."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.connection = target.http(timeout=10)
        self.reused = False

    def scrape(self) -> tuple[str, int]:
        """The error's kind ('' when answered 200), and 1 if it was sent again."""
        for attempt in (0, 1):
            reused, self.reused = self.reused, True
            try:
                try:
                    self.connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
                    response = self.connection.getresponse()  # RemoteDisconnected: no status line
                except ConnectionError:
                    if reused and not attempt:
                        self._reconnect()
                        continue
                    raise
                body = response.read()
                return ("" if response.status == 200 and body else f"HTTP {response.status}"), attempt
            except (OSError, http.client.HTTPException) as error:
                self._reconnect()
                return type(error).__name__, attempt
        raise AssertionError("unreachable: the second attempt returns")

    def _reconnect(self) -> None:
        self.connection.close()
        self.connection = self.target.http(timeout=10)
        self.reused = False


def open_clients(port: int, count: int,
                 first: Callable[[socket.socket], socket.socket]) -> tuple[list[socket.socket], int]:
    """``count`` connections, each handed to ``first`` (which returns the socket to keep), and how
    many failed to connect."""
    clients, failures = [], 0
    for _ in range(count):
        try:
            clients.append(first(socket.create_connection(("127.0.0.1", port), timeout=5)))
        except OSError:
            failures += 1
    return clients, failures


def pipeline(client: socket.socket, target: Target) -> socket.socket:
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if target.tls is not None:
        client = target.tls.wrap_socket(client, server_hostname="127.0.0.1")
    client.setblocking(False)
    with contextlib.suppress(BlockingIOError, ssl.SSLWantWriteError):  # full: the server stopped reading
        for _ in range(2000):
            client.send(PIPELINED_REQUEST)
    return client


def trickle(tricklers: list[socket.socket], byte: bytes, stop: threading.Event) -> None:
    while not stop.wait(TRICKLE_SECONDS):
        for client in tricklers:
            with contextlib.suppress(OSError):  # closed by the server: counted at the end
                client.send(byte)


def closed_by_server(client: socket.socket) -> bool:
    """Whether the server closed it: read what it sent (a pipeliner's answers) up to the end, as
    bytes on the wire (a TLS socket's own recv would decrypt)."""
    client.setblocking(False)
    try:
        while socket.socket.recv(client, 1 << 16):
            pass
        return True  # the end of the stream
    except BlockingIOError:
        return False  # open, nothing more to read
    except OSError:
        return True  # reset: an eviction or a deadline aborts the connection
