"""Issue 11 item 9: ``remediate --apply`` started N times at once on one fleet file, half of them
through a symlink to it, with ``serve`` and ``diagnose`` running on the same file meanwhile.

Each run has a terminal of its own as stdin (a pty), so the run that takes the lock stops at the
confirmation prompt, holding the lock, until the test answers: every other run must have been
refused by then, however the processes were scheduled. No sleeping and hoping.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest
from exporter.test_serve_e2e import serve
from long import scaled

from .fleets import incident_document, read, write_fleet

LOCKED = "is applying changes on this host; wait for it to finish"


def start(fleet: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``remediate --apply`` on ``fleet`` with the default lock and journal (beside the file the
    path resolves to), stdin a terminal; the process and the terminal's other end."""
    terminal, stdin = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "mig_exporter", "remediate", "--fleet", str(fleet), "--gpu", "0",
         "--layout", "3g,3g", "--apply"],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(stdin)
    return process, terminal


@pytest.mark.long
def test_of_simultaneous_runs_exactly_one_applies_and_serve_and_diagnose_carry_on(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0,)))
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "same-fleet.yaml"
    link.symlink_to(fleet)
    count = scaled(6)
    diagnosed: list[int] = []
    scrapes = 0
    with serve(str(fleet), "--collect.interval", "100ms") as served:
        runs = [start(fleet if n % 2 == 0 else link) for n in range(count)]
        deadline = time.monotonic() + 60
        while sum(process.poll() is not None for process, _ in runs) < count - 1:
            assert time.monotonic() < deadline, "the refused runs did not all end"
            diagnosed.append(subprocess.run([sys.executable, "-m", "mig_exporter", "diagnose", "--fleet",
                                             str(fleet)], capture_output=True, check=False).returncode)
            assert served.get("/metrics").status_code == 200
            scrapes += 1
        (winner, terminal), = [(p, t) for p, t in runs if p.poll() is None]
        assert (tmp_path / "fleet.yaml.lock").read_text() == f"{winner.pid}\n"  # it holds the lock
        os.write(terminal, b"y\n")
        out, err = winner.communicate(timeout=60)
        assert winner.returncode == 0, err.decode()
        assert b"Apply these 6 steps to GPU 0? [y/N]" in err
        assert b"Verified by reading NVML again: GPU 0 as planned." in out
        refused = [p for p, _ in runs if p is not winner]
        for process in refused:
            out, err = process.communicate()
            assert (process.returncode, out) == (2, b"")
            lines = err.decode().splitlines()
            assert len(lines) == 1 and f"(pid {winner.pid}) {LOCKED}" in lines[0], lines
        # serve picks the new layout up from the file the winner wrote
        deadline = time.monotonic() + 30
        while served.value("nvml_gpu_mig_instances", gpu="0", uuid=read(fleet).gpu(0).uuid) != 2:
            assert time.monotonic() < deadline, "serve did not see the new layout"
            time.sleep(0.1)
        scrapes += 1
    for terminal in (t for _, t in runs):
        os.close(terminal)
    assert set(diagnosed) <= {0, 1} and diagnosed  # 1: problems found (GPUs 1-3 still shared)
    assert scrapes > len(diagnosed)
    gpu = read(fleet).gpu(0)
    assert gpu.mig_enabled and [i.profile for i in gpu.gpu_instances] == ["3g.40gb", "3g.40gb"]
    assert not (tmp_path / "fleet.yaml.lock").exists()
    assert list((tmp_path / "elsewhere").iterdir()) == [link]  # no lock or journal beside the link
    journal = (tmp_path / "fleet.yaml.journal.jsonl").read_text()
    assert journal.count('"event": "run-start"') == 1  # the refused runs journaled nothing
