"""Issue 11 item 9: signals to real processes. ``serve`` stops cleanly on SIGTERM, SIGINT and SIGHUP
(exit 0, its port free, no traceback) with a connection open, and keeps ignoring SIGHUP when started
under ``nohup``; ``remediate --apply`` given SIGTERM, SIGINT or SIGHUP mid-run finishes the step
under way, undoes the run, leaves the journal closed and the lock gone, and a re-run completes;
under ``nohup`` its SIGHUP stays ignored."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from exporter.test_serve_e2e import free_port, wait_for
from remediate.fleets import events, fault_at, incident_document, read, remediate, without_faults, write_fleet

from mig_exporter.remediate.apply import deferred_signals

STOPS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]


def port_free(port: int) -> bool:
    """Whether a new server could listen on ``port`` (with SO_REUSEADDR, as servers do)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        probe.listen()
        return True


def dispositions(ignored: tuple[signal.Signals, ...] = ()) -> Callable[[], None]:
    """A child's ``preexec_fn``: SIGINT and SIGHUP ignored as ``ignored`` says, default otherwise.
    Set for the child, not inherited, so the tests hold when the runner itself started under
    ``nohup`` or a script's ``&`` (issue 11 item 8)."""
    def set_them() -> None:
        for signum in (signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)

    return set_them


def start_serve(port: int, ignored: tuple[signal.Signals, ...] = ()) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "mig_exporter", "serve", "--fleet", "seed-incident",
         "--web.listen-address", f"127.0.0.1:{port}", "--collect.interval", "100ms"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=dispositions(ignored))

    def answers() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        except requests.ConnectionError:
            assert process.poll() is None, process.communicate()[0].decode()
            return False

    wait_for(answers, what="serve to answer")
    return process


@pytest.mark.parametrize("stop", STOPS, ids=lambda s: s.name)
def test_serve_stops_cleanly_on_a_signal(stop: signal.Signals) -> None:
    port = free_port()
    process = start_serve(port)
    with socket.create_connection(("127.0.0.1", port)):  # an idle client does not hold the stop up
        process.send_signal(stop)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    assert f"received {stop.name}, stopping" in output
    assert "Traceback" not in output
    assert port_free(port)


@pytest.mark.parametrize("ignored", [signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_serve_started_ignoring_a_signal_keeps_ignoring_it(ignored: signal.Signals) -> None:
    """SIGHUP under ``nohup``; SIGINT for a shell script's background job (issue 11 item 8: serve
    used to install its handler over an ignored SIGINT). SIGTERM still stops it cleanly."""
    port = free_port()
    process = start_serve(port, ignored=(ignored,))
    process.send_signal(ignored)  # ignored: the kernel drops it before kill() returns
    assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0 and ignored.name not in output, output
    assert "received SIGTERM, stopping" in output


# remediate --gpu 0 --layout 3g,3g on the incident's GPU 0 made idle, as journaled.
STEPS = [{"action": "SetMigMode"}, {"action": "SetPersistence"},
         *[{"action": "CreateGpuInstance"}, {"action": "CreateComputeInstance", "start": None}] * 2]


def mid_run_fleet(tmp_path: Path) -> Path:
    """GPU 0 idle; every step from the second on takes a second (``delay_seconds``), so a signal
    sent once the second step has begun arrives during a step, however late it is delivered."""
    document = incident_document(without_processes_on=(0,))
    document["faults"] = [fault_at(STEPS, index, delay_seconds=1) for index in range(1, len(STEPS))]
    return write_fleet(tmp_path, document)


# SIGINT takes the same path; tests/remediate/test_apply.py sends it in-process.
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_remediate_signalled_mid_run_undoes_it_and_a_rerun_completes(
    tmp_path: Path, stop: signal.Signals, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = mid_run_fleet(tmp_path)
    before = fleet.read_bytes()
    journal, lock = tmp_path / "journal.jsonl", tmp_path / "remediate.lock"
    process = subprocess.Popen(
        [sys.executable, "-m", "mig_exporter", "remediate", "--fleet", str(fleet), "--gpu", "0",
         "--layout", "3g,3g", "--apply", "--yes", "--journal", str(journal), "--lock", str(lock)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=dispositions())
    deadline = time.monotonic() + 60
    while not any(e["event"] == "begin" and e["seq"] == 2 for e in events(journal)):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    process.send_signal(stop)
    out, err = (text.decode() for text in process.communicate(timeout=60))
    assert process.returncode == 2, out + err
    assert f"interrupted: {stop.name} received after: GPU 0: " in err and "Traceback" not in err
    assert "Every GPU is as it was found (read back from NVML)." in out
    assert "Verified" not in out
    assert fleet.read_bytes() == before
    lines = events(journal)
    begun = [e["step"]["action"] for e in lines if e["event"] == "begin"]
    assert 2 <= len(begun) <= len(STEPS) and begun == [s["action"] for s in STEPS][: len(begun)]
    assert sum(e["event"] == "undo-begin" for e in lines) == len(begun)  # each step undone
    assert sum(e["event"] == "rollback" for e in lines) == 1
    assert lines[-1] == {**lines[-1], "event": "run-end", "failed": True}
    assert not lock.exists()
    without_faults(fleet)
    capsys.readouterr()
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "3g,3g", "--apply", "--yes") == 0
    assert "Verified by reading NVML again: GPU 0 as planned." in capsys.readouterr().out
    assert "unfinished-run-found" not in journal.read_text()
    assert [i.profile for i in read(fleet).gpu(0).gpu_instances] == ["3g.40gb", "3g.40gb"]
    assert [e["event"] for e in events(journal)].count("run-end") == 2


def test_remediate_under_nohup_leaves_sighup_ignored() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with deferred_signals():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
