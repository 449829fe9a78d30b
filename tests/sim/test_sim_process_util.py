"""The simulated per-process utilization calls: the INSUFFICIENT_SIZE protocol, the versioned
struct, "no samples", NOT_SUPPORTED under MIG (mig-facts.md: "per-process utilization return[s]
NOT_SUPPORTED (parent and instance)" on a MIG-enabled GPU), and the fleet keys behind them."""

from __future__ import annotations

import ctypes
from typing import Any

import pynvml
import pytest

from mig_exporter.sim import dump_fleet, parse_fleet
from sim.conftest import StartNvml
from sim.fleets import fleet, gpu, one_gpu
from sim.test_sim_validation import refusal

SAMPLED = one_gpu(mig="disabled", extra="""    processes:
      - {pid: 101, name: a, used_memory_mib: 1000, sm_util_percent: 90, mem_util_percent: 30}
      - {pid: 102, name: b, used_memory_mib: 2000, mem_util_percent: 5}
      - {pid: 103, name: c, used_memory_mib: 3000}
""")
MIG_WITH_A_PROCESS = one_gpu(extra="""    instances:
      - profile: 3g.40gb
        processes:
          - {pid: 5001, name: server, used_memory_mib: 1000}
""")


def c_function(name: str) -> Any:
    return pynvml._nvmlGetFunctionPointer(name)


def test_the_old_call_answers_insufficient_size_with_the_count_needed(start_nvml: StartNvml) -> None:
    start_nvml(SAMPLED)
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    function = c_function("nvmlDeviceGetProcessUtilization")
    count, since = ctypes.c_uint(0), ctypes.c_ulonglong(0)
    assert function(device, None, ctypes.byref(count), since) == pynvml.NVML_ERROR_INSUFFICIENT_SIZE
    assert count.value == 2  # pid 103 has no sample
    too_small = (pynvml.c_nvmlProcessUtilizationSample_t * 1)()
    count.value = 2  # a count that lies about the array is refused too
    assert function(device, too_small, ctypes.byref(count), ctypes.c_ulonglong(0)) == \
        pynvml.NVML_ERROR_INSUFFICIENT_SIZE
    samples = (pynvml.c_nvmlProcessUtilizationSample_t * 2)()
    assert function(device, samples, ctypes.byref(count), ctypes.c_ulonglong(0)) == pynvml.NVML_SUCCESS
    assert [(s.pid, s.smUtil, s.memUtil, s.encUtil, s.decUtil) for s in samples] == [
        (101, 90, 30, 0, 0), (102, 0, 5, 0, 0)]
    assert samples[0].timeStamp > 0
    future = ctypes.c_ulonglong(samples[0].timeStamp + 10**12)  # nothing newer than that
    assert function(device, samples, ctypes.byref(count), future) == pynvml.NVML_ERROR_NOT_FOUND


def test_the_new_call_checks_its_version_and_fills_the_caller_array(start_nvml: StartNvml) -> None:
    start_nvml(SAMPLED)
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    function = c_function("nvmlDeviceGetProcessesUtilizationInfo")
    info = pynvml.c_nvmlProcessesUtilizationInfo_v1_t(0)
    assert function(device, ctypes.byref(info)) == pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
    info.version = pynvml.ProcessesUtilizationInfo_v1
    assert function(device, ctypes.byref(info)) == pynvml.NVML_ERROR_INSUFFICIENT_SIZE
    assert info.processSamplesCount == 2
    samples = (pynvml.c_nvmlProcessUtilizationInfo_v1_t * 2)()
    info.procUtilArray = samples
    assert function(device, ctypes.byref(info)) == pynvml.NVML_SUCCESS
    assert [(s.pid, s.smUtil, s.memUtil, s.jpgUtil, s.ofaUtil) for s in samples] == [
        (101, 90, 30, 0, 0), (102, 0, 5, 0, 0)]


def test_no_samples_is_not_found_from_the_old_call_and_an_empty_success_from_the_new(
    start_nvml: StartNvml,
) -> None:
    start_nvml(one_gpu(mig="disabled", extra="    processes:\n      - {pid: 7, used_memory_mib: 10}\n"))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError) as old:
        pynvml.nvmlDeviceGetProcessUtilization(device, 0)
    assert old.value.value == pynvml.NVML_ERROR_NOT_FOUND
    with pytest.raises(pynvml.NVMLError) as new:
        pynvml.nvmlDeviceGetProcessesUtilizationInfo(device, 0)
    assert new.value.value == pynvml.NVML_SUCCESS  # pynvml's "code 0" error


def _mig_device(device: Any, slot: int) -> Any:
    try:
        return pynvml.nvmlDeviceGetMigDeviceHandleByIndex(device, slot)
    except pynvml.NVMLError_NotFound:
        return None  # an empty slot


@pytest.mark.parametrize("on_mig_device", [False, True], ids=["parent", "mig-device"])
def test_not_supported_on_a_mig_enabled_gpu(start_nvml: StartNvml, on_mig_device: bool) -> None:
    start_nvml(MIG_WITH_A_PROCESS)
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    if on_mig_device:
        slots = range(pynvml.nvmlDeviceGetMaxMigDeviceCount(device))
        device = next(mig for slot in slots if (mig := _mig_device(device, slot)) is not None)
    for read in (pynvml.nvmlDeviceGetProcessesUtilizationInfo, pynvml.nvmlDeviceGetProcessUtilization):
        with pytest.raises(pynvml.NVMLError) as refused:
            read(device, 0)
        assert refused.value.value == pynvml.NVML_ERROR_NOT_SUPPORTED


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "gpus: [{model: A30, processes: [{pid: 1, used_memory_mib: 1, sm_util_percent: 101}]}]\n",
            "lab.yaml: gpus[0].processes[0].sm_util_percent: 101 is more than 100",
            id="past-100-percent",
        ),
        pytest.param(
            "gpus: [{model: A30, processes: [{pid: 1, used_memory_mib: 1, mem_util_percent: -1}]}]\n",
            "lab.yaml: gpus[0].processes[0].mem_util_percent: -1 is less than 0",
            id="negative",
        ),
        pytest.param(
            "gpus: [{model: A30, mig: enabled, instances: [{profile: 1g.6gb, processes: "
            "[{pid: 1, used_memory_mib: 1, sm_util_percent: 5}]}]}]\n",
            "lab.yaml: gpus[0].instances[0].processes[0].sm_util_percent: "
            "NVML samples no process utilization under MIG: give it on a GPU without MIG",
            id="under-mig",
        ),
    ],
)
def test_utilization_keys_are_checked(text: str, expected: str) -> None:
    assert refusal(text) == expected


def test_utilization_keys_round_trip() -> None:
    loaded = parse_fleet(SAMPLED, "lab.yaml")
    dumped = dump_fleet(loaded)
    assert "sm_util_percent: 90" in dumped and "mem_util_percent: 5" in dumped
    assert parse_fleet(dumped, "dumped") == loaded


def test_a_second_gpu_keeps_its_own_samples(start_nvml: StartNvml) -> None:
    start_nvml(fleet(gpu(mig="disabled", extra="    processes:\n      - {pid: 1, used_memory_mib: 1}\n"),
                     gpu(mig="disabled", extra="    processes:\n      - {pid: 2, used_memory_mib: 1, "
                                               "sm_util_percent: 50}\n")))
    samples = pynvml.nvmlDeviceGetProcessesUtilizationInfo(pynvml.nvmlDeviceGetHandleByIndex(1), 0)
    assert [(s.pid, s.smUtil) for s in samples] == [(2, 50)]
