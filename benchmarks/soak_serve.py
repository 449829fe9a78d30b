"""Soak of ``mig-exporter serve`` under process churn (issue 11 item 9): prints counts.

    .venv/bin/python benchmarks/soak_serve.py                      # 200 generations, 4 scrapers
    .venv/bin/python benchmarks/soak_serve.py --generations 2000 --scrapers 8

``serve`` runs as a real process on a free loopback port over a fleet file this script rewrites
(atomically, as an editor or the simulator does) once per generation: processes come and go on
three whole GPUs and on the two MIG instances of the fourth, and pids are drawn from a small pool,
so a pid often comes back under another name (a new program), as on a busy host. Scrapers fetch
``/metrics`` without pause meanwhile. After each rewrite the script scrapes until the per-process
series are exactly the new generation's (the gone processes' series disappeared, every pid with
its current name), or counts a mismatch after 20 s. The serve process's RSS and thread count are
sampled after a warm-up and at the end; it is stopped with SIGTERM and its exit status and log
are checked for tracebacks.

``tests/exporter/test_soak.py`` runs ``soak()`` at CI size and asserts on what it returns.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

PID_POOL = range(40001, 40013)  # 12 pids for up to 6 processes at a time: reuse is frequent
WAIT_SECONDS = 20.0  # for one generation's series to show; past it, a mismatch is counted
LAST_COLLECTION = "mig_exporter_last_collection_timestamp_seconds"
STAMP = re.compile(rb"^mig_exporter_last_collection_timestamp_seconds (\S+)$", re.MULTILINE)

# A process as the per-process series name it: (GPU index, pid, process name).
Placed = tuple[str, str, str]


@dataclass
class Figures:
    generations: int = 0
    collections: int = 0  # distinct last-collection timestamps seen: a lower bound
    scrapes: int = 0
    scrape_errors: int = 0
    pid_reuses: int = 0  # a pid back under another name than it had last
    gone: int = 0  # processes whose series had to disappear
    mismatches: list[str] = field(default_factory=list)
    rss_mib: tuple[float, float] = (0.0, 0.0)  # after the warm-up, at the end
    threads: tuple[int, int] = (0, 0)
    exit_code: int | None = None
    port_released: bool = False
    log_problems: list[str] = field(default_factory=list)  # tracebacks, errors logged
    collections_skipped: int = 0  # a collection still running at the next tick


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a new server can listen on ``port`` (as one does, with SO_REUSEADDR: the closed
    connections' TIME_WAIT do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
        return True


class Generations:
    """Successive sets of processes: each generation keeps some of the last one's, drops the
    others and starts new ones, on pids from ``PID_POOL``."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.names: dict[int, str] = {}  # pid → the name it had when last seen
        self.current: dict[int, tuple[str, tuple[str, ...]]] = {}  # pid → (name, where)
        self.reuses = 0
        self.gone = 0

    def next(self, number: int) -> dict[int, tuple[str, tuple[str, ...]]]:
        pick = self.random
        # at most 5 kept, so that every generation starts at least one process
        kept = dict([(pid, job) for pid, job in self.current.items() if pick.random() < 0.5][:5])
        free = [pid for pid in PID_POOL if pid not in kept]
        started = {}
        for pid in pick.sample(free, pick.randint(1, 6 - len(kept))):
            name = f"job{number}"
            if self.names.get(pid, name) != name:
                self.reuses += 1
            # whole GPUs 0-2 (one or several), or one MIG instance of GPU 3 ("3/0", "3/4")
            where = (tuple(sorted(pick.sample(["0", "1", "2"], pick.randint(1, 3))))
                     if pick.random() < 0.7 else (pick.choice(["3/0", "3/4"]),))
            started[pid] = (name, where)
        self.gone += len(self.current) - len(kept)
        self.current = {**kept, **started}
        self.names.update({pid: name for pid, (name, _) in self.current.items()})
        return self.current


