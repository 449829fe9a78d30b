"""The reader through the real pynvml on the simulated library: what it reads, how each failure
stays confined, re-initialisation, and that no NVML call is made twice in one collection."""

from __future__ import annotations

import ctypes
import functools
import inspect
import re
import textwrap
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pynvml
import pytest

from mig_exporter.model import MIB, Gpu, Snapshot
from mig_exporter.nvml import capability, gpm, health, mig_read, process_util, processes, read
from mig_exporter.nvml.read import read_snapshot

from .conftest import Opener

INCIDENT_GPU = """
  - model: A100-SXM4-80GB
    processes:
      - {pid: 78914, name: python, used_memory_mib: 3752}
      - {pid: 81007, name: python, used_memory_mib: 3780}
"""
PARTITIONED_GPU = """
  - model: A100-SXM4-80GB
    mig: enabled
    persistence: true
    instances:
      - profile: 3g.40gb
        processes:
          - {pid: 5001, name: server-a, used_memory_mib: 12000}
      - profile: 1g.10gb
        placement: 0
        compute_instances: []
      - profile: 2g.20gb
        compute_instances:
          - profile: 1c.2g.20gb
            processes:
              - {pid: 5002, name: server-b, used_memory_mib: 3000}
"""


def fleet_file(tmp_path: Path, gpus: str, faults: str = "") -> str:
    path = tmp_path / "fleet.yaml"
    path.write_text(f'driver_version: "575.57.08"\ncuda_version: "12.9"\ngpus:{gpus}'
                    + (f"faults:\n{textwrap.indent(textwrap.dedent(faults), '  ')}" if faults else ""))
    return str(path)


def test_the_incident_gpu(tmp_path: Path, open_session: Opener) -> None:
    snapshot = read_snapshot(open_session(fleet_file(tmp_path, INCIDENT_GPU * 2)))
    assert snapshot.nvml_up and not snapshot.errors
    assert (snapshot.driver_version, snapshot.cuda_driver_version) == ("575.57.08", "12.9")
    gpu = snapshot.gpus[1]
    assert (gpu.index, gpu.name, gpu.pci_device_id, gpu.lost) == (1, "NVIDIA A100-SXM4-80GB", 0x20B2, False)
    assert gpu.uuid.startswith("GPU-") and gpu.uuid != snapshot.gpus[0].uuid
    assert (gpu.mig_mode_current, gpu.mig_mode_pending, gpu.persistence_mode) == (False, False, False)
    assert gpu.memory_total_bytes == 81920 * MIB
    assert [(p.pid, p.name, p.used_memory_bytes, p.gpu_instance_id, p.compute_instance_id)
            for p in gpu.processes] == [(78914, "python", 3752 * MIB, None, None),
                                        (81007, "python", 3780 * MIB, None, None)]
    assert gpu.utilization_gpu_ratio is not None and 0 <= gpu.utilization_gpu_ratio <= 1


def test_a_partitioned_gpu(tmp_path: Path, open_session: Opener) -> None:
    gpu = read_snapshot(open_session(fleet_file(tmp_path, PARTITIONED_GPU))).gpus[0]
    assert (gpu.mig_mode_current, gpu.mig_mode_pending) == (True, True)
    # mig-facts.md: GPU instance IDs follow the placement (3g@4 → 2, 1g@0 → 7, 2g@2 → 4)
    assert [(i.gpu_instance_id, i.profile, i.profile_id, i.placement_start, i.placement_size,
             i.compute_instance_ids) for i in gpu.gpu_instances] == [
        (2, "3g.40gb", 9, 4, 4, (0,)), (4, "2g.20gb", 14, 2, 2, (0,)), (7, "1g.10gb", 19, 0, 1, ())]
    assert gpu.gpu_instances_complete
    # the 1g.10gb has no compute instance, so no MIG device; MIG device slots have gaps
    migs = {m.gpu_instance_id: m for m in gpu.mig_instances}
    assert sorted(migs) == [2, 4]
    assert (migs[2].profile, migs[2].memory_total_bytes, migs[2].multiprocessors) == (
        "3g.40gb", 40192 * MIB, 42)
    assert migs[2].mig_uuid.startswith("MIG-") and migs[2].memory_used_bytes is not None
    assert (migs[4].profile, migs[4].multiprocessors) == ("1c.2g.20gb", 14)
    # read per MIG device, in slot order: the 2g.20gb at slot 2 before the 3g.40gb at slot 4
    processes = [(p.pid, p.gpu_instance_id, p.compute_instance_id, p.used_memory_bytes)
                 for p in gpu.processes]
    assert processes == [(5002, 4, 0, 3000 * MIB), (5001, 2, 0, 12000 * MIB)]
    assert gpu.utilization_gpu_ratio is None  # NOT_SUPPORTED on MIG: absent, not an error


