"""Exporter benchmark (issues 2 and 12): prints figures, asserts nothing.

    python3 benchmarks/bench_exporter.py        # large, gpus-64, processes-10k at 0 and 1 ms per call
    python3 benchmarks/bench_exporter.py --fleet seed-incident --latency 0.002 --collections 300

Fleets: a built-in name or a fleet file, or ``gpus-64`` (64 x H100, seven 1g.10gb MIG devices each
with four processes: 448 MIG devices, 1,792 processes) or ``processes-10k`` (8 x H100, MIG off,
1,250 processes each), generated here. Each fleet runs at every ``--latency``: the fleet file's
``call_latency: {seconds: L}``, so every simulated C call costs what a real NVML call would.

For each fleet and latency:

- Collections, in a child process so that its resident memory is the exporter's alone: the
  collection job of ``serve`` (read NVML, render and gzip the exposition) runs ``--collections``
  times back to back (``--collections-at-latency`` when the latency is not 0). Reported: the read
  and the whole cycle per collection, CPU time per cycle (all threads), C calls per collection,
  first and steady (the simulator's ``call_counts``, which counts the two calls of each
  INSUFFICIENT_SIZE list query) and per family of C functions, whether any pynvml function is
  called twice with the same arguments in one collection, and RSS every 100 collections with its
  trend (least-squares slope from the 200th on, after warm-up).
- ``/metrics`` latency (latency 0 only: scrapes never wait on NVML, so the per-call latency does
  not change them): ``mig-exporter serve --fleet F`` and a plain ``http.server`` serving the same
  bytes (HTTP/1.1 keep-alive like the exporter, no gzip for either) each run in their own process;
  ``--scrapers`` threads scrape one of them at a time, in short rounds whose order swaps each time,
  in this same run. Reported: p50 and p99 of each, their ratio, and each server's CPU per scrape.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import http.client
import inspect
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import yaml

MIB = 1024 * 1024
SERVE_TIMEOUT_SECONDS = 10.0  # serve's default --collect.timeout
GENERATED = ("gpus-64", "processes-10k")


# --- fleets ----------------------------------------------------------------------------------------

def fleet_file(fleet: str, latency_seconds: float, directory: Path) -> str:
    """A fleet spec for ``fleet`` (built-in, generated or a path) with every C call costing
    ``latency_seconds``: ``fleet`` itself when there is nothing to add, else a file written here."""
    from mig_exporter.sim import builtin_names, builtin_text

    if fleet in GENERATED:
        document = _generated(fleet)
    elif not latency_seconds:
        return fleet
    else:
        text = builtin_text(fleet) if fleet in builtin_names() else Path(fleet).read_text()
        document = yaml.safe_load(text)
    if latency_seconds:
        document["call_latency"] = {"seconds": latency_seconds}
    path = directory / f"{Path(fleet).stem}-{latency_seconds * 1000:g}ms.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def _generated(name: str) -> dict[str, Any]:
    if name == "gpus-64":
        def mig_gpu(index: int) -> dict[str, Any]:
            return {"model": "H100-SXM5-80GB", "persistence": True, "mig": "enabled",
                    "pci_bus_id": f"00000000:{0x10 + index:02X}:00.0", "instances": [
                {"profile": "1g.10gb", "placement": slot, "processes": [
                    {"pid": 100000 + index * 100 + slot * 10 + n, "name": "python", "used_memory_mib": 1800}
                    for n in range(4)]}
                for slot in range(7)]}
        return {"description": "Benchmark: 64 x H100, 7 x 1g.10gb, 4 processes each", "gpus": [
            mig_gpu(index) for index in range(64)]}
    return {"description": "Benchmark: 8 x H100, MIG off, 1,250 processes each", "gpus": [
        {"model": "H100-SXM5-80GB", "persistence": True, "mig": "disabled", "processes": [
            {"pid": 200000 + index * 2000 + n, "name": "python", "used_memory_mib": 50} for n in range(1250)]}
        for index in range(8)]}


# --- the simulator's own cost -------------------------------------------------------------------

def simulated_call_cost(calls: int = 5000, rounds: int = 7) -> dict[str, float]:
    """Seconds per ``nvmlDeviceGetTemperature`` on ``large`` at latency 0: through pynvml, through
    the simulator's dispatch (counting, faults, latency, lost GPUs), and its implementation alone."""
    import pynvml

    from mig_exporter import sim

    simulator = sim.install("large")
    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        out = ctypes.c_uint()
        dispatched = simulator.nvmlDeviceGetTemperature
        implementation = simulator._library.nvmlDeviceGetTemperature
        ways = {
            "pynvml": lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            "dispatch": lambda: dispatched(handle, pynvml.NVML_TEMPERATURE_GPU, ctypes.byref(out)),
            "implementation": lambda: implementation(handle, pynvml.NVML_TEMPERATURE_GPU, ctypes.byref(out)),
        }
        cost = dict.fromkeys(ways, float("inf"))
        for _ in range(rounds):  # alternating rounds, the fastest of each: the least disturbed
            for name, way in ways.items():
                started = time.perf_counter()
                for _ in range(calls):
                    way()
                cost[name] = min(cost[name], (time.perf_counter() - started) / calls)
        return cost
    finally:
        pynvml.nvmlShutdown()
        sim.uninstall()


