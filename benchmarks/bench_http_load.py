"""HTTP load benchmark (issue 11 item 3): hostile clients and real scrapers at once against
``mig-exporter serve``; prints counts and figures, asserts nothing.

    python3 benchmarks/bench_http_load.py                 # the issue's sizes, 40 s
    python3 benchmarks/bench_http_load.py --seconds 10 --tricklers 3000 --idle 0

``serve --fleet seed-incident`` runs in a child process on a free loopback port, with its file
descriptor limit set to ``--server-nofile`` (1,024 by default: systemd's soft limit, at which the
issue saw 1,100 idle connections starve every scraper). Then, in this order, so that each group
finds the server as full as the ones before left it:

- ``--pipeliners`` clients each pipeline requests, without reading, until their send buffer is full;
- ``--tricklers`` clients each send one byte of a request head every half second;
- ``--idle`` clients connect and send nothing;
- ``--scrapers`` threads each scrape ``/metrics`` (gzip, keep-alive, as Prometheus does) back to back
  for ``--seconds``, while the tricklers go on trickling.

Reported: scrapes answered, errors by kind, scrape p50 and p99, the server's threads and RSS
before, at most and after, its established connections at most and at the end against its cap,
and how many of each hostile group the server closed. Nothing hostile reconnects once closed.
``run_load`` is also what ``tests/exporter/test_http_load.py`` runs, at a CI size.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil
from load_clients import Scraper, Target, closed_by_server, open_clients, pipeline, trickle

MIB = 1024 * 1024
SAMPLE_SECONDS = 0.5


@dataclass(frozen=True)
class LoadPlan:
    scrapers: int = 50
    seconds: float = 40.0
    tricklers: int = 1000
    pipeliners: int = 50
    idle: int = 1100
    max_connections: int | None = None  # serve's default
    server_nofile: int | None = 1024  # None: this process's limit
    interval: float = 0.0  # between one scraper's scrapes; 0: back to back
    churn_per_second: int = 0  # new idle connections opened each second while scraping
    tls: bool = False  # serve with a self-signed certificate; the hostile clients never finish a handshake


@dataclass
class LoadResult:
    scrapes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    scrapes_per_scraper: list[int] = field(default_factory=list)
    threads: dict[str, int] = field(default_factory=dict)  # before, peak, after
    rss_mib: dict[str, float] = field(default_factory=dict)
    established: dict[str, int] = field(default_factory=dict)  # peak, end
    cap: int = 0
    opened: Counter[str] = field(default_factory=Counter)
    closed_by_server: Counter[str] = field(default_factory=Counter)
    connect_failures: int = 0
    retried: int = 0  # scrapes sent again on a new connection: the server had closed the idle one
    exit_code: int | None = None


def run_load(plan: LoadPlan) -> LoadResult:
    _raise_own_descriptor_limit(plan)
    result = LoadResult()
    with tempfile.TemporaryDirectory() as directory, open(Path(directory) / "serve.log", "w+b") as log:
        return _run_load(plan, result, log, Path(directory))


def _run_load(plan: LoadPlan, result: LoadResult, log: IO[bytes], directory: Path) -> LoadResult:
    process, target = _start_exporter(plan, log, directory)
    port = target.port
    server = psutil.Process(process.pid)
    hostile: dict[str, list[socket.socket]] = {"pipeliners": [], "tricklers": [], "idle": []}
    sampler = _Sampler(server, port)
    first_trickle, trickle_byte = target.trickle_bytes()

    def start_trickling(client: socket.socket) -> socket.socket:
        client.send(first_trickle)
        return client

    try:
        result.threads["before"] = server.num_threads()
        result.rss_mib["before"] = server.memory_info().rss / MIB
        sampler.start()
        for group, count, first in (("pipeliners", plan.pipeliners, lambda c: pipeline(c, target)),
                                    ("tricklers", plan.tricklers, start_trickling),
                                    ("idle", plan.idle, lambda c: c)):
            hostile[group], failures = open_clients(port, count, first)
            result.opened[group] = len(hostile[group])
            result.connect_failures += failures
            if group == "pipeliners":
                time.sleep(0.5)  # answered and stalled, so no longer idle: the cap cannot close them
        stop = threading.Event()
        trickling = threading.Thread(target=trickle, args=(hostile["tricklers"], trickle_byte, stop),
                                     daemon=True)
        churning = threading.Thread(target=_churn, args=(port, plan, result, stop), daemon=True)
        trickling.start()
        churning.start()
        _scrape_in_parallel(target, plan, result)
        stop.set()
        trickling.join()
        churning.join()
        time.sleep(SAMPLE_SECONDS)  # let the last evictions land before the end figures
        sampler.stop()
        for group, clients in hostile.items():
            result.closed_by_server[group] = sum(1 for client in clients if closed_by_server(client))
        result.threads["peak"], result.threads["after"] = sampler.threads_peak, server.num_threads()
        result.rss_mib["peak"] = sampler.rss_peak / MIB
        result.rss_mib["after"] = server.memory_info().rss / MIB
        result.established["peak"], result.established["end"] = sampler.established_peak, _established(
            server, port)
        result.cap = _cap(plan)
    finally:
        try:
            sampler.stop()
            for clients in hostile.values():
                for client in clients:
                    client.close()
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                result.exit_code = process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return result


def _raise_own_descriptor_limit(plan: LoadPlan) -> None:
    wanted = plan.tricklers + plan.pipeliners + plan.idle + plan.scrapers + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def _cap(plan: LoadPlan) -> int:
    """The cap serve will apply: ``--web.max-connections`` lowered to the descriptor limit less 64."""
    from mig_exporter.exporter.connection import DEFAULT_MAX_CONNECTIONS
    from mig_exporter.exporter.server import RESERVED_DESCRIPTORS

    wanted = plan.max_connections or DEFAULT_MAX_CONNECTIONS
    nofile = plan.server_nofile or resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(1, min(wanted, nofile - RESERVED_DESCRIPTORS))


def _start_exporter(plan: LoadPlan, log: IO[bytes],
                    directory: Path) -> tuple[subprocess.Popen[bytes], Target]:
    """serve, its warnings and errors to ``log`` (quoted if it does not come up)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    flags = ["--web.max-connections", str(plan.max_connections)] if plan.max_connections else []
    target = Target(port)
    if plan.tls:
        flags += ["--web.config.file", str(_tls_web_config(directory))]
        target = Target(port, ssl.create_default_context(cafile=str(directory / "server.crt")))
    nofile = plan.server_nofile

    def limit_descriptors() -> None:
        if nofile is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    process = subprocess.Popen(
        [sys.executable, "-m", "mig_exporter", "serve", "--fleet", "seed-incident",
         "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warn", *flags],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=limit_descriptors)
    deadline = time.monotonic() + 60
    while not _healthy(target):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.seek(0)
            raise RuntimeError(f"serve did not answer /health with 200 (exit {process.wait()}): "
                               f"{log.read().decode(errors='replace')[-2000:]}")
        time.sleep(0.1)
    return process, target


