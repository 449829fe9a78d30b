"""The C calling convention as the simulator honours it: the INSUFFICIENT_SIZE protocol for lists
and strings, versioned structs, calls before nvmlInit, and symbols it does not implement."""

from __future__ import annotations

import ctypes
from typing import Any

import pynvml
import pytest

from sim.conftest import StartNvml
from sim.fleets import one_gpu

THREE_PROCESSES = one_gpu(
    mig="disabled",
    extra="""    processes:
      - {pid: 101, name: a, used_memory_mib: 1000}
      - {pid: 102, name: b, used_memory_mib: 2000}
      - {pid: 103, name: c, used_memory_mib: 3000}
""",
)


def c_function(name: str) -> Any:
    """The C symbol itself, as pynvml looks it up."""
    return pynvml._nvmlGetFunctionPointer(name)


def test_process_list_answers_insufficient_size_with_the_count_needed(start_nvml: StartNvml) -> None:
    """mig-facts.md: the C functions "honour the INSUFFICIENT_SIZE two-call protocol for lists": a
    count too small (or no array) gets INSUFFICIENT_SIZE and the count needed; then the list."""
    start_nvml(THREE_PROCESSES)
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    function = c_function("nvmlDeviceGetComputeRunningProcesses_v3")
    count = ctypes.c_uint(0)
    assert function(device, ctypes.byref(count), None) == pynvml.NVML_ERROR_INSUFFICIENT_SIZE
    assert count.value == 3
    too_small = (pynvml.c_nvmlProcessInfo_v3_t * 2)()
    count.value = 2
    assert function(device, ctypes.byref(count), too_small) == pynvml.NVML_ERROR_INSUFFICIENT_SIZE
    assert count.value == 3
    enough = (pynvml.c_nvmlProcessInfo_v3_t * 3)()
    assert function(device, ctypes.byref(count), enough) == pynvml.NVML_SUCCESS
    assert [(p.pid, p.usedGpuMemory >> 20) for p in enough] == [(101, 1000), (102, 2000), (103, 3000)]


def test_an_empty_process_list_is_success_with_count_zero(start_nvml: StartNvml) -> None:
    """pynvml's wrapper treats SUCCESS on the first call as "no running processes" (the C
    protocol: nothing to return, nothing too small)."""
    start_nvml(one_gpu(mig="disabled"))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    count = ctypes.c_uint(0)
    assert c_function("nvmlDeviceGetComputeRunningProcesses_v3")(device, ctypes.byref(count), None) == 0
    assert count.value == 0
    assert pynvml.nvmlDeviceGetComputeRunningProcesses(device) == []


def test_gpu_instance_list_refuses_an_array_shorter_than_the_instances(start_nvml: StartNvml) -> None:
    """nvml.h: `nvmlDeviceGetGpuInstances` needs an array of the profile's instance count; a
    shorter array is INSUFFICIENT_SIZE with the count needed, never a write past its end."""
    start_nvml(one_gpu(extra="    instances: [{profile: 3g.40gb}, {profile: 3g.40gb}]\n"))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    count = ctypes.c_uint()
    with pytest.raises(pynvml.NVMLError_InsufficientSize):
        pynvml.nvmlDeviceGetGpuInstances(device, 9, (pynvml.c_nvmlGpuInstance_t * 1)(), ctypes.byref(count))
    assert count.value == 2
    found = (pynvml.c_nvmlGpuInstance_t * 2)()
    pynvml.nvmlDeviceGetGpuInstances(device, 9, found, ctypes.byref(count))
    assert sorted(pynvml.nvmlGpuInstanceGetInfo(gi).id for gi in found) == [1, 2]


def test_a_string_buffer_too_small_is_insufficient_size(start_nvml: StartNvml) -> None:
    """The C string calls take a buffer and its length; NVML answers INSUFFICIENT_SIZE when the
    text and its terminating NUL do not fit."""
    start_nvml(one_gpu())
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    name = ctypes.create_string_buffer(8)
    assert (
        c_function("nvmlDeviceGetName")(device, name, ctypes.c_uint(8)) == pynvml.NVML_ERROR_INSUFFICIENT_SIZE
    )
    big = ctypes.create_string_buffer(96)
    assert c_function("nvmlDeviceGetName")(device, big, ctypes.c_uint(96)) == pynvml.NVML_SUCCESS
    assert big.value == b"NVIDIA A100-SXM4-80GB"


