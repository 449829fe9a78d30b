"""One HTTP/1.1 connection on the server's event loop: h11 parses, this moves bytes and keeps time.

Each connection is always in one of four phases, and each phase has its own bound, the ones
Go's ``http.Server`` and nginx put on a connection:

- awaiting a request: closed after ``idle_seconds`` (Go's IdleTimeout, nginx keepalive_timeout);
- receiving one: the whole head (and any body) within ``header_seconds`` of its first byte, and the
  first request within ``header_seconds`` of the accept, TLS handshake included (Go's
  ReadHeaderTimeout, nginx client_header_timeout): a client trickling a byte at a time is closed
  however often it sends;
- answering: holds one ``--web.max-requests`` slot until the answer is handed to the transport;
- writing: the answer must drain within ``write_seconds`` (Go's WriteTimeout, nginx send_timeout).
  Nothing more is read from a client that does not read its answers, so a client pipelining
  requests it never reads holds one answer's bytes and no request slot.

A connection awaiting or receiving a request is idle: when the server is full, an idle one is
closed to admit a new one (nginx's reuse of keep-alive connections), so idle and trickling
clients cannot keep scrapers out. The longest idle of those that never had a successful answer
goes first; a kept-alive connection that had one (a scraper between scrapes) goes only when no
such connection is left, so a flood of new connections cannot make every scrape reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import struct
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from mig_exporter.exporter.heads import ResponseHeads
from mig_exporter.exporter.routes import Answer, answer, text_answer
from mig_exporter.exporter.state import ExporterState
from mig_exporter.exporter.webconfig import WebConfig

log = logging.getLogger("mig_exporter.exporter.server")

# Go's http.Server reads at most 1 MiB of request head; nothing this exporter serves needs more
# than a request line, a Host and an Authorization header.
MAX_HEAD_BYTES = 16 * 1024
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
# --web.max-connections: nginx's worker_connections default; lowered to the descriptor limit.
DEFAULT_MAX_CONNECTIONS = 1024


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_seconds: float = 10.0
    idle_seconds: float = 300.0  # Prometheus keeps idle connections 5 minutes
    write_seconds: float = 30.0


class RequestSlots:
    """``--web.max-requests``: requests being answered at once (0: no cap, node_exporter's meaning)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self.limit and self.in_use >= self.limit:
                return False
            self.in_use += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.in_use -= 1


class ConnectionTable:
    """The open connections, at most ``limit``; a full table closes an idle one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.connections: set[HttpConnection] = set()

    def admit(self, connection: HttpConnection) -> bool:
        if len(self.connections) >= self.limit and not self.evict_longest_idle():
            return False
        self.connections.add(connection)
        return True

    def evict_longest_idle(self) -> bool:
        """Close an idle connection: the longest idle of those never answered with success, or
        else the longest idle of all."""
        idle = [c for c in self.connections if c.idle_since is not None]
        if not idle:
            return False
        min(idle, key=lambda c: (c.succeeded, c.idle_since or 0.0)).close("evicted to admit a new connection")
        return True

    def close_all(self) -> None:
        for connection in list(self.connections):
            connection.close("server stopping")


@dataclass(frozen=True)
class Site:
    """What every connection of one server shares."""

    state: ExporterState
    telemetry_path: str
    web_config: WebConfig
    slots: RequestSlots
    limits: ServerLimits
    table: ConnectionTable
    auth_executor: Executor
    heads: ResponseHeads


class _Phase(enum.Enum):
    AWAITING = "awaiting a request"
    RECEIVING = "receiving a request"
    ANSWERING = "answering"
    WRITING = "writing an answer"
    CLOSED = "closed"


class HttpConnection(asyncio.Protocol):
    """Created at accept, before any TLS handshake, so that the first request's deadline and the
    connection cap cover the handshake too."""

    def __init__(self, site: Site, peer: object) -> None:
        self._site = site
        self.peer = peer
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._transport: asyncio.Transport | None = None
        self._opening: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self._phase = _Phase.AWAITING
        self._first_request = True
        self._request: h11.Request | None = None
        self._close_after_answer = False
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(site.limits.header_seconds,
                                                                        self._timed_out)
        self.idle_since: float | None = time.monotonic()
        self.answered = 0
        self.succeeded = False  # any answer below 400: a client that has shown it is one

    def opening(self, client: socket.socket, task: asyncio.Task[None]) -> None:
        """The accepted socket, and the task that sniffs its first bytes and shakes hands. Closed
        first, this cancels the task, which closes the socket once it has taken it off the loop
        (a socket closed while the loop still watches it leaves a stale entry that breaks the next
        socket given the same descriptor); a task cancelled before it started cannot, so the
        socket is closed when the task ends cancelled."""
        self._socket, self._opening = client, task
        task.add_done_callback(lambda done: client.close() if done.cancelled() else None)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        # pause_writing is called whenever anything is left unsent, resume_writing once it all left.
        transport.set_write_buffer_limits(high=0, low=0)
        if self._phase is _Phase.CLOSED:
            transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._phase is _Phase.AWAITING and data:
            self._phase = _Phase.RECEIVING
            if not self._first_request:
                self._arm(self._site.limits.header_seconds)
        self._h11.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        self._h11.receive_data(b"")
        if self._phase in (_Phase.AWAITING, _Phase.RECEIVING):
            self._process()
        self._close_after_answer = True
        return self._phase in (_Phase.ANSWERING, _Phase.WRITING)  # keep the write side for the answer

    def pause_writing(self) -> None:
        """Only ever while writing: the answer did not all fit in the kernel's buffer."""

    def resume_writing(self) -> None:
        if self._phase is _Phase.WRITING:
            self._written()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("connection from %s ended: %s", self.peer, exc)
        self._forget()

    # phases

    def _process(self) -> None:
        while self._phase in (_Phase.AWAITING, _Phase.RECEIVING):
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as error:
                log.debug("bad request from %s: %s", self.peer, error)
                self._close_after_answer = True
                self._send(text_answer(error.error_status_hint, "bad request"), head_only=False)
                return
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Request):
                self._request = event
            elif isinstance(event, h11.EndOfMessage):
                self._answer()
            elif isinstance(event, h11.ConnectionClosed):
                self.close(None)
            # h11.Data: a body nobody asked for, read and dropped

    def _answer(self) -> None:
        self._phase, self.idle_since = _Phase.ANSWERING, None
        self._cancel_timer()
        self._start_answer()
        if self._transport is not None and self._phase in (_Phase.ANSWERING, _Phase.WRITING):
            # Nothing more is read until the answer has left. Paused only now: a scrape answered
            # and written at once (the usual case) then costs no pause and resume (two epoll_ctl).
            self._transport.pause_reading()

    def _start_answer(self) -> None:
        site = self._site
        if not site.slots.try_acquire():
            self._send(text_answer(503, "too many concurrent requests (--web.max-requests)"))
            return
        authorization = self._header(b"authorization")
        auth = site.web_config.basic_auth
        if auth is None or auth.remembered(authorization):
            self._answer_authorised(True)
            return
        checked = self._loop.run_in_executor(site.auth_executor, auth.allows, authorization)
        checked.add_done_callback(lambda future: self._answer_authorised(
            not future.cancelled() and future.exception() is None and bool(future.result())))

    def _answer_authorised(self, authorised: bool) -> None:
        try:
            if self._phase is not _Phase.ANSWERING:
                return  # closed while bcrypt ran
            request = self._request
            assert request is not None
            if not authorised:
                challenge = {"WWW-Authenticate": 'Basic realm="mig-exporter"'}
                self._send(text_answer(401, "unauthorized", challenge))
            elif request.method not in (b"GET", b"HEAD"):
                self._send(text_answer(405, "only GET and HEAD are served", {"Allow": "GET, HEAD"}))
            else:
                path = urlsplit(request.target.decode("ascii", "replace")).path
                site = self._site
                self._send(answer(site.state, site.telemetry_path, path,
                                  self._header(b"accept-encoding").decode("latin-1")))
        finally:
            self._site.slots.release()

    def _send(self, reply: Answer, head_only: bool | None = None) -> None:
        transport = self._transport
        if transport is None or self._phase is _Phase.CLOSED:
            return
        if head_only is None:
            head_only = self._request is not None and self._request.method == b"HEAD"
        try:
            chunks = self._h11.send_with_data_passthrough(
                self._site.heads.response(reply, self._close_after_answer)) or []
            if not head_only:
                chunks += self._h11.send_with_data_passthrough(h11.Data(data=reply.body)) or []
            chunks += self._h11.send_with_data_passthrough(h11.EndOfMessage()) or []
        except h11.LocalProtocolError as error:  # no answer can follow what the client sent
            self.close(f"cannot answer: {error}")
            return
        self.answered += 1
        self.succeeded = self.succeeded or reply.status < 400
        self._phase, self.idle_since = _Phase.WRITING, None
        transport.writelines(chunks)
        if self._phase is not _Phase.WRITING:
            return  # finished already: a TLS transport calls resume_writing inside writelines
        if transport.get_write_buffer_size() == 0:
            self._written()
        else:
            self._arm(self._site.limits.write_seconds)

    def _written(self) -> None:
        self._cancel_timer()
        both_done = self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE
        if self._close_after_answer or not both_done:
            self.close(None)
            return
        self._h11.start_next_cycle()
        self._request, self._first_request = None, False
        self._phase, self.idle_since = _Phase.AWAITING, time.monotonic()
        if self._h11.trailing_data[0]:
            self._phase = _Phase.RECEIVING  # a pipelined request, already here
        self._arm(self._site.limits.header_seconds if self._phase is _Phase.RECEIVING
                  else self._site.limits.idle_seconds)
        if self._transport is not None:
            self._transport.resume_reading()
        if self._phase is _Phase.RECEIVING:
            self._loop.call_soon(self._process)  # a turn for other connections, and no recursion

    def _timed_out(self) -> None:
        self.close(f"timed out {self._phase.value}")

    def close(self, reason: str | None) -> None:
        """Drop the connection now (unsent bytes too); ``reason`` is logged at debug level."""
        if self._phase is _Phase.CLOSED:
            return
        if reason:
            log.debug("closing the connection from %s: %s", self.peer, reason)
        if self._transport is not None:
            # what was written before a normal close still leaves; an eviction or timeout aborts
            if reason is None:
                self._transport.close()
            else:
                self._transport.abort()
                # abort() has taken the socket off the loop but closes it only on the loop's next
                # turn: close it now, so that each connection evicted to admit a new one frees its
                # descriptor before the next accept (else a burst of accepts at the cap overshoots it)
                if self._socket is not None:
                    _reset(self._socket)
        else:
            opening = self._opening
            if opening is not None and not opening.done() and opening is not asyncio.current_task(self._loop):
                opening.cancel()  # it closes the socket (``opening`` says why not here)
            elif self._socket is not None:
                self._socket.close()
        self._forget()

    def _forget(self) -> None:
        self._phase, self.idle_since = _Phase.CLOSED, None
        self._cancel_timer()
        self._site.table.connections.discard(self)

    def _arm(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(seconds, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header(self, name: bytes) -> bytes:
        """The first value of a header (h11 gives names lowercased)."""
        if self._request is not None:
            for header, value in self._request.headers:
                if header == name:
                    return bytes(value)
        return b""


def _reset(client: socket.socket) -> None:
    """Close with a reset, as nginx's ``reset_timedout_connection`` does: a plain close queues a
    FIN behind the unsent bytes, and for a client that never reads (a TLS pipeliner: TLS has read
    all it sent, so nothing unread forces a reset) the kernel then keeps the orphaned socket and
    its megabytes of send buffer for minutes."""
    with contextlib.suppress(OSError):  # closed already
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    client.close()
