"""The three ways the product reads NVML, each run in-process over a fleet file as a user runs it:
``serve``'s collections (the exporter's own job, rendered as a scrape would get it), ``diagnose
--format json`` and ``remediate`` without ``--apply``. Each run hands back what a user would see
and what the simulator saw (the C calls made, the calls its faults answered with an error)."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mig_exporter import sim
from mig_exporter.cli import main
from mig_exporter.exporter import command as serve_command
from mig_exporter.exporter.flags import ListenAddress
from mig_exporter.exporter.service import Exporter, ServeConfig
from mig_exporter.host import nvml_session
from mig_exporter.nvml.session import NvmlSession

# (metric name, sorted label pairs) → value: one scrape of /metrics.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

DIAGNOSE = ("diagnose", "--format", "json")
REMEDIATE_PLAN = ("remediate", "--gpu", "0,2", "--layout", "3g.40gb,3g.40gb", "--format", "json")


@dataclass
class Run:
    """What one run showed: exit status and output (commands), the scrapes after each collection
    (serve), log records with a traceback, and the simulator's counts."""

    status: int | None = None
    out: str = ""
    err: str = ""
    scrapes: list[Samples] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    fired: Counter[tuple[str, int | None]] = field(default_factory=Counter)
    fired_by_collection: list[Counter[tuple[str, int | None]]] = field(default_factory=list)  # serve


@contextlib.contextmanager
def watched(run: Run) -> Iterator[None]:
    """Record the simulators installed meanwhile (their calls and fired faults land in ``run``)
    and every log record that carries a traceback."""
    installed: list[Any] = []
    install = sim.install

    def recording_install(spec: str) -> Any:
        simulator = install(spec)
        installed.append(simulator)
        return simulator

    class TracebackHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info:
                run.tracebacks.append(self.format(record))

    handler = TracebackHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    sim.install = recording_install
    try:
        yield
    finally:
        sim.install = install
        root.removeHandler(handler)
        for simulator in installed:
            run.calls.update(simulator.call_counts)
            run.fired.update(simulator.faults_fired())


def run_command(fleet: Path, args: tuple[str, ...]) -> Run:
    """``mig-exporter <args> --fleet <fleet>`` through ``cli.main``, as a shell would run it."""
    run = Run()
    out, err = io.StringIO(), io.StringIO()
    with watched(run), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        run.status = main([*args, "--fleet", str(fleet)])
    run.out, run.err = out.getvalue(), err.getvalue()
    return run


def scrape(exporter: Exporter) -> Samples:
    text = exporter.state.exposition.plain.decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def serve_config(timeout_seconds: float) -> ServeConfig:
    return ServeConfig(listen_address=ListenAddress("127.0.0.1", 0), interval_seconds=15.0,
                       timeout_seconds=timeout_seconds, pod_resources_socket="")


Between = Callable[[int, Exporter, NvmlSession], None]


def run_serve(
    fleet: Path, collections: int, between: Between = lambda _i, _e, _s: None, timeout_seconds: float = 60.0,
) -> Run:
    """``serve --fleet <fleet>`` as its command opens NVML (a failure to initialise is served as
    ``nvml_up 0``), then ``collections`` runs of its collection job, each scraped; ``between(i,
    exporter, session)`` runs before collection ``i``. The HTTP server is bound but never started: what it
    would send is the rendered exposition scraped here."""
    run = Run()
    with watched(run):
        session = nvml_session(str(fleet))
        exporter = None
        try:
            serve_command._open_or_retry_later(session)
            exporter = Exporter(session, serve_config(timeout_seconds))
            for i in range(collections):
                between(i, exporter, session)
                exporter.job()
                run.scrapes.append(scrape(exporter))
                fired = Counter() if session.simulator is None else session.simulator.faults_fired()  # type: ignore[attr-defined]
                run.fired_by_collection.append(fired - sum(run.fired_by_collection, Counter()))
                run.fired |= fired  # before a test writes the fleet without its fault, which resets it
        finally:
            if exporter is not None:
                exporter.stop()
            session.close()
    return run


def wait_until(condition: Callable[[], bool], seconds: float = 60.0) -> bool:
    """Poll ``condition`` (a hung read being let go is another thread's business)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Hang:
    """The simulator's ``delay_seconds`` fault held open by the test: a sleep of ``SECONDS``
    blocks until ``release``, so a hung call lasts exactly as long as the test wants, whatever
    the machine's load; other sleeps pass through."""

    SECONDS = 3600.0

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._released = threading.Event()
        self._sleep = time.sleep

    def sleep(self, seconds: float) -> None:
        if seconds != self.SECONDS:
            self._sleep(seconds)
            return
        self.entered.set()
        self._released.wait()

    def release(self) -> None:
        self._released.set()