def fleet_document(processes: dict[int, tuple[str, tuple[str, ...]]]) -> dict[str, Any]:
    """Three A100s with MIG off and one with two 3g.40gb instances, running ``processes``."""
    def on(place: str) -> list[dict[str, Any]]:
        return [{"pid": pid, "name": name, "used_memory_mib": 1000 + pid % 7 * 100}
                for pid, (name, where) in sorted(processes.items()) if place in where]

    gpus: list[dict[str, Any]] = [{"model": "A100-SXM4-80GB", "processes": on(str(i))} for i in range(3)]
    gpus.append({"model": "A100-SXM4-80GB", "mig": "enabled", "instances": [
        {"profile": "3g.40gb", "placement": start, "processes": on(f"3/{start}")} for start in (0, 4)]})
    return {"description": "soak: processes come and go", "gpus": gpus}


def write_atomically(path: Path, document: dict[str, Any]) -> None:
    staged = path.with_name(path.name + ".new")
    staged.write_text(yaml.safe_dump(document, sort_keys=False))
    os.replace(staged, path)


def expected(processes: dict[int, tuple[str, tuple[str, ...]]]) -> set[Placed]:
    return {(where.split("/")[0], str(pid), name)
            for pid, (name, places) in processes.items() for where in places}


def exported(text: str) -> tuple[set[Placed], set[tuple[str, str]], float | None]:
    """From one scrape: the processes of ``nvml_process_memory_bytes``, the (pid, name) of every
    other per-process series, and the last collection's timestamp."""
    memory: set[Placed] = set()
    named: set[tuple[str, str]] = set()
    stamp = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "nvml_process_memory_bytes":
                memory.add((labels["gpu"], labels["pid"], labels["process_name"]))
            elif "pid" in labels:
                named.add((labels["pid"], labels.get("process_name", "")))
            elif sample.name == LAST_COLLECTION:
                stamp = sample.value
    return memory, named, stamp