def _tls_web_config(directory: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (openssl, as on every machine with Prometheus)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(directory / "server.key"),
         "-out", str(directory / "server.crt"), "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    config = directory / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    return config


def _healthy(target: Target) -> bool:
    try:
        connection = target.http(timeout=2)
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False


def _churn(port: int, plan: LoadPlan, result: LoadResult, stop: threading.Event) -> None:
    """``churn_per_second`` new idle connections a second, in tenths: each one the server admits
    closes the connection idle the longest. This side closes its own once past the cap's worth."""
    opened: collections.deque[socket.socket] = collections.deque()
    kept = _cap(plan) + 100
    while plan.churn_per_second and not stop.wait(0.1):
        clients, failures = open_clients(port, max(1, plan.churn_per_second // 10), lambda c: c)
        result.opened["churned idle"] += len(clients)
        result.connect_failures += failures
        opened.extend(clients)
        while len(opened) > kept:
            _forget(opened.popleft(), "churned idle", result)
    while opened:
        _forget(opened.popleft(), "churned idle", result)


def _forget(client: socket.socket, group: str, result: LoadResult) -> None:
    result.closed_by_server[group] += closed_by_server(client)
    client.close()


def _scrape_in_parallel(target: Target, plan: LoadPlan, result: LoadResult) -> None:
    deadline = time.monotonic() + plan.seconds
    lock = threading.Lock()
    result.scrapes_per_scraper = [0] * plan.scrapers

    def scrape(index: int) -> None:
        scraper = Scraper(target)
        next_scrape = time.monotonic()
        while next_scrape < deadline:
            started = time.perf_counter()
            kind, retried = scraper.scrape()
            elapsed = time.perf_counter() - started
            with lock:
                result.retried += retried
                if kind:
                    result.errors[kind] += 1
                else:
                    result.scrapes += 1
                    result.scrapes_per_scraper[index] += 1
                    result.latencies.append(elapsed)
            next_scrape = max(next_scrape + plan.interval, time.monotonic())
            time.sleep(next_scrape - time.monotonic() if plan.interval else 0)
        scraper.connection.close()

    scrapers = [threading.Thread(target=scrape, args=(i,), daemon=True) for i in range(plan.scrapers)]
    for scraper in scrapers:
        scraper.start()
    for scraper in scrapers:
        scraper.join()


def _established(server: psutil.Process, port: int) -> int:
    return sum(1 for c in server.net_connections(kind="tcp")
               if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)


class _Sampler(threading.Thread):
    """The server's threads, RSS and established connections, every half second."""

    def __init__(self, server: psutil.Process, port: int) -> None:
        super().__init__(daemon=True)
        self._server, self._port, self._stopping = server, port, threading.Event()
        self.threads_peak = self.rss_peak = self.established_peak = 0

    def run(self) -> None:
        while not self._stopping.wait(SAMPLE_SECONDS):
            with contextlib.suppress(psutil.Error):
                self.threads_peak = max(self.threads_peak, self._server.num_threads())
                self.rss_peak = max(self.rss_peak, self._server.memory_info().rss)
                self.established_peak = max(self.established_peak, _established(self._server, self._port))

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join()


def report(plan: LoadPlan, result: LoadResult) -> str:
    latencies = sorted(result.latencies)
    p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else float("nan")
    lines = [
        f"plan: {plan.scrapers} scrapers for {plan.seconds:g} s; {plan.pipeliners} pipeliners, "
        f"{plan.tricklers} tricklers, {plan.idle} idle{', TLS' if plan.tls else ''}; "
        f"server nofile {plan.server_nofile or 'inherited'}, "
        f"connection cap {result.cap}",
        f"scrapes answered: {result.scrapes}, {result.scrapes / plan.seconds:.0f}/s "
        f"(fewest by one scraper: {min(result.scrapes_per_scraper, default=0)})",
        f"scrape errors: {sum(result.errors.values())} {dict(result.errors) or ''}".rstrip(),
        f"scrape latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms",
        "server threads: before {before}, peak {peak}, after {after}".format(**result.threads),
        "server RSS MiB: before {before:.1f}, peak {peak:.1f}, after {after:.1f}".format(**result.rss_mib),
        f"established connections: peak {result.established['peak']}, at the end "
        f"{result.established['end']} (cap {result.cap})",
        f"connect failures: {result.connect_failures}",
        f"scrapes sent again on a new connection (the server had closed the idle one): {result.retried}",
    ]
    lines += [f"{group}: {result.opened[group]} opened, {result.closed_by_server[group]} closed by the server"
              for group in ("pipeliners", "tricklers", "idle", "churned idle")]
    lines.append(f"serve exit status after SIGTERM: {result.exit_code}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    defaults = LoadPlan()
    parser.add_argument("--scrapers", type=int, default=defaults.scrapers)
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--tricklers", type=int, default=defaults.tricklers)
    parser.add_argument("--pipeliners", type=int, default=defaults.pipeliners)
    parser.add_argument("--idle", type=int, default=defaults.idle)
    parser.add_argument("--interval", type=float, default=defaults.interval,
                        help="seconds between one scraper's scrapes (default 0: back to back)")
    parser.add_argument("--churn", type=int, default=defaults.churn_per_second, metavar="PER_SECOND",
                        help="new idle connections a second while scraping (default 0)")
    parser.add_argument("--tls", action="store_true",
                        help="serve TLS (a self-signed certificate); scrapers use it, hostile clients never "
                             "finish a handshake")
    parser.add_argument("--max-connections", type=int, default=None,
                        help="serve's --web.max-connections (default: serve's own)")
    parser.add_argument("--server-nofile", type=int, default=defaults.server_nofile,
                        help="serve's file descriptor limit; 0 for this process's (default 1024)")
    args = parser.parse_args(argv)
    plan = LoadPlan(args.scrapers, args.seconds, args.tricklers, args.pipeliners, args.idle,
                    args.max_connections, args.server_nofile or None, args.interval, args.churn, args.tls)
    print(f"$ {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(report(plan, run_load(plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
