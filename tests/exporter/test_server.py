"""The HTTP side in-process, over a state published by hand: routes, gzip, health, the request
cap, TLS and basic auth."""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import logging
import os
import resource
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest
import requests

from mig_exporter.errors import InputError
from mig_exporter.exporter.collector import ExporterSettings
from mig_exporter.exporter.connection import ServerLimits
from mig_exporter.exporter.flags import ListenAddress
from mig_exporter.exporter.server import RESERVED_DESCRIPTORS, ExporterHTTPServer, connection_cap
from mig_exporter.exporter.state import ExporterState
from mig_exporter.exporter.webconfig import WebConfig, load_web_config

from .certificates import self_signed
from .snapshots import incident


@contextmanager
def serving(state: ExporterState, host: str = "127.0.0.1", **options: object) -> Iterator[ExporterHTTPServer]:
    server = ExporterHTTPServer(ListenAddress(host, 0), state, **options)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def state() -> ExporterState:
    return ExporterState(ExporterSettings(interval_seconds=5))


def url(server: ExporterHTTPServer, path: str, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.port}{path}"


def test_metrics_health_and_landing_page(state: ExporterState) -> None:
    with serving(state, telemetry_path="/metrics") as server:
        before = requests.get(url(server, "/health"), timeout=5)
        assert (before.status_code, before.text) == (503, "no collection has finished yet\n")
        state.publish(incident())
        after = requests.get(url(server, "/health"), timeout=5)
        assert after.status_code == 200 and after.text.startswith("ok: last collection finished")

        metrics = requests.get(url(server, "/metrics"), headers={"Accept-Encoding": "identity"}, timeout=5)
        assert metrics.status_code == 200
        assert metrics.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert metrics.content == state.exposition.plain
        assert "nvml_processes_spanning_gpus 2.0" in metrics.text

        landing = requests.get(url(server, "/"), timeout=5)
        assert landing.headers["Content-Type"].startswith("text/html")
        assert '<a href="/metrics">' in landing.text

        assert requests.get(url(server, "/other"), timeout=5).status_code == 404


def test_head_answers_like_get_without_a_body(state: ExporterState) -> None:
    """RFC 9110: a general-purpose server supports GET and HEAD; health probes may use HEAD."""
    with serving(state, telemetry_path="/metrics") as server:
        assert requests.head(url(server, "/health"), timeout=5).status_code == 503
        state.publish(incident())
        head = requests.head(url(server, "/metrics"), headers={"Accept-Encoding": "identity"}, timeout=5)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["Content-Length"]) == len(state.exposition.plain)
        assert requests.head(url(server, "/health"), timeout=5).status_code == 200
        # the kept-alive connection is still in step after a body-less answer
        assert requests.get(url(server, "/metrics"), timeout=5).status_code == 200


def test_gzip_when_asked(state: ExporterState) -> None:
    state.publish(incident())
    with serving(state, telemetry_path="/metrics") as server, socket.create_connection(
            ("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
                           b"Connection: close\r\n\r\n")
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head
    assert gzip.decompress(body) == state.exposition.plain


def test_custom_telemetry_path(state: ExporterState) -> None:
    state.publish(incident())
    with serving(state, telemetry_path="/gpu-metrics") as server:
        assert requests.get(url(server, "/gpu-metrics"), timeout=5).status_code == 200
        assert requests.get(url(server, "/metrics"), timeout=5).status_code == 404
        assert 'href="/gpu-metrics"' in requests.get(url(server, "/"), timeout=5).text


def test_requests_beyond_the_cap_get_503(state: ExporterState) -> None:
    state.publish(incident())
    with serving(state, telemetry_path="/metrics", max_requests=2) as server:
        assert server.request_slots is not None
        for _ in range(2):  # two scrapes in progress
            assert server.request_slots.try_acquire()
        refused = requests.get(url(server, "/metrics"), timeout=5)
        assert refused.status_code == 503 and "--web.max-requests" in refused.text
        server.request_slots.release()
        assert requests.get(url(server, "/metrics"), timeout=5).status_code == 200


def test_tls_and_basic_auth(tmp_path: Path, state: ExporterState) -> None:
    state.publish(incident())
    certificate = self_signed(tmp_path, "server")
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"basic_auth_users:\n  prometheus: {hashed}\n")
    config = load_web_config(str(tmp_path / "web.yml"))
    with serving(state, telemetry_path="/metrics", web_config=config) as server:
        https = url(server, "/metrics", "https")
        ca = str(certificate.cert_file)
        assert requests.get(https, verify=ca, timeout=5).status_code == 401
        assert requests.get(https, verify=ca, auth=("prometheus", "wrong"), timeout=5).status_code == 401
        ok = requests.get(https, verify=ca, auth=("prometheus", "s3cret"), timeout=5)
        assert ok.status_code == 200 and ok.content == state.exposition.plain
        plain = requests.get(url(server, "/metrics"), timeout=5)  # plain HTTP on the TLS port
        assert (plain.status_code, plain.text) == (400, "Client sent an HTTP request to an HTTPS server.\n")