class Scrapers:
    """Threads fetching ``/metrics`` without pause, each on its own kept-alive connection."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.scrapes = 0
        self.errors: list[str] = []
        self.stamps: set[bytes] = set()  # of the last collection, as each scrape showed it
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._scrape, daemon=True) for _ in range(count)]

    def __enter__(self) -> Scrapers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _scrape(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                stamp = None
                try:
                    response = session.get(self.url, timeout=10)
                    error = None if response.status_code == 200 else f"status {response.status_code}"
                    stamp = STAMP.search(response.content)
                except requests.RequestException as failure:
                    error = f"{type(failure).__name__}: {failure}"
                with self._lock:
                    self.scrapes += 1
                    if stamp is not None:
                        self.stamps.add(stamp.group(1))
                    if error is not None:
                        self.errors.append(error)


@contextmanager
def serving(fleet: Path, port: int, interval: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``serve`` logging to the file ``log``: a pipe nobody reads until the end fills up after
    some 400 reloads logged, and then every thread that logs blocks (collections stop)."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mig_exporter", "serve", "--fleet", str(fleet),
             "--web.listen-address", f"127.0.0.1:{port}", "--collect.interval", interval],
            stdout=output, stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


SKIPPED = "skipped: maximum number of running instances reached"  # apscheduler's words


def log_problems(log: str) -> tuple[list[str], int]:
    """Lines of the serve log that say something went wrong (the fleet file reloads are info),
    and how many collections were skipped because the one before was still running: on a
    loaded machine at 100ms that is the design (never a pile-up), so counted, not a problem."""
    lines = log.splitlines()
    problems = [line for line in lines if ("Traceback" in line or re.search(r"level=(error|warn)", line))
                and SKIPPED not in line]
    return problems, sum(SKIPPED in line for line in lines)


def soak(generations: int, scrapers: int, interval: str = "100ms", seed: int = 11) -> Figures:
    """Run the soak; the figures, for the caller to print or assert on."""
    figures = Figures()
    churn = Generations(seed)
    warm_up = max(2, generations // 5)
    with tempfile.TemporaryDirectory() as directory:
        fleet = Path(directory) / "fleet.yaml"
        write_atomically(fleet, fleet_document(churn.next(0)))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        stamps: set[float] = set()  # seen by the checker
        log = Path(directory) / "serve.log"
        with serving(fleet, port, interval, log) as process, requests.Session() as checker:
            def scrape() -> str | None:
                figures.scrapes += 1
                try:
                    response = checker.get(base + "/metrics", timeout=10)
                except requests.ConnectionError:
                    figures.scrapes -= 1  # not listening yet
                    assert process.poll() is None, log.read_text()
                    return None
                if response.status_code != 200:
                    figures.scrape_errors += 1
                    return None
                return response.text

            def settle(processes: dict[int, tuple[str, tuple[str, ...]]], number: int) -> None:
                want = expected(processes)
                names = {(pid, name) for _, pid, name in want}
                deadline = time.monotonic() + WAIT_SECONDS
                got: tuple[set[Placed], set[tuple[str, str]], float | None] = (set(), set(), None)
                while time.monotonic() < deadline:
                    text = scrape()
                    if text is not None:
                        got = exported(text)
                        if got[2] is not None:
                            stamps.add(got[2])
                        if got[0] == want and got[1] <= names:
                            return
                    time.sleep(0.02)
                figures.mismatches.append(f"generation {number}: wanted {sorted(want)}, got {sorted(got[0])} "
                                          f"and {sorted(got[1] - names)}")

            settle(churn.current, 0)
            serve = psutil.Process(process.pid)
            with Scrapers(base + "/metrics", scrapers) as background:
                for number in range(1, generations + 1):
                    write_atomically(fleet, fleet_document(churn.next(number)))
                    settle(churn.current, number)
                    if number == warm_up:
                        warm = (serve.memory_info().rss / 2**20, serve.num_threads())
                figures.rss_mib = (warm[0], serve.memory_info().rss / 2**20)
                figures.threads = (warm[1], serve.num_threads())
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        figures.exit_code = process.returncode
        figures.port_released = port_free(port)
        figures.log_problems, figures.collections_skipped = log_problems(log.read_text())
    figures.generations = generations
    figures.collections = len(stamps | {float(stamp) for stamp in background.stamps})
    figures.scrapes += background.scrapes
    figures.scrape_errors += len(background.errors)
    figures.pid_reuses = churn.reuses
    figures.gone = churn.gone
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=200, help="fleet rewrites (default 200)")
    parser.add_argument("--scrapers", type=int, default=4, help="scraping threads (default 4)")
    parser.add_argument("--interval", default="100ms", help="serve's --collect.interval (default 100ms)")
    args = parser.parse_args()
    started = time.monotonic()
    f = soak(args.generations, args.scrapers, args.interval)
    print(f"generations {f.generations}, collections seen {f.collections}, scrapes {f.scrapes} "
          f"({f.scrape_errors} errors), in {time.monotonic() - started:.0f} s")
    print(f"processes gone {f.gone}, pids back under another name {f.pid_reuses}, "
          f"generations not as written {len(f.mismatches)}")
    print(f"RSS {f.rss_mib[0]:.1f} -> {f.rss_mib[1]:.1f} MiB, threads {f.threads[0]} -> {f.threads[1]} "
          f"(after generation {max(2, f.generations // 5)} -> at the end)")
    print(f"SIGTERM: exit {f.exit_code}, port released {f.port_released}, "
          f"log problems {len(f.log_problems)}, collections skipped (the last still running) "
          f"{f.collections_skipped}")
    for line in f.mismatches[:5] + f.log_problems[:5]:
        print("  " + line)
    clean = not (f.mismatches or f.log_problems or f.scrape_errors) and f.exit_code == 0 and f.port_released
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
