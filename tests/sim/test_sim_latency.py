"""The fleet file's ``call_latency``: every simulated C call takes a real-like time (issue 12), and
the call counter groups C functions into families for tests and the benchmark."""

from __future__ import annotations

import time

import pynvml
import pytest

from mig_exporter.sim import FleetError, dump_fleet, parse_fleet
from mig_exporter.sim.latency import CallLatency, call_family
from sim.conftest import StartNvml
from sim.fleets import fleet, gpu

TWO_GPUS = fleet(gpu(mig="disabled"), gpu(mig="disabled"))


def test_a_function_latency_replaces_the_default_and_a_gpu_latency_adds_to_it() -> None:
    latency = CallLatency(seconds=0.001, calls={"nvmlDeviceGetName": 0.004}, gpus={1: 0.5})
    assert latency.of("nvmlDeviceGetUUID", None) == 0.001
    assert latency.of("nvmlDeviceGetName", 0) == 0.004
    assert latency.of("nvmlDeviceGetName", 1) == 0.504
    assert latency.of("nvmlDeviceGetUUID", 1) == 0.501
    assert not CallLatency() and latency


def test_the_fleet_file_setting_is_read_and_written_back() -> None:
    text = TWO_GPUS + """call_latency:
  seconds: 0.001
  calls: {nvmlDeviceGetComputeRunningProcesses_v3: 0.003}
  gpus: {1: 0.25}
"""
    parsed = parse_fleet(text.encode(), "latency.yaml")
    assert parsed.call_latency == CallLatency(
        0.001, {"nvmlDeviceGetComputeRunningProcesses_v3": 0.003}, {1: 0.25})
    assert parse_fleet(dump_fleet(parsed).encode(), "again.yaml") == parsed


@pytest.mark.parametrize(("setting", "message"), [
    ("{seconds: -1}", "call_latency.seconds: -1 is less than 0"),
    ("{seconds: fast}", "call_latency.seconds: 'fast' is not a number"),
    ("{calls: {nvmlDeviceGetNmae: 0.1}}",
     "call_latency.calls.nvmlDeviceGetNmae: 'nvmlDeviceGetNmae' is not a C function the simulator "
     "implements (did you mean nvmlDeviceGetName?)"),
    ("{gpus: {2: 0.1}}", "call_latency.gpus.2: 2 is not the index of a GPU of this fleet (it has 2)"),
    ("{second: 1}", "call_latency.second: unknown key (did you mean seconds?)"),
    ("[1]", "call_latency: this must be a mapping"),
])
def test_a_bad_setting_is_refused_with_its_path(setting: str, message: str) -> None:
    with pytest.raises(FleetError) as refused:
        parse_fleet(f"{TWO_GPUS}call_latency: {setting}\n".encode(), "bad.yaml")
    assert str(refused.value).startswith(f"bad.yaml: {message}")


def test_a_call_takes_at_least_its_latency(start_nvml: StartNvml) -> None:
    """A lower bound only: sleeping at least the latency is what time.sleep guarantees."""
    start_nvml(TWO_GPUS + "call_latency: {calls: {nvmlDeviceGetName: 0.05}, gpus: {1: 0.1}}\n")
    first, second = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
    started = time.monotonic()
    assert pynvml.nvmlDeviceGetName(first) == "NVIDIA A100-SXM4-80GB"
    assert time.monotonic() - started >= 0.05
    started = time.monotonic()
    pynvml.nvmlDeviceGetTemperature(second, pynvml.NVML_TEMPERATURE_GPU)
    assert time.monotonic() - started >= 0.1


def test_calls_are_counted_per_function_and_per_family(start_nvml: StartNvml) -> None:
    simulator = start_nvml(TWO_GPUS)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    pynvml.nvmlDeviceGetUUID(handle)
    pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
    pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    pynvml.nvmlDeviceGetMigMode(handle)
    assert simulator.call_counts["nvmlDeviceGetUUID"] == 1
    assert simulator.call_families() == {
        "system": 1, "identity": 2, "telemetry": 1, "process": 1, "mig": 1}


@pytest.mark.parametrize(("call", "family"), [
    ("nvmlDeviceGetCount_v2", "system"), ("nvmlSystemGetDriverVersion", "system"),
    ("nvmlDeviceGetPciInfo_v3", "identity"), ("nvmlDeviceGetSerial", "identity"),
    ("nvmlDeviceGetGpuInstanceProfileInfo", "mig"), ("nvmlGpuInstanceGetInfo", "mig"),
    ("nvmlDeviceGetMigDeviceHandleByIndex", "mig"), ("nvmlDeviceCreateGpuInstance", "mig-write"),
    ("nvmlSystemGetProcessName", "process"), ("nvmlDeviceGetProcessUtilization", "process"),
    ("nvmlDeviceGetTotalEccErrors", "ecc"), ("nvmlDeviceGetPowerUsage", "telemetry"),
    ("nvmlDeviceSetPersistenceMode", "write"),
])
def test_families(call: str, family: str) -> None:
    assert call_family(call) == family