def test_a_tls_connection_is_kept_alive_across_scrapes(tmp_path: Path, state: ExporterState) -> None:
    """Prometheus keeps one connection per target: over TLS too, each scrape must not cost a new
    handshake. (The TLS transport finishes an answer inside its write; finishing it a second
    time closed every TLS connection after its first answer.)"""
    state.publish(incident())
    certificate = self_signed(tmp_path, "server")
    (tmp_path / "web.yml").write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    context = ssl.create_default_context(cafile=str(certificate.cert_file))
    config = load_web_config(str(tmp_path / "web.yml"))
    with serving(state, telemetry_path="/metrics", web_config=config) as server:
        scraper = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=5, context=context)
        connections = set()
        for _ in range(3):
            scraper.request("GET", "/metrics")
            response = scraper.getresponse()
            assert response.status == 200 and response.read() == state.exposition.plain
            assert scraper.sock is not None
            connections.add(scraper.sock.getsockname())
        scraper.close()
    assert len(connections) == 1


def test_tls_connections_evicted_before_their_handshake_leave_the_loop_sound(
        tmp_path: Path, state: ExporterState, caplog: pytest.LogCaptureFixture) -> None:
    """25 clients connect to the TLS port at a cap of 5 and never send a ClientHello: each one
    evicted while its first bytes were awaited must leave nothing behind on the loop. Its socket
    used to be closed while still watched, which logged a traceback and left a stale entry that
    broke the next connection given the same descriptor (bench_http_load --tls: every scrape)."""
    state.publish(incident())
    certificate = self_signed(tmp_path, "server")
    (tmp_path / "web.yml").write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    config = load_web_config(str(tmp_path / "web.yml"))
    context = ssl.create_default_context(cafile=str(certificate.cert_file))
    limits = ServerLimits(max_connections=5)
    with caplog.at_level(logging.DEBUG, logger="mig_exporter.exporter.server"), serving(
            state, telemetry_path="/metrics", web_config=config, limits=limits) as server:
        silent = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(25)]
        wait_until(lambda: sum(closed_by_server(c) for c in silent) == 20, "the silent clients stayed")
        for _ in range(5):
            scraper = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=5, context=context)
            scraper.request("GET", "/metrics")
            assert scraper.getresponse().status == 200
            scraper.close()
        for client in silent:
            client.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_client_certificates_are_required_when_configured(tmp_path: Path, state: ExporterState) -> None:
    state.publish(incident())
    server_certificate = self_signed(tmp_path, "server")
    client = self_signed(tmp_path, "client")
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client.crt\n")
    config = load_web_config(str(tmp_path / "web.yml"))
    with serving(state, telemetry_path="/metrics", web_config=config) as server:
        https, ca = url(server, "/metrics", "https"), str(server_certificate.cert_file)
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(https, verify=ca, timeout=5)
        client_pair = (str(client.cert_file), str(client.key_file))
        with_cert = requests.get(https, verify=ca, cert=client_pair, timeout=5)
        assert with_cert.status_code == 200