def test_unsupported_values_are_absent_and_not_errors(
        tmp_path: Path, open_session: Opener) -> None:
    snapshot = read_snapshot(open_session(fleet_file(tmp_path, PARTITIONED_GPU)))
    assert snapshot.errors == ()


def test_a_failing_call_is_an_error_on_its_value_only(
        tmp_path: Path, open_session: Opener) -> None:
    path = fleet_file(tmp_path, INCIDENT_GPU * 2,
                      "- {call: nvmlDeviceGetPowerUsage, gpu: 1, error: UNKNOWN}\n")
    snapshot = read_snapshot(open_session(path))
    assert [(e.call, e.error, e.gpu_index) for e in snapshot.errors] == [
        ("nvmlDeviceGetPowerUsage", "Unknown Error", 1)]
    assert snapshot.gpus[1].power_watts is None and snapshot.gpus[1].temperature_celsius is not None
    assert snapshot.gpus[0].power_watts is not None


def test_gpu_instances_nvml_will_not_list_are_marked_incomplete(
        tmp_path: Path, open_session: Opener) -> None:
    # nvml.h: nvmlDeviceGetGpuInstances answers NO_PERMISSION to a caller without the privilege;
    # the MIG devices and their processes are still readable.
    path = fleet_file(tmp_path, PARTITIONED_GPU,
                      "- {call: nvmlDeviceGetGpuInstances, error: NO_PERMISSION}\n")
    snapshot = read_snapshot(open_session(path))
    gpu = snapshot.gpus[0]
    assert (gpu.gpu_instances, gpu.gpu_instances_complete) == ((), False)
    assert {e.call for e in snapshot.errors} == {"nvmlDeviceGetGpuInstances"}
    assert sorted(m.gpu_instance_id for m in gpu.mig_instances) == [2, 4] and gpu.pids == {5001, 5002}


@pytest.mark.parametrize("fault", [
    "{call: nvmlDeviceGetComputeRunningProcesses_v3, gpu: 1, error: NO_PERMISSION}",
    "{call: nvmlDeviceGetHandleByIndex_v2, gpu: 1, error: UNKNOWN}",
    "{call: nvmlDeviceGetMaxMigDeviceCount, gpu: 1, error: UNKNOWN}",
    "{call: nvmlDeviceGetMigDeviceHandleByIndex, gpu: 1, error: UNKNOWN, count: 1}",
    "{call: nvmlDeviceGetGpuInstanceId, gpu: 1, error: UNKNOWN, count: 1}",
    "{call: nvmlDeviceGetComputeInstanceId, gpu: 1, error: UNKNOWN, count: 1}",
    "{call: nvmlDeviceGetComputeRunningProcesses_v3, gpu: 1, error: UNKNOWN, count: 1}",
])
def test_processes_not_all_read_are_marked_incomplete(
        tmp_path: Path, open_session: Opener, fault: str) -> None:
    # issue 11: each of these failures used to leave a GPU looking as if it had fewer (or no)
    # processes; the GPU says its list is incomplete, and the GPU that was read is complete.
    path = fleet_file(tmp_path, INCIDENT_GPU + PARTITIONED_GPU, f"- {fault}\n")
    snapshot = read_snapshot(open_session(path))
    assert snapshot.errors and {e.gpu_index for e in snapshot.errors} == {1}
    assert snapshot.gpus[0].processes_complete and snapshot.gpus[0].pids == {78914, 81007}
    assert not snapshot.gpus[1].processes_complete and not snapshot.processes_complete


def test_empty_mig_slots_do_not_make_the_processes_incomplete(
        tmp_path: Path, open_session: Opener) -> None:
    snapshot = read_snapshot(open_session(fleet_file(tmp_path, PARTITIONED_GPU)))
    gpu = snapshot.gpus[0]
    assert gpu.processes_complete and gpu.gpu_instances_complete and snapshot.processes_complete


