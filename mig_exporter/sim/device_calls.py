"""The simulated C functions about a device as a whole: init, versions, handles, identity, memory,
processes, telemetry, persistence and MIG mode. MIG instances are in ``mig_calls``.

Signatures are the C ones, as pynvml calls them (see ``calls``); where NVML leaves a choice open,
the method says which one the simulator makes.
"""

from __future__ import annotations

import ctypes
from dataclasses import replace
from typing import Any

import pynvml

from mig_exporter.sim import placement as driver
from mig_exporter.sim.calls import CallsBase, NvmlFailure, Target, c_function
from mig_exporter.sim.codes import NVML_ERROR_NAMES
from mig_exporter.sim.handles import (
    Handle,
    Kind,
    array_capacity,
    as_text,
    target,
    value,
    write_handle,
    write_string,
)
from mig_exporter.sim.state import MigMode, SimGpu, SimProcess, mig_device_uuid
from mig_exporter.units import MIB

NOT_AN_INSTANCE = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId of a process when MIG is off
_ARCHITECTURES = {"ampere": pynvml.NVML_DEVICE_ARCH_AMPERE, "hopper": pynvml.NVML_DEVICE_ARCH_HOPPER,
                  "blackwell": pynvml.NVML_DEVICE_ARCH_BLACKWELL}


def error_string(code: int) -> str:
    """NVML's text for ``code``: "In use by another client" for IN_USE (the words nvidia-smi
    printed in the incident), else pynvml's string or the constant's name in words."""
    if code == pynvml.NVML_ERROR_IN_USE:
        return "In use by another client"
    known = pynvml.NVMLError._errcode_to_string.get(code)
    if known is not None:
        return known
    name = NVML_ERROR_NAMES.get(code)
    return name.replace("_", " ").capitalize() if name is not None else "Unknown Error"