# --- child process: collections ------------------------------------------------------------------

def collections(fleet: str, count: int) -> dict[str, Any]:
    """Run the serve job ``count`` times over ``fleet``; figures as a JSON-able dict."""
    import pynvml

    from mig_exporter.exporter.collector import DEFAULT_MAX_PROCESS_SERIES, ExporterSettings
    from mig_exporter.exporter.schedule import CollectionJob
    from mig_exporter.exporter.service import GPU_READS_SHARE_OF_TIMEOUT
    from mig_exporter.exporter.state import ExporterState
    from mig_exporter.host import nvml_session
    from mig_exporter.model import Snapshot
    from mig_exporter.nvml import read

    process = psutil.Process()
    with nvml_session(fleet) as session:
        simulator = session.simulator
        assert simulator is not None
        state = ExporterState(ExporterSettings(interval_seconds=5))

        def read_as_serve() -> Snapshot:  # serve's defaults: the series cap, 80 % of a 10 s timeout
            return read.read_snapshot(session, DEFAULT_MAX_PROCESS_SERIES,
                                      SERVE_TIMEOUT_SECONDS * GPU_READS_SHARE_OF_TIMEOUT)

        job = CollectionJob(read_as_serve, state, timeout_seconds=SERVE_TIMEOUT_SECONDS)
        stale = 0
        # preallocated flat arrays: the benchmark's own bookkeeping must not grow with the RSS it measures
        cycles, reads, cpu = array("d", [0.0]) * count, array("d", [0.0]) * count, array("d", [0.0]) * count
        c_calls = array("q", [0]) * count
        rss = array("q", [0]) * max(1, count // 100)
        first_families: Counter[str] = Counter()
        steady_families: Counter[str] = Counter()
        for n in range(count):
            families_before = simulator.call_families()
            c_before = sum(simulator.call_counts.values())
            cpu_before = process.cpu_times()
            started = time.perf_counter()
            job()
            cycles[n] = time.perf_counter() - started
            cpu_after = process.cpu_times()
            cpu[n] = cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system
            snapshot = state.snapshot
            assert snapshot is not None and snapshot.nvml_up and not snapshot.errors, snapshot
            stale += sum(gpu.stale for gpu in snapshot.gpus)
            reads[n] = snapshot.duration_seconds
            c_calls[n] = sum(simulator.call_counts.values()) - c_before
            if n in (0, count - 1):  # the first collection's families and the last's
                (first_families if n == 0 else steady_families).update(
                    simulator.call_families() - families_before)
            if (n + 1) % 100 == 0 or n + 1 == count:
                rss[min(n // 100, len(rss) - 1)] = process.memory_info().rss
        repeated = _repeated_calls(pynvml, read_as_serve)
        exposition = state.exposition
        gpus = snapshot.gpus
    return {
        "fleet": fleet, "collections": count,
        "gpus": len(gpus), "mig_devices": sum(len(g.mig_instances) for g in gpus),
        "process_series": sum(1 for g in gpus for p in g.processes if p.used_memory_bytes is not None),
        "exposition_bytes": len(exposition.plain), "exposition_gzip_bytes": len(exposition.gzipped),
        "first": {"c_calls": c_calls[0], "cycle_s": cycles[0], "families": first_families},
        "steady_c_calls": sorted(set(c_calls[1:])),
        "steady_c_calls_median": statistics.median(c_calls[1:]), "steady_families": steady_families,
        "read_s": list(reads[1:]), "cycle_s": list(cycles[1:]), "cpu_s": list(cpu[1:]),
        "rss": [(min(count, 100 * (i + 1)), value) for i, value in enumerate(rss)], "repeated": repeated,
        "stale_gpu_reads": stale,
    }


def _repeated_calls(pynvml: Any, collect: Callable[[], Any]) -> list[str]:
    """One more collection with every pynvml function the reader uses wrapped: the calls made
    more than once with the same arguments (handles by address; fresh output buffers by type; a
    request structure, such as GPM's pair of samples, by object). Every argument is held until the
    collection ends: a structure freed after its call could otherwise give its address to the
    next one, and two GPM requests would look like one asked twice."""
    seen: Counter[tuple[Any, ...]] = Counter()
    held: list[tuple[Any, ...]] = []

    def key(argument: Any) -> Any:
        if isinstance(argument, ctypes._Pointer):
            return ctypes.cast(argument, ctypes.c_void_p).value
        if isinstance(argument, ctypes.Structure):
            return id(argument)
        return argument if isinstance(argument, (int, str, bytes)) else type(argument).__name__

    def recording(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any) -> Any:
            held.append(args)
            seen[(function.__name__, *map(key, args))] += 1
            return function(*args)
        return wrapper

    from mig_exporter.nvml import capability, gpm, health, mig_read, process_util, processes, read

    sources = "".join(inspect.getsource(module)
                      for module in (read, capability, process_util, gpm, health, mig_read, processes))
    names = {n for n in re.findall(r"pynvml\.(nvml\w+)", sources)
             if callable(getattr(pynvml, n))}
    originals = {n: getattr(pynvml, n) for n in names}
    try:
        for name, function in originals.items():
            setattr(pynvml, name, recording(function))
        collect()
    finally:
        for name, function in originals.items():
            setattr(pynvml, name, function)
    return [f"{call} x{times}" for call, times in seen.items() if times > 1]


# --- child process: the plain HTTP server -----------------------------------------------------------

def plain_server(body_file: str) -> None:
    """The baseline: the standard library's threaded server answering every GET with the bytes."""
    body = Path(body_file).read_bytes()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as the exporter: without it every response waits 40 ms

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = socket.SOMAXCONN  # as the exporter: 20 scrapers connect at once

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


# --- parent: load generation ----------------------------------------------------------------------

def scrape(port: int, scrapers: int, seconds: float) -> list[float]:
    """Latencies of ``scrapers`` threads each scraping for ``seconds`` on one connection."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(scrapers)

    def scraper() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.connect()  # latency of scrapes, not of TCP handshakes
        mine = []
        start.wait()
        end = time.perf_counter() + seconds
        while (began := time.perf_counter()) < end:
            connection.request("GET", "/metrics", headers={"Accept-Encoding": "identity"})
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - began)
            assert response.status == 200, response.status
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=scraper) for _ in range(scrapers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.1)
    raise SystemExit(f"the exporter on port {port} never became healthy")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape_latency(fleet: str, scrapers: int, seconds: float, round_seconds: float) -> dict[str, Any]:
    """Each server scraped for ``seconds`` in all, in rounds of ``round_seconds``: short rounds,
    the order swapped each time, so both see the same drift of a shared machine, and enough of
    them that the exporter's rounds take in several of its collections (every 5 s), as a
    Prometheus scraping it would."""
    port = free_port()
    exporter = subprocess.Popen([sys.executable, "-m", "mig_exporter", "serve", "--fleet", fleet,
                                 "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warn"])
    baseline: subprocess.Popen[str] | None = None
    try:
        wait_healthy(port)
        body = b""
        deadline = time.monotonic() + 120
        while b"\nnvml_up 1.0\n" not in body:  # the body of a collection that reached NVML
            if time.monotonic() > deadline:
                raise SystemExit(f"the exporter on port {port} never served a collection: {body[-300:]!r}")
            time.sleep(0.2)
            connection = http.client.HTTPConnection("127.0.0.1", port)
            connection.request("GET", "/metrics", headers={"Accept-Encoding": "identity"})
            body = connection.getresponse().read()
            connection.close()
        with tempfile.NamedTemporaryFile(suffix=".prom", delete=False) as file:
            file.write(body)
        baseline = subprocess.Popen([sys.executable, __file__, "--plain-server", file.name],
                                    stdout=subprocess.PIPE, text=True)
        assert baseline.stdout is not None
        baseline_port = int(baseline.stdout.readline())
        latencies: dict[int, list[float]] = {port: [], baseline_port: []}
        cpu = dict.fromkeys(latencies, 0.0)
        servers = {port: psutil.Process(exporter.pid), baseline_port: psutil.Process(baseline.pid)}
        scrape(port, scrapers, 0.2)  # warm-up: connections, caches
        scrape(baseline_port, scrapers, 0.2)
        for n in range(max(1, round(seconds / round_seconds))):
            for server_port in (port, baseline_port) if n % 2 == 0 else (baseline_port, port):
                before = _cpu_seconds(servers[server_port])
                latencies[server_port] += scrape(server_port, scrapers, round_seconds)
                cpu[server_port] += _cpu_seconds(servers[server_port]) - before
        ours, plain = latencies[port], latencies[baseline_port]
        exporter_rss = servers[port].memory_info().rss
    finally:
        exporter.terminate()
        exporter.wait(30)
        if baseline is not None:
            baseline.terminate()
            baseline.wait(30)
    return {"ours": _percentiles(ours), "plain": _percentiles(plain), "requests": len(ours),
            "body_bytes": len(body), "exporter_rss": exporter_rss,
            "cpu_per_scrape": {"ours": cpu[port] / len(ours), "plain": cpu[baseline_port] / len(plain)}}


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _percentiles(latencies: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100)
    return {"p50": statistics.median(latencies), "p99": cuts[98]}


# --- report -------------------------------------------------------------------------------------

def report(figures: dict[str, Any], latency_seconds: float) -> None:
    ms = 1000
    read_cuts, cycle_cuts = _percentiles(figures["read_s"]), _percentiles(figures["cycle_s"])
    cpu_cuts = _percentiles(figures["cpu_s"])
    rss = figures["rss"]
    first = figures["first"]
    print(f"fleet {figures['fleet_name']} at {latency_seconds * ms:g} ms per C call: {figures['gpus']} GPUs, "
          f"{figures['mig_devices']} MIG devices, {figures['process_series']} process series; exposition "
          f"{figures['exposition_bytes'] / 1024:.0f} KiB "
          f"({figures['exposition_gzip_bytes'] / 1024:.0f} KiB gzip)")
    print(f"  collection, {figures['collections']} cycles: read p50 {read_cuts['p50'] * ms:.1f} ms, "
          f"p99 {read_cuts['p99'] * ms:.1f} ms; whole cycle (read + render + gzip) p50 "
          f"{cycle_cuts['p50'] * ms:.1f} ms, p99 {cycle_cuts['p99'] * ms:.1f} ms; "
          f"first cycle {first['cycle_s'] * ms:.1f} ms; CPU per cycle p50 {cpu_cuts['p50'] * ms:.1f} ms, "
          f"p99 {cpu_cuts['p99'] * ms:.1f} ms")
    print(f"  C calls per collection: first {first['c_calls']} ({_families(first['families'])}), then "
          f"{_listing(figures['steady_c_calls'])}, median {figures['steady_c_calls_median']:g} "
          f"(the last: {_families(figures['steady_families'])}); "
          f"repeated within a cycle: {', '.join(figures['repeated']) or 'none'}; "
          f"GPU reads served stale: {figures['stale_gpu_reads']}")
    trend = ""
    tail = [(n, r) for n, r in rss if n >= 200]
    if len(tail) >= 2:
        slope = statistics.linear_regression([n for n, _ in tail], [r for _, r in tail]).slope
        trend = f"; trend {slope * 100 / 1024:+.1f} KiB per 100 collections"
    print(f"  RSS: {', '.join(f'{r / MIB:.1f} MiB after {n}' for n, r in rss[:: max(1, len(rss) // 5)])}; "
          f"{rss[-1][1] / MIB:.1f} MiB after {rss[-1][0]}{trend}")


def report_scrapes(scraped: dict[str, Any], scrapers: int, seconds: float) -> None:
    ms = 1000
    ours, plain = scraped["ours"], scraped["plain"]
    print(f"  /metrics, {scrapers} concurrent scrapers for {seconds:g} s per server, {scraped['requests']} "
          f"scrapes of mig-exporter ({scraped['body_bytes'] / 1024:.0f} KiB, no gzip): mig-exporter "
          f"p50 {ours['p50'] * ms:.2f} ms, "
          f"p99 {ours['p99'] * ms:.2f} ms; plain http.server p50 {plain['p50'] * ms:.2f} ms, "
          f"p99 {plain['p99'] * ms:.2f} ms; ratio p50 {ours['p50'] / plain['p50']:.2f}x, "
          f"p99 {ours['p99'] / plain['p99']:.2f}x; server CPU per scrape mig-exporter "
          f"{scraped['cpu_per_scrape']['ours'] * 1e6:.0f} µs (its collections included), plain "
          f"{scraped['cpu_per_scrape']['plain'] * 1e6:.0f} µs; "
          f"serve RSS {scraped['exporter_rss'] / MIB:.1f} MiB")


def _families(counts: dict[str, int]) -> str:
    return ", ".join(f"{family} {count}" for family, count in sorted(counts.items(), key=lambda kv: -kv[1]))


def _listing(values: list[int]) -> str:
    """Each distinct count, or their range when they vary (GPM's and the layout's cadences)."""
    if len(values) <= 4:
        return "/".join(map(str, values))
    return f"{values[0]}-{values[-1]} ({len(values)} distinct)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleet", action="append",
                        help="built-in fleet, fleet file, gpus-64 or processes-10k "
                             "(default: large, gpus-64, processes-10k)")
    parser.add_argument("--latency", action="append", type=float, metavar="SECONDS",
                        help="simulated seconds per C call (default: 0 and 0.001)")
    parser.add_argument("--collections", type=int, default=300, help="collections at latency 0")
    parser.add_argument("--collections-at-latency", type=int, default=10,
                        help="collections at a latency above 0")
    parser.add_argument("--scrapers", type=int, default=20)
    parser.add_argument("--scrape-seconds", type=float, default=20.0,
                        help="seconds each server is scraped, in alternating rounds (default 20)")
    parser.add_argument("--round-seconds", type=float, default=1.0, help="seconds per round (default 1)")
    parser.add_argument("--child-collections", metavar="FLEET", help=argparse.SUPPRESS)
    parser.add_argument("--plain-server", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.collections, args.collections_at_latency) < 2:
        parser.error("--collections, --collections-at-latency: at least 2 (a first and a steady one)")
    if args.plain_server:
        plain_server(args.plain_server)
        return
    if args.child_collections:
        print(json.dumps(collections(args.child_collections, args.collections)))
        return
    print(f"mig-exporter benchmark on {psutil.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    cost = simulated_call_cost()
    us = 1e6
    print(f"simulated C call at latency 0 (nvmlDeviceGetTemperature): {cost['pynvml'] * us:.1f} µs through "
          f"pynvml, {cost['dispatch'] * us:.1f} µs at the simulator's dispatch, of which "
          f"{cost['implementation'] * us:.1f} µs its implementation: the dispatch's own share "
          f"{(cost['dispatch'] - cost['implementation']) / cost['dispatch']:.0%}")
    with tempfile.TemporaryDirectory(prefix="mig-exporter-bench-") as directory:
        for fleet in args.fleet or ["large", *GENERATED]:
            for latency_seconds in args.latency or [0.0, 0.001]:
                spec = fleet_file(fleet, latency_seconds, Path(directory))
                count = args.collections if not latency_seconds else args.collections_at_latency
                child = subprocess.run([sys.executable, __file__, "--child-collections", spec,
                                        "--collections", str(count)],
                                       capture_output=True, text=True, check=True,
                                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
                figures = json.loads(child.stdout)
                figures["fleet_name"] = fleet
                report(figures, latency_seconds)
                if not latency_seconds:
                    scraped = scrape_latency(spec, args.scrapers, args.scrape_seconds, args.round_seconds)
                    report_scrapes(scraped, args.scrapers, args.scrape_seconds)


if __name__ == "__main__":
    main()