@pytest.mark.parametrize("call", ["nvmlDeviceGetGpuInstances", "nvmlGpuInstanceGetInfo"])
def test_gpu_instances_nvml_does_not_list_are_incomplete_without_an_error(
        tmp_path: Path, open_session: Opener, call: str) -> None:
    # issue 11: NOT_SUPPORTED here is no error, but the list is still not the GPU's instances
    # (its MIG devices are read): a count of 0 from it was made up.
    path = fleet_file(tmp_path, PARTITIONED_GPU, f"- {{call: {call}, error: NOT_SUPPORTED}}\n")
    gpu = read_snapshot(open_session(path)).gpus[0]
    assert not gpu.gpu_instances_complete and len(gpu.mig_instances) == 2


def test_a_driver_without_the_v3_process_call(tmp_path: Path, open_session: Opener) -> None:
    path = fleet_file(tmp_path, INCIDENT_GPU,
                      "- {call: nvmlDeviceGetComputeRunningProcesses_v3, error: FUNCTION_NOT_FOUND}\n")
    snapshot = read_snapshot(open_session(path))  # pynvml raises NVMLLibraryMismatchError here
    assert snapshot.nvml_up and snapshot.errors == () and snapshot.gpus[0].processes == ()
    assert not snapshot.gpus[0].processes_complete  # not listed is not "none"


