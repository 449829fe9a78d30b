"""Per-process utilization through the real pynvml on the simulated library: values from the fleet
file, the two ways NVML says "no samples", the fallback to the older call, and MIG (mig-facts.md:
per-process utilization is NOT_SUPPORTED on a MIG-enabled GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mig_exporter.nvml.read import read_snapshot
from mig_exporter.nvml.session import NvmlSession

from .conftest import Opener
from .test_read import PARTITIONED_GPU, fleet_file

NEW_CALL = "nvmlDeviceGetProcessesUtilizationInfo"
OLD_CALL = "nvmlDeviceGetProcessUtilization"
SHARED_GPU = """
  - model: A100-SXM4-80GB
    processes:
      - {pid: 78914, name: python, used_memory_mib: 3752, sm_util_percent: 87, mem_util_percent: 41}
      - {pid: 81007, name: python, used_memory_mib: 3780, sm_util_percent: 3}
      - {pid: 90001, name: idle, used_memory_mib: 500}
"""
UNSAMPLED_GPU = """
  - model: A100-SXM4-80GB
    processes:
      - {pid: 78914, name: python, used_memory_mib: 3752}
"""
IDLE_GPU = """
  - model: H100-SXM5-80GB
"""


def utilization(session: NvmlSession) -> dict[int, tuple[float | None, float | None]]:
    snapshot = read_snapshot(session)
    assert snapshot.nvml_up and not snapshot.errors, snapshot.errors
    return {p.pid: (p.sm_utilization_ratio, p.memory_utilization_ratio) for p in snapshot.processes}


def calls(session: NvmlSession, name: str) -> int:
    assert session.simulator is not None
    return session.simulator.call_counts[name]


def test_values_are_the_fleet_files_and_an_unsampled_process_has_none(
    tmp_path: Path, open_session: Opener,
) -> None:
    session = open_session(fleet_file(tmp_path, SHARED_GPU))
    # a sample carries both values: a key left out of the fleet file reads 0, a process without
    # either key has no sample at all
    assert utilization(session) == {78914: (0.87, 0.41), 81007: (0.03, 0.0), 90001: (None, None)}
    assert (calls(session, NEW_CALL), calls(session, OLD_CALL)) == (2, 0)  # size, then samples


def test_no_samples_from_the_new_call_is_code_0_not_an_error(tmp_path: Path, open_session: Opener) -> None:
    """The driver answers SUCCESS with a count of 0, which pynvml raises as NVMLError(0)."""
    session = open_session(fleet_file(tmp_path, UNSAMPLED_GPU))
    assert utilization(session) == {78914: (None, None)}
    assert (calls(session, NEW_CALL), calls(session, OLD_CALL)) == (1, 0)  # no fallback for "no samples"


@pytest.mark.parametrize("unsupported", ["NOT_SUPPORTED", "FUNCTION_NOT_FOUND"])
def test_a_driver_without_the_new_call_falls_back_to_the_old_one(
    tmp_path: Path, open_session: Opener, unsupported: str,
) -> None:
    fault = f"- {{call: {NEW_CALL}, error: {unsupported}}}\n"
    session = open_session(fleet_file(tmp_path, SHARED_GPU, fault))
    assert utilization(session) == {78914: (0.87, 0.41), 81007: (0.03, 0.0), 90001: (None, None)}
    assert (calls(session, NEW_CALL), calls(session, OLD_CALL)) == (1, 2)


def test_no_samples_from_the_old_call_is_not_found_not_an_error(tmp_path: Path, open_session: Opener) -> None:
    fault = f"- {{call: {NEW_CALL}, error: NOT_SUPPORTED}}\n"
    session = open_session(fleet_file(tmp_path, UNSAMPLED_GPU, fault))
    assert utilization(session) == {78914: (None, None)}
    assert calls(session, OLD_CALL) == 1


def test_a_failing_call_is_counted_and_leaves_the_values_absent(tmp_path: Path, open_session: Opener) -> None:
    session = open_session(fleet_file(tmp_path, SHARED_GPU, f"- {{call: {NEW_CALL}, error: UNKNOWN}}\n"))
    snapshot = read_snapshot(session)
    assert [(e.call, e.gpu_index) for e in snapshot.errors] == [(NEW_CALL, 0)]
    values = [(p.sm_utilization_ratio, p.memory_utilization_ratio) for p in snapshot.processes]
    assert values == [(None, None)] * 3
    assert [p.used_memory_bytes is not None for p in snapshot.processes] == [True] * 3  # the rest still read
    assert calls(session, OLD_CALL) == 0  # a failure is not a missing call


def test_a_mig_gpu_gives_no_process_utilization_and_no_error(tmp_path: Path, open_session: Opener) -> None:
    session = open_session(fleet_file(tmp_path, PARTITIONED_GPU))
    assert utilization(session) == {5001: (None, None), 5002: (None, None)}
    assert calls(session, NEW_CALL) + calls(session, OLD_CALL) == 0  # NVML would answer NOT_SUPPORTED


def test_a_gpu_without_processes_costs_no_call(tmp_path: Path, open_session: Opener) -> None:
    session = open_session(fleet_file(tmp_path, IDLE_GPU + SHARED_GPU))
    assert utilization(session)[78914] == (0.87, 0.41)
    assert calls(session, NEW_CALL) == 2  # for GPU 1 only
