"""Fault injection from the fleet file: errors on a chosen call and GPU, hangs, skip and count,
lost GPUs, and NVML failing to initialise."""

from __future__ import annotations

import threading
from dataclasses import replace

import pynvml
import pytest

from mig_exporter.sim import simulator as simulator_module
from mig_exporter.sim.state import Fault
from sim.conftest import StartNvml
from sim.fleets import fleet, gpu

TWO_GPUS = fleet(gpu(mig="disabled"), gpu(mig="enabled"))


def test_an_error_on_one_call_of_one_gpu(start_nvml: StartNvml) -> None:
    """The brief: "a call failing with a chosen NVML error on a chosen GPU (or always)"; the error
    is the NVML error name without NVML_ERROR_, or its code."""
    start_nvml(
        TWO_GPUS
        + """faults:
  - {call: nvmlDeviceGetPowerUsage, gpu: 1, error: NOT_SUPPORTED}
  - {call: nvmlDeviceGetSerial, error: 999}
  - {call: nvmlDeviceCreateGpuInstance, gpu: 1, error: NO_PERMISSION}
"""
    )
    first, second = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
    assert pynvml.nvmlDeviceGetPowerUsage(first) == 65000
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetPowerUsage(second)
    for device in (first, second):
        with pytest.raises(pynvml.NVMLError_Unknown):
            pynvml.nvmlDeviceGetSerial(device)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        pynvml.nvmlDeviceCreateGpuInstance(second, 9)


def test_skip_then_count(start_nvml: StartNvml) -> None:
    """The fault contract: "skip: <matching calls that succeed first, default 0>, count: <times it
    fires, default unlimited>"."""
    start_nvml(
        TWO_GPUS
        + """faults:
  - {call: nvmlDeviceGetTemperature, gpu: 0, error: UNKNOWN, skip: 1, count: 2}
"""
    )
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    outcomes = []
    for _ in range(4):
        try:
            pynvml.nvmlDeviceGetTemperature(device, pynvml.NVML_TEMPERATURE_GPU)
            outcomes.append("ok")
        except pynvml.NVMLError_Unknown:
            outcomes.append("failed")
    assert outcomes == ["ok", "failed", "failed", "ok"]


def test_a_hung_call_does_not_block_other_threads(
    start_nvml: StartNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The brief: "a call that hangs for a given time"; "do NOT hold the lock while an injected
    delay sleeps" (the exporter collects on a background thread while others read). The hang is
    held open by the test (sleep replaced by an event), so nothing here depends on timing."""
    start_nvml(
        TWO_GPUS
        + """faults:
  - {call: nvmlDeviceGetPowerUsage, gpu: 0, delay_seconds: 1.5, count: 1}
"""
    )
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    hanging, release = threading.Event(), threading.Event()
    slept: list[float] = []

    def hang(seconds: float) -> None:
        slept.append(seconds)
        hanging.set()
        release.wait()

    monkeypatch.setattr(simulator_module.time, "sleep", hang)
    answers: list[int] = []
    hung = threading.Thread(target=lambda: answers.append(pynvml.nvmlDeviceGetPowerUsage(device)))
    hung.start()
    assert hanging.wait(timeout=30)
    other: list[list[int]] = []
    beside = threading.Thread(target=lambda: other.append(pynvml.nvmlDeviceGetMigMode(device)))
    beside.start()
    beside.join(timeout=30)  # a lock held through the hang would block this call for good
    assert other == [[0, 0]] and answers == [] and slept == [1.5]
    release.set()
    hung.join()
    assert answers == [65000]
    assert pynvml.nvmlDeviceGetPowerUsage(device) == 65000 and slept == [1.5]  # count: 1


def test_a_lost_gpu_answers_gpu_is_lost_and_the_others_still_answer(start_nvml: StartNvml) -> None:
    """The brief: "a GPU lost" (`gpus[i].lost: true`); mig-facts.md names NVMLError_GpuIsLost. The
    handle lookup itself fails, as nvidia-smi shows ("Unable to determine the device handle for
    GPU …: GPU is lost")."""
    start_nvml(fleet(gpu(mig="disabled"), gpu(mig="disabled", extra="    lost: true\n")))
    assert pynvml.nvmlDeviceGetCount() == 2
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetHandleByIndex(1)
    assert pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0)) == "NVIDIA A100-SXM4-80GB"


def test_a_gpu_lost_after_its_handle_was_taken(start_nvml: StartNvml) -> None:
    """Losing a GPU while running: every later call on its handles answers GPU_IS_LOST."""
    simulator = start_nvml(TWO_GPUS)
    device = pynvml.nvmlDeviceGetHandleByIndex(1)
    simulator.fleet = simulator.fleet.with_gpu(1, replace(simulator.fleet.gpus[1], lost=True))
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetMigMode(device)


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        ("LIBRARY_NOT_FOUND", pynvml.NVMLError_LibraryNotFound),
        ("DRIVER_NOT_LOADED", pynvml.NVMLError_DriverNotLoaded),
    ],
)
def test_init_failing(start_nvml: StartNvml, error: str, raised: type[pynvml.NVMLError]) -> None:
    """mig-facts.md: "Without a driver, `nvmlInit()` raises `NVMLError_LibraryNotFound` (code 12); a
    missing kernel module gives `NVMLError_DriverNotLoaded` (9)". With count: 1 the next try works,
    as after the driver came back."""
    with pytest.raises(raised):
        start_nvml(TWO_GPUS + f"faults:\n  - {{call: nvmlInitWithFlags, error: {error}, count: 1}}\n")
    pynvml.nvmlInit()
    assert pynvml.nvmlDeviceGetCount() == 2


def test_a_missing_versioned_symbol_is_a_library_mismatch(start_nvml: StartNvml) -> None:
    """mig-facts.md: "The unversioned `nvmlDeviceGetComputeRunningProcesses` can raise
    `pynvml.NVMLLibraryMismatchError`, which is not an `NVMLError`: catch it"."""
    start_nvml(
        TWO_GPUS + "faults:\n  - {call: nvmlDeviceGetComputeRunningProcesses_v3, error: FUNCTION_NOT_FOUND}\n"
    )
    with pytest.raises(pynvml.NVMLLibraryMismatchError):
        pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(0))


def test_faults_given_with_a_new_fleet_apply_from_then_on(start_nvml: StartNvml) -> None:
    """The fault contract lives in the fleet: assigning a fleet with new faults (as a test does to
    break NVML half-way through) makes them fire on the next calls."""
    simulator = start_nvml(TWO_GPUS)
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceGetPowerUsage(device) == 65000
    fault = Fault(call="nvmlDeviceGetPowerUsage", error=pynvml.NVML_ERROR_GPU_IS_LOST)
    simulator.fleet = replace(simulator.fleet, faults=(fault,))
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetPowerUsage(device)