class DeviceCalls(CallsBase):
    # ---- init, system ---------------------------------------------------------------------------

    @c_function(Target.NONE)
    def nvmlInitWithFlags(self, flags: Any) -> int:
        self.init_count += 1
        return pynvml.NVML_SUCCESS

    @c_function(Target.NONE)
    def nvmlShutdown(self) -> int:
        if self.init_count == 0:
            return pynvml.NVML_ERROR_UNINITIALIZED
        self.init_count -= 1
        return pynvml.NVML_SUCCESS

    @c_function(Target.NONE)
    def nvmlErrorString(self, result: Any) -> bytes:
        """Returns the C string itself (pynvml sets ``restype`` to ``c_char_p`` and decodes it).
        pynvml knows the strings of the older codes; this gives the newer ones theirs."""
        return error_string(value(result)).encode()

    @c_function(Target.NONE)
    def nvmlSystemGetDriverVersion(self, version: Any, length: Any) -> int:
        return self._string(version, length, self.world.fleet.driver_version)

    @c_function(Target.NONE)
    def nvmlSystemGetNVMLVersion(self, version: Any, length: Any) -> int:
        """NVML's version is the CUDA major version and the driver's: "12.575.57.08"."""
        fleet = self.world.fleet
        return self._string(version, length, f"{fleet.cuda_version.split('.')[0]}.{fleet.driver_version}")

    @c_function(Target.NONE)
    def nvmlSystemGetCudaDriverVersion(self, cudaDriverVersion: Any) -> int:
        """CUDA "12.9" is 12090 (major * 1000 + minor * 10)."""
        major, minor = self.world.fleet.cuda_version.split(".")
        target(cudaDriverVersion).value = int(major) * 1000 + int(minor) * 10
        return pynvml.NVML_SUCCESS

    @c_function(Target.NONE)
    def nvmlSystemGetCudaDriverVersion_v2(self, cudaDriverVersion: Any) -> int:
        return self.nvmlSystemGetCudaDriverVersion(cudaDriverVersion)

    @c_function(Target.NONE)
    def nvmlSystemGetProcessName(self, pid: Any, name: Any, length: Any) -> int:
        """NOT_FOUND for a pid the fleet does not name (as for a process NVML cannot see)."""
        process_name = self.world.fleet.process_name(value(pid))
        if process_name is None:
            return pynvml.NVML_ERROR_NOT_FOUND
        return self._string(name, length, process_name)

    @staticmethod
    def _string(buffer: Any, length: Any, text: str) -> int:
        if buffer is None:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        return (
            pynvml.NVML_SUCCESS if write_string(buffer, length, text) else pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        )

    # ---- device handles -------------------------------------------------------------------------

    @c_function(Target.NONE)
    def nvmlDeviceGetCount_v2(self, deviceCount: Any) -> int:
        target(deviceCount).value = len(self.world.fleet.gpus)
        return pynvml.NVML_SUCCESS

    @c_function(Target.INDEX)
    def nvmlDeviceGetHandleByIndex_v2(self, index: Any, device: Any) -> int:
        """A lost GPU answers GPU_IS_LOST here already (nvidia-smi: "Unable to determine the device
        handle for GPU …: GPU is lost"); the dispatcher does that before this runs."""
        index = value(index)
        if not 0 <= index < len(self.world.fleet.gpus):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        write_handle(device, Handle(Kind.DEVICE, index))
        return pynvml.NVML_SUCCESS

    @c_function(Target.UUID)
    def nvmlDeviceGetHandleByUUID(self, uuid: Any, device: Any) -> int:
        """Takes a GPU UUID or a MIG device UUID (a MIG device handle comes back)."""
        wanted = as_text(uuid)
        for index, gpu in enumerate(self.world.fleet.gpus):
            if gpu.uuid == wanted:
                write_handle(device, Handle(Kind.DEVICE, index))
                return pynvml.NVML_SUCCESS
            for gi in gpu.instances if gpu.mig.current else ():
                for ci in gi.compute_instances:
                    if mig_device_uuid(gpu.uuid, gi, ci) == wanted:
                        write_handle(device, Handle(Kind.MIG_DEVICE, index, gi.id, ci.id))
                        return pynvml.NVML_SUCCESS
        return pynvml.NVML_ERROR_NOT_FOUND

    @c_function(Target.HANDLE)
    def nvmlDeviceGetIndex(self, device: Any, index: Any) -> int:
        gpu_index, _ = self._physical(device)
        target(index).value = gpu_index
        return pynvml.NVML_SUCCESS

    # ---- identity -------------------------------------------------------------------------------

    @c_function(Target.HANDLE)
    def nvmlDeviceGetName(self, device: Any, name: Any, length: Any) -> int:
        """A MIG device is named after its parent and profile: "NVIDIA A100-SXM4-80GB MIG 3g.40gb"."""
        handle, gpu = self._device_or_mig(device)
        text = gpu.model.nvml_name
        if handle.kind is Kind.MIG_DEVICE:
            text = f"{text} MIG {self._mig_profile_name(handle)}"
        return self._string(name, length, text)

    def _mig_profile_name(self, handle: Handle) -> str:
        _, _, compute_instance, profile = self._mig_parts(handle)
        if compute_instance.slices < profile.slice_count:
            return f"{compute_instance.slices}c.{profile.name}"
        return profile.name

    @c_function(Target.HANDLE)
    def nvmlDeviceGetUUID(self, device: Any, uuid: Any, length: Any) -> int:
        handle, gpu = self._device_or_mig(device)
        text = gpu.uuid
        if handle.kind is Kind.MIG_DEVICE:
            _, gpu_instance, compute_instance, _ = self._mig_parts(handle)
            text = mig_device_uuid(gpu.uuid, gpu_instance, compute_instance)
        return self._string(uuid, length, text)

    @c_function(Target.HANDLE)
    def nvmlDeviceGetSerial(self, device: Any, serial: Any, length: Any) -> int:
        _, gpu = self._physical(device)
        if gpu.serial is None:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        return self._string(serial, length, gpu.serial)

    @c_function(Target.HANDLE)
    def nvmlDeviceGetArchitecture(self, device: Any, arch: Any) -> int:
        """The model's architecture as ``NVML_DEVICE_ARCH_*`` (the reader keeps it with the MIG
        capability: whether enabling MIG needs a reset)."""
        _, gpu = self._physical(device)
        target(arch).value = _ARCHITECTURES[gpu.model.architecture]
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetPciInfo_v3(self, device: Any, pci: Any) -> int:
        _, gpu = self._physical(device)
        info = target(pci)
        if gpu.pci_bus_id is None:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        bus_id = gpu.pci_bus_id
        domain, bus, rest = bus_id.split(":")
        device_number = rest.split(".")[0]
        info.busId = bus_id.encode()
        info.busIdLegacy = f"{int(domain, 16):04X}:{bus}:{rest}".encode()
        info.domain, info.bus, info.device = int(domain, 16), int(bus, 16), int(device_number, 16)
        info.pciDeviceId = gpu.model.pci_device_ids[0] << 16 | 0x10DE  # device ID, NVIDIA's vendor ID
        return pynvml.NVML_SUCCESS

    # ---- memory and processes -------------------------------------------------------------------

    def _memory_mib(self, device: Any) -> tuple[int, int]:
        """(total, used) in MiB of a GPU or of a MIG device (its GPU instance's memory)."""
        handle, gpu = self._device_or_mig(device)
        if handle.kind is Kind.MIG_DEVICE:
            _, gpu_instance, _, profile = self._mig_parts(handle)
            return profile.memory_mib, driver.gpu_instance_memory_used_mib(profile, gpu_instance)
        return gpu.model.memory_total_mib, driver.gpu_memory_used_mib(gpu)

    @c_function(Target.HANDLE)
    def nvmlDeviceGetMemoryInfo(self, device: Any, memory: Any) -> int:
        total, used = self._memory_mib(device)
        info = target(memory)
        info.total, info.used, info.free = total * MIB, used * MIB, (total - used) * MIB
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetMemoryInfo_v2(self, device: Any, memory: Any) -> int:
        info = target(memory)
        if info.version != pynvml.nvmlMemory_v2:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        total, used = self._memory_mib(device)
        info.total, info.reserved, info.used, info.free = total * MIB, 0, used * MIB, (total - used) * MIB
        return pynvml.NVML_SUCCESS

    def _processes(self, device: Any) -> list[tuple[SimProcess, int, int]]:
        """(process, GPU instance ID, compute instance ID): on a MIG device its compute instance's,
        on a MIG-enabled GPU all of them, else the whole GPU's with 0xFFFFFFFF IDs."""
        handle, gpu = self._device_or_mig(device)
        if handle.kind is Kind.MIG_DEVICE:
            _, gpu_instance, compute_instance, _ = self._mig_parts(handle)
            return [(p, gpu_instance.id, compute_instance.id) for p in compute_instance.processes]
        if gpu.mig.current:
            return [
                (p, gi.id, ci.id) for gi in gpu.instances for ci in gi.compute_instances for p in ci.processes
            ]
        return [(p, NOT_AN_INSTANCE, NOT_AN_INSTANCE) for p in gpu.processes]

    @c_function(Target.HANDLE)
    def nvmlDeviceGetComputeRunningProcesses_v3(self, device: Any, infoCount: Any, infos: Any) -> int:
        """The INSUFFICIENT_SIZE protocol: with a count (or array) too small, the count needed
        comes back with INSUFFICIENT_SIZE; with none running, SUCCESS and a count of 0."""
        processes = self._processes(device)
        count = target(infoCount)
        capacity = array_capacity(infos)
        fits = (
            infos is not None
            and count.value >= len(processes)
            and (capacity is None or capacity >= len(processes))
        )
        if not fits:
            count.value = len(processes)
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE if processes else pynvml.NVML_SUCCESS
        array = target(infos)
        for i, (process, gpu_instance_id, compute_instance_id) in enumerate(processes):
            entry = array[i]
            entry.pid = process.pid
            entry.usedGpuMemory = process.used_memory_mib * MIB
            entry.gpuInstanceId = gpu_instance_id
            entry.computeInstanceId = compute_instance_id
        count.value = len(processes)
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetComputeRunningProcesses_v2(self, device: Any, infoCount: Any, infos: Any) -> int:
        return self.nvmlDeviceGetComputeRunningProcesses_v3(device, infoCount, infos)

    @c_function(Target.HANDLE)
    def nvmlDeviceGetGraphicsRunningProcesses_v3(self, device: Any, infoCount: Any, infos: Any) -> int:
        """Simulated processes are all compute processes: no graphics process runs."""
        self._device_or_mig(device)
        target(infoCount).value = 0
        return pynvml.NVML_SUCCESS

    # ---- telemetry ------------------------------------------------------------------------------

    def _not_on_mig(self, device: Any) -> SimGpu:
        """Utilization and engine queries: NOT_SUPPORTED on a MIG device and on a MIG-enabled GPU."""
        _, gpu = self._physical(device)
        if gpu.mig.current:
            raise NvmlFailure(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    @c_function(Target.HANDLE)
    def nvmlDeviceGetUtilizationRates(self, device: Any, utilization: Any) -> int:
        gpu = self._not_on_mig(device)
        rates = target(utilization)
        rates.gpu = gpu.telemetry.utilization_gpu_percent
        rates.memory = gpu.telemetry.utilization_memory_percent
        return pynvml.NVML_SUCCESS

    def _idle_engine(self, device: Any, utilization: Any, samplingPeriodUs: Any) -> int:
        """The video engines are never busy in the simulator: 0 % over NVML's usual 167 ms period."""
        self._not_on_mig(device)
        target(utilization).value = 0
        target(samplingPeriodUs).value = 167000
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetEncoderUtilization(self, device: Any, utilization: Any, samplingPeriodUs: Any) -> int:
        return self._idle_engine(device, utilization, samplingPeriodUs)

    @c_function(Target.HANDLE)
    def nvmlDeviceGetDecoderUtilization(self, device: Any, utilization: Any, samplingPeriodUs: Any) -> int:
        return self._idle_engine(device, utilization, samplingPeriodUs)

    @c_function(Target.HANDLE)
    def nvmlDeviceGetTemperature(self, device: Any, sensorType: Any, temp: Any) -> int:
        _, gpu = self._physical(device)
        if value(sensorType) != pynvml.NVML_TEMPERATURE_GPU:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        target(temp).value = gpu.telemetry.temperature_celsius
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetTemperatureV(self, device: Any, temperature: Any) -> int:
        reading = target(temperature)
        if reading.version != pynvml.nvmlTemperature_v1:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        temp = ctypes.c_uint()
        status = self.nvmlDeviceGetTemperature(device, reading.sensorType, ctypes.byref(temp))
        reading.temperature = temp.value
        return status

    @c_function(Target.HANDLE)
    def nvmlDeviceGetPowerUsage(self, device: Any, power: Any) -> int:
        _, gpu = self._physical(device)
        target(power).value = round(gpu.telemetry.power_watts * 1000)  # milliwatts
        return pynvml.NVML_SUCCESS

    def _power_limit_mw(self, device: Any) -> int:
        _, gpu = self._physical(device)
        limit = gpu.telemetry.power_limit_watts
        return round((gpu.model.default_power_limit_watts if limit is None else limit) * 1000)

    @c_function(Target.HANDLE)
    def nvmlDeviceGetEnforcedPowerLimit(self, device: Any, limit: Any) -> int:
        target(limit).value = self._power_limit_mw(device)
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetPowerManagementLimit(self, device: Any, limit: Any) -> int:
        target(limit).value = self._power_limit_mw(device)
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetClockInfo(self, device: Any, type: Any, clock: Any) -> int:
        """Graphics and SM clocks are the same clock; the video clock is not simulated."""
        _, gpu = self._physical(device)
        clocks = {
            pynvml.NVML_CLOCK_GRAPHICS: gpu.telemetry.clock_sm_mhz,
            pynvml.NVML_CLOCK_SM: gpu.telemetry.clock_sm_mhz,
            pynvml.NVML_CLOCK_MEM: gpu.telemetry.clock_memory_mhz,
        }
        kind = value(type)
        if kind not in clocks:
            return (
                pynvml.NVML_ERROR_NOT_SUPPORTED
                if kind < pynvml.NVML_CLOCK_COUNT
                else pynvml.NVML_ERROR_INVALID_ARGUMENT
            )
        target(clock).value = clocks[kind]
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetTotalEccErrors(
        self, device: Any, errorType: Any, counterType: Any, eccCounts: Any
    ) -> int:
        """Volatile and aggregate counters are the same: the simulated GPU was never reset."""
        _, gpu = self._physical(device)
        counts = {
            pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED: gpu.telemetry.ecc_corrected,
            pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED: gpu.telemetry.ecc_uncorrected,
        }
        if value(errorType) not in counts or value(counterType) not in (
            pynvml.NVML_VOLATILE_ECC,
            pynvml.NVML_AGGREGATE_ECC,
        ):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        target(eccCounts).value = counts[value(errorType)]
        return pynvml.NVML_SUCCESS

    # ---- persistence and MIG mode ---------------------------------------------------------------

    @c_function(Target.HANDLE)
    def nvmlDeviceGetPersistenceMode(self, device: Any, mode: Any) -> int:
        _, gpu = self._physical(device)
        target(mode).value = int(gpu.persistence)
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceSetPersistenceMode(self, device: Any, mode: Any) -> int:
        """Needs root on real hardware; the simulator lets anyone."""
        index, gpu = self._physical(device)
        if value(mode) not in (pynvml.NVML_FEATURE_DISABLED, pynvml.NVML_FEATURE_ENABLED):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        self._commit_gpu(index, replace(gpu, persistence=bool(value(mode))))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetMigMode(self, device: Any, currentMode: Any, pendingMode: Any) -> int:
        _, gpu = self._physical(device)
        target(currentMode).value = int(gpu.mig.current)
        target(pendingMode).value = int(gpu.mig.pending)
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceSetMigMode(self, device: Any, mode: Any, activationStatus: Any) -> int:
        """mig-facts.md: the call fails only for itself; a failed activation is the status.

        Asking for the current mode cancels a pending change. Disabling with GPU instances left is
        IN_USE (the call fails, nothing changes). Otherwise, on an idle GPU the mode changes at once
        (status SUCCESS); with processes or other clients (``held_by``) on it, the new mode stays
        pending until ``reset_gpu`` and the status is IN_USE.
        """
        index, gpu = self._physical(device)
        wanted = value(mode)
        if wanted not in (pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_ENABLE):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        enable = bool(wanted)
        status = pynvml.NVML_SUCCESS
        if enable == gpu.mig.current:
            new_mode = MigMode.of(enable, enable)
        elif not enable and gpu.instances:
            return pynvml.NVML_ERROR_IN_USE
        elif gpu.all_processes or gpu.held_by:
            new_mode = MigMode.of(gpu.mig.current, enable)
            status = pynvml.NVML_ERROR_IN_USE
        else:
            new_mode = MigMode.of(enable, enable)
            gpu = replace(gpu, memory_used_mib=None)  # the mode change reset the idle GPU
        self._commit_gpu(index, replace(gpu, mig=new_mode))
        target(activationStatus).value = status
        return pynvml.NVML_SUCCESS
