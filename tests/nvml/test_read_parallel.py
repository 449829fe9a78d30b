"""GPUs are read in parallel, each bounded by the collection's GPU timeout: a GPU whose NVML calls
hang delays only its own values, which keep their last read, marked stale (issue 12)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from mig_exporter.model import Snapshot
from mig_exporter.nvml.read import read_snapshot

from .conftest import Opener

HANG_SECONDS = 2.0
GPUS = "".join(f"""
  - model: A100-SXM4-80GB
    processes:
      - {{pid: {100 + i}, name: python, used_memory_mib: 1000}}
      - {{pid: {200 + i}, name: python, used_memory_mib: 2000}}
""" for i in range(3))
# GPU 1's temperature answers normally once, then hangs HANG_SECONDS once.
HANG = f"""faults:
  - {{call: nvmlDeviceGetTemperature, gpu: 1, delay_seconds: {HANG_SECONDS}, skip: 1, count: 1}}
"""


def pids(snapshot: Snapshot) -> list[set[int]]:
    return [set(gpu.pids) for gpu in snapshot.gpus]


def test_a_hung_gpu_keeps_its_last_values_while_the_others_refresh(
        tmp_path: Path, open_session: Opener) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(f"gpus:{GPUS}{HANG}")
    session = open_session(str(path))
    simulator = session.simulator
    assert simulator is not None
    first = read_snapshot(session, gpu_timeout_seconds=0.5)
    assert pids(first) == [{100, 200}, {101, 201}, {102, 202}] and not any(g.stale for g in first.gpus)

    for pid in (200, 201, 202):  # the second process of every GPU exits
        simulator.fleet = simulator.fleet.without_process(pid)
    hung = read_snapshot(session, gpu_timeout_seconds=0.5)
    assert hung.nvml_up and [g.stale for g in hung.gpus] == [False, True, False]
    assert pids(hung) == [{100}, {101, 201}, {102}]  # GPU 1: its last read's processes
    assert hung.gpus[1] == replace(first.gpus[1], stale=True)

    # While GPU 1's read is still inside NVML no second read of it starts; the others go on.
    temperatures = simulator.call_counts["nvmlDeviceGetTemperature"]
    again = read_snapshot(session, gpu_timeout_seconds=0.5)
    assert [g.stale for g in again.gpus] == [False, True, False]
    assert simulator.call_counts["nvmlDeviceGetTemperature"] == temperatures + 2

    deadline = time.monotonic() + 10 * HANG_SECONDS
    while not session.gpu_reads[1].done():
        assert time.monotonic() < deadline, "the hung read never returned"
        time.sleep(0.05)
    recovered = read_snapshot(session, gpu_timeout_seconds=0.5)
    assert pids(recovered) == [{100}, {101}, {102}] and not any(g.stale for g in recovered.gpus)


def test_without_a_timeout_the_reader_waits_for_every_gpu(tmp_path: Path, open_session: Opener) -> None:
    """diagnose and remediate read without a limit: a slow GPU is waited for, never guessed."""
    path = tmp_path / "fleet.yaml"
    path.write_text(f"gpus:{GPUS}" + HANG.replace("skip: 1, ", "").replace(str(HANG_SECONDS), "0.3"))
    snapshot = read_snapshot(open_session(str(path)))
    assert not any(g.stale for g in snapshot.gpus) and snapshot.gpus[1].temperature_celsius is not None