def test_a_pid_listed_twice_on_one_device_is_read_once(
        tmp_path: Path, open_session: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    listed = pynvml.nvmlDeviceGetComputeRunningProcesses
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", lambda handle: listed(handle) * 2)
    snapshot = read_snapshot(open_session(fleet_file(tmp_path, INCIDENT_GPU + PARTITIONED_GPU)))
    assert [p.pid for p in snapshot.gpus[0].processes] == [78914, 81007]
    assert [p.pid for p in snapshot.gpus[1].processes] == [5002, 5001]


def test_a_lost_gpu_keeps_its_last_uuid_and_the_others_are_read(
        tmp_path: Path, open_session: Opener) -> None:
    path = fleet_file(tmp_path, INCIDENT_GPU * 3)
    session = open_session(path)
    before = read_snapshot(session)
    text = Path(path).read_text().split("  - model:")
    text[2] = text[2].replace("A100-SXM4-80GB\n", "A100-SXM4-80GB\n    lost: true\n", 1)
    Path(path).write_text("  - model:".join(text))
    after = read_snapshot(session)
    assert after.nvml_up
    lost = after.gpus[1]
    assert (lost.lost, lost.uuid, lost.processes) == (True, before.gpus[1].uuid, ())
    assert not lost.processes_complete and not after.processes_complete
    assert [e.gpu_index for e in after.errors] == [1]
    unchanged = [g.processes == b.processes for g, b in zip(after.gpus, before.gpus, strict=True)]
    assert unchanged == [True, False, True]


def test_an_edited_fleet_file_shows_in_the_next_collection(
        tmp_path: Path, open_session: Opener) -> None:
    path = fleet_file(tmp_path, INCIDENT_GPU)
    session = open_session(path)
    assert read_snapshot(session).gpus[0].pids == {78914, 81007}
    Path(path).write_text(Path(path).read_text().replace(
        "      - {pid: 81007, name: python, used_memory_mib: 3780}\n", ""))
    assert read_snapshot(session).gpus[0].pids == {78914}


def test_nvml_that_failed_is_initialised_again(tmp_path: Path, open_session: Opener) -> None:
    # The driver goes away once (a call answers DRIVER_NOT_LOADED), then the first re-init fails too.
    path = fleet_file(tmp_path, INCIDENT_GPU, """
        - {call: nvmlDeviceGetMemoryInfo_v2, error: DRIVER_NOT_LOADED, count: 1}
        - {call: nvmlInitWithFlags, error: DRIVER_NOT_LOADED, skip: 1, count: 1}
        """)
    session = open_session(path)
    failed = read_snapshot(session)
    assert (failed.nvml_up, failed.gpus) == (False, ())
    assert [(e.call, e.error) for e in failed.errors] == [("nvmlDeviceGetMemoryInfo", "Driver Not Loaded")]
    init_failed = read_snapshot(session)
    assert (init_failed.nvml_up, [e.call for e in init_failed.errors]) == (False, ["nvmlInit"])
    recovered = read_snapshot(session)
    assert recovered.nvml_up and recovered.gpus[0].pids == {78914, 81007} and not recovered.errors


@pytest.mark.parametrize("call", ["nvmlDeviceGetCount_v2", "nvmlSystemGetDriverVersion",
                                  "nvmlSystemGetNVMLVersion"])
def test_gpu_is_lost_from_a_system_call_is_nvml_gone_and_recovers(
        tmp_path: Path, open_session: Opener, call: str) -> None:
    # issue 11: GPU_IS_LOST from a call about no GPU escaped the reader as an exception.
    path = fleet_file(tmp_path, INCIDENT_GPU, f"- {{call: {call}, error: GPU_IS_LOST, count: 1}}\n")
    session = open_session(path)
    failed = read_snapshot(session)
    assert (failed.nvml_up, failed.gpus) == (False, ())
    assert [(e.call, e.error) for e in failed.errors] == [(call.removesuffix("_v2"), "GPU is lost")]
    recovered = read_snapshot(session)
    assert recovered.nvml_up and recovered.gpus[0].pids == {78914, 81007} and not recovered.errors


def test_no_nvml_call_is_repeated_within_a_collection(
        tmp_path: Path, open_session: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    session = open_session(fleet_file(tmp_path, INCIDENT_GPU + PARTITIONED_GPU))
    calls: Counter[tuple[Any, ...]] = Counter()

    def recording(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any) -> Any:
            calls[(function.__name__, *map(_argument_key, args))] += 1
            return function(*args)
        return wrapper

    # the functions the reader calls
    sources = "".join(inspect.getsource(module)
                      for module in (read, capability, process_util, gpm, health, mig_read, processes))
    for name in set(re.findall(r"pynvml\.(nvml\w+)", sources)):
        if callable(getattr(pynvml, name)):
            monkeypatch.setattr(pynvml, name, recording(getattr(pynvml, name)))
    # the process list calls its C function itself (one call, not pynvml's two)
    monkeypatch.setattr(processes, "_compute_processes", recording(processes._compute_processes))
    first = read_snapshot(session)
    assert calls and max(calls.values()) == 1
    assert sum(calls.values()) == first.nvml_calls
    assert calls[("nvmlSystemGetProcessName", 78914)] == 1  # on two GPUs, looked up once
    calls.clear()
    second = read_snapshot(session)
    assert max(calls.values()) == 1 and second.nvml_calls == sum(calls.values())
    # the MIG capability is read once per session, not once per collection
    capability_calls = set(re.findall(r"pynvml\.(nvml\w+)", inspect.getsource(capability)))
    assert capability_calls >= {"nvmlDeviceGetGpuInstanceProfileInfo", "nvmlDeviceGetArchitecture",
                                "nvmlDeviceGetGpuInstancePossiblePlacements",
                                "nvmlGpuInstanceGetComputeInstanceProfileInfo"}
    assert not [c for c in calls if c[0] in capability_calls]

    def without_energy(snapshot: Snapshot) -> list[Gpu]:  # energy grows with time
        return [replace(g, health=replace(g.health, energy_joules_total=None)) for g in snapshot.gpus]

    assert without_energy(second) == without_energy(first)


def _argument_key(argument: Any) -> Any:
    """Handles by address; output buffers (arrays, byref) by type, since they are new each call."""
    if isinstance(argument, ctypes._Pointer):
        return ctypes.cast(argument, ctypes.c_void_p).value
    if isinstance(argument, (int, str, bytes)):
        return argument
    return type(argument).__name__


def test_a_mig_devices_compute_slices_are_nvmls_figure(tmp_path: Path, open_session: Opener) -> None:
    """issue 8: a compute instance's slice count is a field (nvmlDeviceGetAttributes'
    computeInstanceSliceCount), not parsed back out of the profile name."""
    snapshot = read_snapshot(open_session(fleet_file(tmp_path, PARTITIONED_GPU)))
    assert {(m.profile, m.compute_slices) for m in snapshot.gpus[0].mig_instances} == {
        ("3g.40gb", 3), ("1c.2g.20gb", 1)}