def test_memory_info_v1_and_v2(start_nvml: StartNvml) -> None:
    """mig-facts.md: "`nvmlDeviceGetMemoryInfo` is v1 unless `version=pynvml.nvmlMemory_v2` is passed
    (v2 adds `reserved`)"; a v2 struct with another version is an argument version mismatch."""
    start_nvml(one_gpu(mig="disabled", extra="    memory_used_mib: 32759\n"))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    v1 = pynvml.nvmlDeviceGetMemoryInfo(device)
    v2 = pynvml.nvmlDeviceGetMemoryInfo(device, version=pynvml.nvmlMemory_v2)
    assert not hasattr(v1, "reserved")
    assert (v1.total, v1.used, v1.free) == (81920 << 20, 32759 << 20, (81920 - 32759) << 20)
    assert (v2.total, v2.used, v2.free, v2.reserved) == (v1.total, v1.used, v1.free, 0)
    stale = pynvml.c_nvmlMemory_v2_t()
    stale.version = 1
    assert c_function("nvmlDeviceGetMemoryInfo_v2")(device, ctypes.byref(stale)) == (
        pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
    )


def test_calls_before_init_are_uninitialized(start_nvml: StartNvml) -> None:
    """NVML answers UNINITIALIZED to a call made before nvmlInit or after the last nvmlShutdown."""
    start_nvml(one_gpu())
    pynvml.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        pynvml.nvmlDeviceGetCount()
    pynvml.nvmlInit()
    assert pynvml.nvmlDeviceGetCount() == 1


def test_a_symbol_the_simulator_lacks_is_function_not_found(start_nvml: StartNvml) -> None:
    """pynvml turns a symbol missing from the library into FUNCTION_NOT_FOUND, as with an older
    driver; the simulator lacks vGPU calls, for example."""
    start_nvml(one_gpu())
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        pynvml.nvmlDeviceGetVgpuUtilization(pynvml.nvmlDeviceGetHandleByIndex(0), 0)


def test_versions_and_telemetry(start_nvml: StartNvml) -> None:
    """The incident's host: "driver 575.57.08, CUDA 12.9"; NVML reports CUDA 12.9 as 12090, power in
    milliwatts, clocks in MHz."""
    start_nvml(
        one_gpu(
            mig="disabled",
            extra="""    temperature_celsius: 55
    power_watts: 212.5
    power_limit_watts: 300
    clock_sm_mhz: 1200
    clock_memory_mhz: 1500
    ecc_corrected: 3
    serial: "1652823052466"
    pci_bus_id: "00000000:4E:00.0"
""",
        )
    )
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlSystemGetDriverVersion() == "575.57.08"
    assert pynvml.nvmlSystemGetCudaDriverVersion() == 12090
    assert pynvml.nvmlSystemGetCudaDriverVersion_v2() == 12090
    assert pynvml.nvmlSystemGetNVMLVersion() == "12.575.57.08"
    assert pynvml.nvmlDeviceGetTemperature(device, pynvml.NVML_TEMPERATURE_GPU) == 55
    assert pynvml.nvmlDeviceGetPowerUsage(device) == 212500
    assert pynvml.nvmlDeviceGetEnforcedPowerLimit(device) == 300000
    assert pynvml.nvmlDeviceGetClockInfo(device, pynvml.NVML_CLOCK_SM) == 1200
    assert pynvml.nvmlDeviceGetClockInfo(device, pynvml.NVML_CLOCK_MEM) == 1500
    corrected = pynvml.nvmlDeviceGetTotalEccErrors(
        device, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC
    )
    assert corrected == 3
    assert pynvml.nvmlDeviceGetSerial(device) == "1652823052466"
    pci = pynvml.nvmlDeviceGetPciInfo(device)
    assert (pci.busId, pci.bus, pci.pciDeviceId) == ("00000000:4E:00.0", 0x4E, 0x20B210DE)