def test_plain_http_has_no_auth_by_default(state: ExporterState) -> None:
    state.publish(incident())
    with serving(state, telemetry_path="/metrics", web_config=WebConfig()) as server:
        credentials = {"Authorization": "Basic " + base64.b64encode(b"a:b").decode()}
        anyone = requests.get(url(server, "/metrics"), headers=credentials, timeout=5)
        assert anyone.status_code == 200


def test_every_interface_includes_ipv4_loopback(state: ExporterState) -> None:
    """``:port`` listens on IPv6 and IPv4 where the host has IPv6, on IPv4 otherwise."""
    state.publish(incident())
    with serving(state, host="", telemetry_path="/metrics") as server:
        assert requests.get(url(server, "/metrics"), timeout=5).status_code == 200


def test_a_name_with_ipv6_and_ipv4_addresses_listens_on_ipv4(
        state: ExporterState, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where /etc/hosts lists ::1 first for localhost, Prometheus scraping 127.0.0.1 must still
    reach ``--web.listen-address localhost:PORT``."""
    resolved = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: resolved)
    with serving(state, host="localhost", telemetry_path="/metrics") as server:
        assert server.server_address[0] == "127.0.0.1"


def test_a_busy_port_is_one_line_naming_the_flag(state: ExporterState) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refusal = rf"^--web\.listen-address: cannot listen on 127\.0\.0\.1:{port}: "
        with pytest.raises(InputError, match=refusal):
            ExporterHTTPServer(ListenAddress("127.0.0.1", port), state, "/metrics")


def test_a_client_resetting_its_connection_is_a_debug_line_not_a_traceback(
        state: ExporterState, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.DEBUG, logger="mig_exporter.exporter.server"), serving(
            state, telemetry_path="/metrics") as server:
        client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        client.sendall(b"GET /metrics HTTP/1.1\r\n")  # half a request, then a reset
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        deadline = time.monotonic() + 5
        while not any("ended" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the reset was not logged"
            time.sleep(0.01)
    assert [r.levelno for r in caplog.records if r.name == "mig_exporter.exporter.server"] == [logging.DEBUG]
    assert "Traceback" not in capfd.readouterr().err


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def raw_exchange(server: ExporterHTTPServer, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(request)
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    return response


def test_trickling_connections_cost_no_threads_and_meet_the_header_deadline(state: ExporterState) -> None:
    """Issue 11 item 3, at a small scale: 200 clients sending a byte at a time cost no thread each
    (the threaded server had one per connection), and each is closed at the head deadline however
    often it sends, while a scraper is answered all along."""
    state.publish(incident())
    limits = ServerLimits(header_seconds=0.5)
    with serving(state, telemetry_path="/metrics", limits=limits) as server:
        threads = threading.active_count()
        tricklers = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(200)]
        wait_until(lambda: len(server.connections.connections) == 200, "the tricklers were not accepted")
        assert threading.active_count() == threads
        assert requests.get(url(server, "/metrics"), timeout=5).status_code == 200
        closed: set[int] = set()

        def trickle() -> bool:
            for index, client in enumerate(tricklers):
                if index not in closed:
                    try:
                        client.send(b"G")
                    except OSError:
                        closed.add(index)
            time.sleep(0.05)
            return len(server.connections.connections) == 0

        wait_until(trickle, "trickling clients outlived the head deadline")
        for client in tricklers:
            client.close()


def test_idle_connections_beyond_the_cap_do_not_starve_scrapers(state: ExporterState) -> None:
    """At the cap the connection idle the longest is closed for the newcomer (the issue: 1,100
    idle connections at a 1,024 descriptor limit kept every scraper out)."""
    state.publish(incident())
    with serving(state, telemetry_path="/metrics", limits=ServerLimits(max_connections=20)) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(30)]
        wait_until(lambda: len(server.connections.connections) == 20, "the cap did not hold")
        for _ in range(5):
            assert requests.get(url(server, "/metrics"), timeout=5).status_code == 200
        assert len(server.connections.connections) <= 20
        assert closed_by_server(idle[0])  # the oldest idle connection was the one closed (reset)
        for client in idle:
            client.close()


def closed_by_server(client: socket.socket) -> bool:
    client.setblocking(False)
    try:
        return client.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:  # an eviction aborts the connection
        return True


def test_a_scrapers_kept_alive_connection_outlasts_a_flood_of_new_ones(state: ExporterState) -> None:
    """At the cap, idle connections never answered with success are closed first: a scraper
    between scrapes keeps its connection through 30 newer idle ones at a cap of 10, where closing
    the longest idle would have closed it first and made every scrape under a flood reconnect."""
    state.publish(incident())
    with serving(state, telemetry_path="/metrics", limits=ServerLimits(max_connections=10)) as server:
        scraper = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)

        def scrape() -> tuple[int, object]:
            scraper.request("GET", "/metrics")
            response = scraper.getresponse()
            response.read()
            assert scraper.sock is not None
            return response.status, scraper.sock.getsockname()

        status, first_connection = scrape()
        assert status == 200
        flood = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(30)]
        wait_until(lambda: sum(closed_by_server(c) for c in flood) == 21, "the flood was not evicted")
        assert scrape() == (200, first_connection)  # answered on the same connection
        scraper.close()
        for client in flood:
            client.close()


def test_an_evicted_connection_frees_its_descriptor_at_once(state: ExporterState) -> None:
    """Each accept at the cap evicts one connection; its descriptor must be free before the next
    accept, or a burst of accepts at a descriptor-limited cap runs out of descriptors (the bench
    saw 975 connections open at a cap of 960 before this)."""
    state.publish(incident())
    with serving(state, telemetry_path="/metrics", limits=ServerLimits(max_connections=10)) as server:
        clients = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
        for client in clients:  # answered: connected, idle, kept alive
            client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 200 OK")
        freed: list[int] = []
        done = threading.Event()

        def evict_one() -> None:  # on the server's loop, as its accept does
            before = len(os.listdir("/proc/self/fd"))
            assert server.connections.evict_longest_idle()
            freed.append(before - len(os.listdir("/proc/self/fd")))
            done.set()

        server._loop.call_soon_threadsafe(evict_one)  # the loop is private; the property is its own
        assert done.wait(5)
        assert freed == [1]
        for client in clients:
            client.close()


def test_the_cap_fits_the_descriptor_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_cap(10**9) == soft - RESERVED_DESCRIPTORS
    assert connection_cap(8) == 8


def test_clients_pipelining_without_reading_hold_no_request_slot(state: ExporterState) -> None:
    """Each pipelines 2,000 scrapes and never reads: nothing more is read from it while its answer
    waits, it holds no --web.max-requests slot, and it is dropped at the write deadline."""
    state.publish(incident())
    limits = ServerLimits(write_seconds=1)
    with serving(state, telemetry_path="/metrics", max_requests=2, limits=limits) as server:
        pipeliners = []
        for _ in range(4):
            client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.setblocking(False)
            try:
                for _ in range(2000):
                    client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
            except BlockingIOError:
                pass  # the server stopped reading: its kernel buffer is full
            pipeliners.append(client)
        stalled = lambda: [c for c in server.connections.connections if c.answered]  # noqa: E731
        wait_until(lambda: len(stalled()) == 4, "the pipeliners were not answered")
        assert all(c.answered < 2000 for c in stalled())  # reading stopped while answers waited
        wait_until(lambda: server.request_slots.in_use == 0, "stalled clients hold request slots")
        for _ in range(3):
            assert requests.get(url(server, "/metrics"), timeout=5).status_code == 200
        wait_until(lambda: not stalled(), "clients that never read outlived the write deadline")
        for client in pipeliners:
            client.close()


def test_a_tls_client_that_never_reads_is_reset_at_the_write_deadline(
        tmp_path: Path, state: ExporterState) -> None:
    """Over TLS nothing it sent is left unread (TLS reads it all), so a plain close would queue a
    FIN behind megabytes it never reads, and the kernel would keep that socket for minutes: the
    client must see a reset instead."""
    state.publish(incident())
    certificate = self_signed(tmp_path, "server")
    (tmp_path / "web.yml").write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    config = load_web_config(str(tmp_path / "web.yml"))
    context = ssl.create_default_context(cafile=str(certificate.cert_file))
    with serving(state, telemetry_path="/metrics", web_config=config,
                 limits=ServerLimits(write_seconds=1)) as server:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client = context.wrap_socket(raw, server_hostname="localhost")
        client.setblocking(False)
        with contextlib.suppress(ssl.SSLWantWriteError):
            for _ in range(2000):
                client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
        wait_until(lambda: server.connections.connections == set(), "the client outlived the write deadline")

        def reset() -> bool:
            try:
                while socket.socket.recv(client, 1 << 16):  # the bytes on the wire, not decrypted
                    pass
            except ConnectionResetError:
                return True
            except BlockingIOError:
                pass
            return False

        wait_until(reset, "the client was not reset")
        client.close()


def test_gzip_follows_q_values_and_the_answer_varies_on_accept_encoding(state: ExporterState) -> None:
    state.publish(incident())
    with serving(state, telemetry_path="/metrics") as server:
        for accept, gzipped in (("gzip;q=0", False), ("gzip;q=0.5, identity", True), ("*", True),
                                ("br, *;q=0", False), ("identity", False), ("GZIP", True)):
            response = raw_exchange(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: "
                                    + accept.encode() + b"\r\nConnection: close\r\n\r\n")
            head = response.partition(b"\r\n\r\n")[0]
            assert (b"Content-Encoding: gzip" in head) is gzipped, accept
            assert b"Vary: Accept-Encoding" in head


def test_a_get_with_a_body_is_one_request(state: ExporterState) -> None:
    """The body is read and dropped, not parsed as a second request."""
    state.publish(incident())
    with serving(state, telemetry_path="/metrics") as server:
        body = b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n"
        response = raw_exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert response.count(b"HTTP/1.1 ") == 1 and response.startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("request_bytes", [b"GET /metrics\r\n\r\n", b"\x00\x01garbage\r\n\r\n",
                                           b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 20000 + b"\r\n\r\n"])
def test_http_0_9_and_garbage_get_a_status_line(state: ExporterState, request_bytes: bytes) -> None:
    with serving(state, telemetry_path="/metrics") as server:
        response = raw_exchange(server, request_bytes)
    assert response.startswith((b"HTTP/1.1 400 Bad Request\r\n", b"HTTP/1.1 431 "))
    assert b"Connection: close" in response


def test_configured_response_headers_are_sent(tmp_path: Path, state: ExporterState) -> None:
    (tmp_path / "web.yml").write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    config = load_web_config(str(tmp_path / "web.yml"))
    with serving(state, telemetry_path="/metrics", web_config=config) as server:
        assert requests.get(url(server, "/health"), timeout=5).headers["X-Frame-Options"] == "deny"


def test_a_rotated_certificate_is_served_to_the_next_connection(tmp_path: Path, state: ExporterState) -> None:
    certificate = self_signed(tmp_path, "server")
    (tmp_path / "web.yml").write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    config = load_web_config(str(tmp_path / "web.yml"))

    def served() -> bytes:
        context = ssl.create_default_context(cafile=None)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, \
                context.wrap_socket(raw) as tls:
            peer = tls.getpeercert(binary_form=True)
            assert peer is not None
            return peer

    with serving(state, telemetry_path="/metrics", web_config=config) as server:
        first = served()
        assert served() == first
        self_signed(tmp_path, "server")
        later = os.stat(certificate.cert_file).st_mtime_ns + 10**9
        os.utime(certificate.cert_file, ns=(later, later))
        assert served() != first


def test_tls_negotiates_http_1_1_with_a_client_offering_h2(tmp_path: Path, state: ExporterState) -> None:
    """Under ``http2: true`` too: HTTP/2 is not served, so ALPN must never pick h2 (a client told
    h2 would send HTTP/2 frames this server cannot parse)."""
    state.publish(incident())
    certificate = self_signed(tmp_path, "server")
    (tmp_path / "web.yml").write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                                      "http_server_config:\n  http2: true\n")
    config = load_web_config(str(tmp_path / "web.yml"))
    context = ssl.create_default_context(cafile=str(certificate.cert_file))
    context.set_alpn_protocols(["h2", "http/1.1"])  # what Go's client (Prometheus) offers
    with serving(state, telemetry_path="/metrics", web_config=config) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert tls.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
