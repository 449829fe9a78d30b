"""The simulated NVML C functions, with the signatures pynvml calls them with.

Each method is one C symbol of ``libnvidia-ml``: it takes the arguments pynvml passes (ints or
ctypes scalars, ``byref`` outputs, arrays, string buffers), writes its results through them and
returns an ``NVML_*`` code. Inside, a failure is raised as ``NvmlFailure(code)`` and turned into
the return code by ``SimulatedNvml``, which also counts calls, injects faults, answers
GPU_IS_LOST for lost GPUs and holds the state lock. Every method here reads ``self.world.fleet``
and changes it only through ``self.world.commit`` (so the change is written back to the fleet file).

Where NVML leaves a choice open, the choice is documented on the method; the driver's own
decisions (placements, IDs, memory overhead) are in ``placement`` (imported as ``driver``).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from typing import Any, Protocol, TypeVar

import pynvml

from mig_exporter.profiles import COMPUTE_PROFILE_ENUM_BY_SLICES, GpuInstanceProfile, valid_compute_slices
from mig_exporter.sim import placement as driver
from mig_exporter.sim.handles import (
    Handle,
    Kind,
    array_capacity,
    as_pointer,
    decode,
    target,
    value,
    write_handle,
    write_handle_at,
    write_string,
)
from mig_exporter.sim.state import (
    Fleet,
    MigMode,
    SimComputeInstance,
    SimGpu,
    SimGpuInstance,
    SimProcess,
    mig_device_uuid,
)

MIB = 1024 * 1024
NOT_AN_INSTANCE = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId of a process when MIG is off
SLICES_BY_COMPUTE_PROFILE = {enum: slices for slices, enum in COMPUTE_PROFILE_ENUM_BY_SLICES.items()}


class NvmlFailure(Exception):
    """Raised inside a C function; the dispatcher returns ``code`` to pynvml."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Target(Enum):
    """What a C function's first argument says about the GPU it concerns (for faults and lost GPUs)."""

    NONE = "none"  # system-wide call
    INDEX = "index"  # first argument is a GPU index
    UUID = "uuid"  # first argument is a GPU or MIG UUID
    HANDLE = "handle"  # first argument is a device, MIG device, GPU instance or compute instance handle


class World(Protocol):
    """The state the C functions act on; ``SimulatedNvml`` provides it."""

    @property
    def fleet(self) -> Fleet: ...

    def commit(self, fleet: Fleet) -> None: ...


F = TypeVar("F", bound=Callable[..., Any])


def c_function(targets: Target) -> Callable[[F], F]:
    """Mark a method as the C symbol of the same name, saying where its GPU is found."""
    def mark(function: F) -> F:
        function._nvml_target = targets  # type: ignore[attr-defined]
        return function
    return mark


def c_function_targets() -> dict[str, Target]:
    """Every implemented C symbol → where its GPU is found."""
    return {name: member._nvml_target for name, member in vars(NvmlLibrary).items()
            if hasattr(member, "_nvml_target")}


class NvmlLibrary:
    """The C functions over a ``World``. ``init_count`` is nvmlInit's reference count."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.init_count = 0

    # ---- handles --------------------------------------------------------------------------------

    def gpu_of(self, handle: Handle) -> SimGpu:
        gpus = self.world.fleet.gpus
        if handle.gpu >= len(gpus):
            raise NvmlFailure(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpus[handle.gpu]

    def exists(self, handle: Handle) -> bool:
        """Whether ``handle`` still points at something (a destroyed instance's handle dangles)."""
        gpus = self.world.fleet.gpus
        if handle.gpu >= len(gpus):
            return False
        if handle.kind is Kind.DEVICE:
            return True
        gpu = gpus[handle.gpu]
        gpu_instance = gpu.gpu_instance(handle.gpu_instance) if gpu.mig.current else None
        if gpu_instance is None:
            return False
        if handle.kind is Kind.GPU_INSTANCE:
            return True
        return gpu_instance.compute_instance(handle.compute_instance) is not None

    def _resolve(self, arg: Any, *kinds: Kind) -> Handle:
        handle = decode(arg)
        if handle is None or handle.kind not in kinds or not self.exists(handle):
            raise NvmlFailure(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle

    def _physical(self, arg: Any) -> tuple[int, SimGpu]:
        """A physical device handle. A MIG device handle is NOT_SUPPORTED here: the query is about
        the whole board (temperature, power, MIG mode …)."""
        handle = self._resolve(arg, Kind.DEVICE, Kind.MIG_DEVICE)
        if handle.kind is Kind.MIG_DEVICE:
            raise NvmlFailure(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return handle.gpu, self.gpu_of(handle)

    def _device_or_mig(self, arg: Any) -> tuple[Handle, SimGpu]:
        handle = self._resolve(arg, Kind.DEVICE, Kind.MIG_DEVICE)
        return handle, self.gpu_of(handle)

    def _gpu_instance(self, arg: Any) -> tuple[Handle, SimGpu, SimGpuInstance, GpuInstanceProfile]:
        handle = self._resolve(arg, Kind.GPU_INSTANCE)
        gpu = self.gpu_of(handle)
        gpu_instance = gpu.gpu_instance(handle.gpu_instance)
        assert gpu_instance is not None  # checked by _resolve
        profile = gpu.profile(gpu_instance.profile_id)
        assert profile is not None  # fleet validation admits only the model's profiles
        return handle, gpu, gpu_instance, profile

    def _mig_parts(self, handle: Handle) -> tuple[SimGpu, SimGpuInstance, SimComputeInstance, GpuInstanceProfile]:
        gpu = self.gpu_of(handle)
        gpu_instance = gpu.gpu_instance(handle.gpu_instance)
        assert gpu_instance is not None
        compute_instance = gpu_instance.compute_instance(handle.compute_instance)
        assert compute_instance is not None
        profile = gpu.profile(gpu_instance.profile_id)
        assert profile is not None
        return gpu, gpu_instance, compute_instance, profile

    def gpu_index_of_uuid(self, text: str) -> int | None:
        for index, gpu in enumerate(self.world.fleet.gpus):
            if gpu.uuid == text or any(
                mig_device_uuid(gpu.uuid, gi.id, ci.id) == text
                for gi in gpu.instances for ci in gi.compute_instances
            ):
                return index
        return None

    def _commit_gpu(self, index: int, gpu: SimGpu) -> None:
        self.world.commit(self.world.fleet.with_gpu(index, gpu))

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
        """Returns the C string itself (pynvml sets ``restype`` to ``c_char_p`` and decodes it)."""
        text = pynvml.NVMLError._errcode_to_string.get(value(result), "Unknown Error")
        return text.encode()

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
        return pynvml.NVML_SUCCESS if write_string(buffer, length, text) else pynvml.NVML_ERROR_INSUFFICIENT_SIZE

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
        text = value(uuid).decode() if isinstance(value(uuid), bytes) else str(value(uuid))
        for index, gpu in enumerate(self.world.fleet.gpus):
            if gpu.uuid == text:
                write_handle(device, Handle(Kind.DEVICE, index))
                return pynvml.NVML_SUCCESS
            for gi in gpu.instances if gpu.mig.current else ():
                for ci in gi.compute_instances:
                    if mig_device_uuid(gpu.uuid, gi.id, ci.id) == text:
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
            text = mig_device_uuid(gpu.uuid, handle.gpu_instance, handle.compute_instance)
        return self._string(uuid, length, text)

    @c_function(Target.HANDLE)
    def nvmlDeviceGetSerial(self, device: Any, serial: Any, length: Any) -> int:
        index, gpu = self._physical(device)
        return self._string(serial, length, gpu.serial or "")

    @c_function(Target.HANDLE)
    def nvmlDeviceGetPciInfo_v3(self, device: Any, pci: Any) -> int:
        _, gpu = self._physical(device)
        info = target(pci)
        bus_id = gpu.pci_bus_id or ""
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
            return [(p, gi.id, ci.id) for gi in gpu.instances for ci in gi.compute_instances for p in ci.processes]
        return [(p, NOT_AN_INSTANCE, NOT_AN_INSTANCE) for p in gpu.processes]

    @c_function(Target.HANDLE)
    def nvmlDeviceGetComputeRunningProcesses_v3(self, device: Any, infoCount: Any, infos: Any) -> int:
        """The INSUFFICIENT_SIZE protocol: with a count (or array) too small, the count needed
        comes back with INSUFFICIENT_SIZE; with none running, SUCCESS and a count of 0."""
        processes = self._processes(device)
        count = target(infoCount)
        capacity = array_capacity(infos)
        fits = infos is not None and count.value >= len(processes) and (capacity is None or capacity >= len(processes))
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

    @c_function(Target.HANDLE)
    def nvmlDeviceGetEncoderUtilization(self, device: Any, utilization: Any, samplingPeriodUs: Any) -> int:
        self._not_on_mig(device)
        target(utilization).value = 0
        target(samplingPeriodUs).value = 167000
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetDecoderUtilization(self, device: Any, utilization: Any, samplingPeriodUs: Any) -> int:
        self._not_on_mig(device)
        target(utilization).value = 0
        target(samplingPeriodUs).value = 167000
        return pynvml.NVML_SUCCESS

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
            return pynvml.NVML_ERROR_NOT_SUPPORTED if kind < pynvml.NVML_CLOCK_COUNT else pynvml.NVML_ERROR_INVALID_ARGUMENT
        target(clock).value = clocks[kind]
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetTotalEccErrors(self, device: Any, errorType: Any, counterType: Any, eccCounts: Any) -> int:
        """Volatile and aggregate counters are the same: the simulated GPU was never reset."""
        _, gpu = self._physical(device)
        counts = {
            pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED: gpu.telemetry.ecc_corrected,
            pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED: gpu.telemetry.ecc_uncorrected,
        }
        if value(errorType) not in counts or value(counterType) not in (pynvml.NVML_VOLATILE_ECC,
                                                                         pynvml.NVML_AGGREGATE_ECC):
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
        self._commit_gpu(index, replace(gpu, mig=new_mode))
        target(activationStatus).value = status
        return pynvml.NVML_SUCCESS

    # ---- GPU instances --------------------------------------------------------------------------

    def _profile_by_enum(self, gpu: SimGpu, enum: int) -> GpuInstanceProfile:
        if not 0 <= enum < pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT:
            raise NvmlFailure(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        profile = gpu.model.profile_by_enum(enum)
        if profile is None:
            raise NvmlFailure(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return profile

    @staticmethod
    def _fill_gpu_instance_profile(info: Any, profile: GpuInstanceProfile) -> None:
        info.id = profile.id
        info.isP2pSupported = 0
        info.sliceCount = profile.slice_count
        info.instanceCount = profile.max_count
        info.multiprocessorCount = profile.multiprocessors
        info.copyEngineCount = profile.copy_engines
        info.decoderCount = profile.decoders
        info.encoderCount = profile.encoders
        info.jpegCount = profile.jpeg
        info.ofaCount = profile.ofa
        info.memorySizeMB = profile.memory_mib

    @c_function(Target.HANDLE)
    def nvmlDeviceGetGpuInstanceProfileInfo(self, device: Any, profile: Any, info: Any) -> int:
        """Takes the ``NVML_GPU_INSTANCE_PROFILE_*`` enum, answers the driver's profile ID; works
        whatever the MIG mode (the profiles are a property of the model)."""
        _, gpu = self._physical(device)
        self._fill_gpu_instance_profile(target(info), self._profile_by_enum(gpu, value(profile)))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetGpuInstanceProfileInfoV(self, device: Any, profile: Any, info: Any) -> int:
        _, gpu = self._physical(device)
        out = target(info)
        if out.version != pynvml.nvmlGpuInstanceProfileInfo_v2:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        found = self._profile_by_enum(gpu, value(profile))
        self._fill_gpu_instance_profile(out, found)
        out.name = f"MIG {found.name}".encode()
        return pynvml.NVML_SUCCESS

    def _profile_by_id(self, gpu: SimGpu, profile_id: Any) -> GpuInstanceProfile:
        profile = gpu.profile(value(profile_id))
        if profile is None:
            raise NvmlFailure(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return profile

    def _mig_enabled(self, device: Any) -> tuple[int, SimGpu]:
        index, gpu = self._physical(device)
        if not gpu.mig.current:
            raise NvmlFailure(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return index, gpu

    @c_function(Target.HANDLE)
    def nvmlDeviceGetGpuInstancePossiblePlacements_v2(self, device: Any, profileId: Any, placements: Any,
                                                      count: Any) -> int:
        """Every valid placement of the profile, free or not, whatever the MIG mode (nvml.h). With
        NULL placements only the count comes back."""
        _, gpu = self._physical(device)
        profile = self._profile_by_id(gpu, profileId)
        return self._write_placements(placements, count, profile.placement_starts, profile.placement_size)

    @staticmethod
    def _write_placements(placements: Any, count: Any, starts: tuple[int, ...] | list[int], size: int) -> int:
        counter = target(count)
        if placements is None:
            counter.value = len(starts)
            return pynvml.NVML_SUCCESS
        capacity = array_capacity(placements)
        if capacity is not None and capacity < len(starts):
            counter.value = len(starts)
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        array = target(placements)
        for i, start in enumerate(starts):
            array[i].start, array[i].size = start, size
        counter.value = len(starts)
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetGpuInstanceRemainingCapacity(self, device: Any, profileId: Any, count: Any) -> int:
        _, gpu = self._mig_enabled(device)
        profile = self._profile_by_id(gpu, profileId)
        target(count).value = driver.remaining_capacity(gpu.model, gpu.instances, profile)
        return pynvml.NVML_SUCCESS

    def _create_gpu_instance(self, device: Any, profile_id: Any, start: int | None, out: Any) -> int:
        index, gpu = self._mig_enabled(device)
        profile = self._profile_by_id(gpu, profile_id)
        if start is None:
            start = driver.auto_placement(gpu.model, gpu.instances, profile)
        elif start not in profile.placement_starts:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        elif (start not in driver.free_starts(gpu.model, gpu.instances, profile)
              or driver.remaining_capacity(gpu.model, gpu.instances, profile) == 0):
            start = None
        if start is None:
            return pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES
        gpu_instance = SimGpuInstance(driver.gpu_instance_id(gpu.model, profile, start), profile.id, start)
        self._commit_gpu(index, gpu.with_instances((*gpu.instances, gpu_instance)))
        write_handle(out, Handle(Kind.GPU_INSTANCE, index, gpu_instance.id))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceCreateGpuInstance(self, device: Any, profileId: Any, gpuInstance: Any) -> int:
        """Placed where the driver would place it (``driver.auto_placement``); no compute instance."""
        return self._create_gpu_instance(device, profileId, None, gpuInstance)

    @c_function(Target.HANDLE)
    def nvmlDeviceCreateGpuInstanceWithPlacement(self, device: Any, profileId: Any, placement: Any,
                                                 gpuInstance: Any) -> int:
        """INVALID_ARGUMENT for a start or size the profile cannot have, INSUFFICIENT_RESOURCES when
        the slices are taken."""
        index, gpu = self._mig_enabled(device)
        profile = self._profile_by_id(gpu, profileId)
        wanted = target(placement)
        if wanted is None or wanted.size != profile.placement_size:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        return self._create_gpu_instance(device, profileId, wanted.start, gpuInstance)

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceDestroy(self, gpuInstance: Any) -> int:
        """IN_USE while it has compute instances: destroy those first."""
        handle, gpu, gi, _ = self._gpu_instance(gpuInstance)
        if gi.compute_instances:
            return pynvml.NVML_ERROR_IN_USE
        self._commit_gpu(handle.gpu, gpu.with_instances(tuple(g for g in gpu.instances if g.id != gi.id)))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetGpuInstances(self, device: Any, profileId: Any, gpuInstances: Any, count: Any) -> int:
        """The GPU instances of one profile, by ID. The array must hold the profile's instance count
        (nvml.h); a shorter ctypes array gets INSUFFICIENT_SIZE."""
        index, gpu = self._mig_enabled(device)
        profile = self._profile_by_id(gpu, profileId)
        if gpuInstances is None:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        found = [gi for gi in gpu.instances if gi.profile_id == profile.id]
        capacity = array_capacity(gpuInstances)
        if capacity is not None and capacity < len(found):
            target(count).value = len(found)
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        array = target(gpuInstances)
        for i, gi in enumerate(found):
            write_handle_at(array, i, Handle(Kind.GPU_INSTANCE, index, gi.id))
        target(count).value = len(found)
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetGpuInstanceById(self, device: Any, id: Any, gpuInstance: Any) -> int:
        index, gpu = self._mig_enabled(device)
        if gpu.gpu_instance(value(id)) is None:
            return pynvml.NVML_ERROR_NOT_FOUND
        write_handle(gpuInstance, Handle(Kind.GPU_INSTANCE, index, value(id)))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceGetInfo(self, gpuInstance: Any, info: Any) -> int:
        handle, _, gi, profile = self._gpu_instance(gpuInstance)
        out = target(info)
        out.device = as_pointer(Handle(Kind.DEVICE, handle.gpu), pynvml.c_nvmlDevice_t)
        out.id, out.profileId = gi.id, gi.profile_id
        out.placement.start, out.placement.size = gi.start, profile.placement_size
        return pynvml.NVML_SUCCESS

    # ---- compute instances ----------------------------------------------------------------------

    @staticmethod
    def _compute_slices(gpu_instance_profile: GpuInstanceProfile, enum: int) -> int:
        """Slices of compute-instance profile ``enum``: INVALID_ARGUMENT past the last enum,
        NOT_SUPPORTED for a size this GPU instance cannot split into (mig-facts.md)."""
        if not 0 <= enum < pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT:
            raise NvmlFailure(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        slices = SLICES_BY_COMPUTE_PROFILE.get(enum)
        if slices is None or slices not in valid_compute_slices(gpu_instance_profile.slice_count):
            raise NvmlFailure(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return slices

    def _fill_compute_profile(self, out: Any, gpu: SimGpu, profile: GpuInstanceProfile, enum: int) -> str:
        slices = self._compute_slices(profile, enum)
        one_slice = gpu.model.profile_by_enum(0)
        out.id = enum
        out.sliceCount = slices
        out.instanceCount = len(driver.compute_starts(profile.slice_count, slices))
        out.multiprocessorCount = driver.compute_multiprocessors(
            profile, one_slice.multiprocessors if one_slice else profile.multiprocessors, slices)
        out.sharedCopyEngineCount = profile.copy_engines
        out.sharedDecoderCount = profile.decoders
        out.sharedEncoderCount = profile.encoders
        out.sharedJpegCount = profile.jpeg
        out.sharedOfaCount = profile.ofa
        return profile.name if slices == profile.slice_count else f"{slices}c.{profile.name}"

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceGetComputeInstanceProfileInfo(self, gpuInstance: Any, profile: Any, engProfile: Any,
                                                     info: Any) -> int:
        _, gpu, _, gi_profile = self._gpu_instance(gpuInstance)
        if value(engProfile) != pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        self._fill_compute_profile(target(info), gpu, gi_profile, value(profile))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceGetComputeInstanceProfileInfoV(self, gpuInstance: Any, profile: Any, engProfile: Any,
                                                      info: Any) -> int:
        _, gpu, _, gi_profile = self._gpu_instance(gpuInstance)
        out = target(info)
        if out.version != pynvml.nvmlComputeInstanceProfileInfo_v2:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        if value(engProfile) != pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        out.name = f"MIG {self._fill_compute_profile(out, gpu, gi_profile, value(profile))}".encode()
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceGetComputeInstanceRemainingCapacity(self, gpuInstance: Any, profileId: Any,
                                                           count: Any) -> int:
        _, _, gi, profile = self._gpu_instance(gpuInstance)
        slices = self._compute_slices(profile, value(profileId))
        target(count).value = len(driver.free_compute_starts(profile.slice_count, gi.compute_instances, slices))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceGetComputeInstancePossiblePlacements(self, gpuInstance: Any, profileId: Any,
                                                            placements: Any, count: Any) -> int:
        _, _, _, profile = self._gpu_instance(gpuInstance)
        slices = self._compute_slices(profile, value(profileId))
        return self._write_placements(placements, count, driver.compute_starts(profile.slice_count, slices),
                                      slices)

    def _create_compute_instance(self, gpuInstance: Any, profile_id: Any, start: int | None, out: Any) -> int:
        handle, gpu, gi, profile = self._gpu_instance(gpuInstance)
        slices = self._compute_slices(profile, value(profile_id))
        free = driver.free_compute_starts(profile.slice_count, gi.compute_instances, slices)
        if start is not None and start not in driver.compute_starts(profile.slice_count, slices):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        chosen = (free[0] if free else None) if start is None else (start if start in free else None)
        if chosen is None:
            return pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES
        compute_instance = SimComputeInstance(chosen, slices)
        new_gi = replace(gi, compute_instances=tuple(sorted((*gi.compute_instances, compute_instance),
                                                            key=lambda c: c.id)))
        self._commit_gpu(handle.gpu, gpu.with_instances(tuple(new_gi if g.id == gi.id else g for g in gpu.instances)))
        write_handle(out, Handle(Kind.COMPUTE_INSTANCE, handle.gpu, gi.id, compute_instance.id))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceCreateComputeInstance(self, gpuInstance: Any, profileId: Any, computeInstance: Any) -> int:
        """At the lowest free start; its ID is the start, so a full-size one is ID 0."""
        return self._create_compute_instance(gpuInstance, profileId, None, computeInstance)

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceCreateComputeInstanceWithPlacement(self, gpuInstance: Any, profileId: Any, placement: Any,
                                                          computeInstance: Any) -> int:
        wanted = target(placement)
        if wanted is None:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        _, _, _, profile = self._gpu_instance(gpuInstance)
        if wanted.size != self._compute_slices(profile, value(profileId)):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        return self._create_compute_instance(gpuInstance, profileId, wanted.start, computeInstance)

    def _compute_instance(self, arg: Any) -> tuple[Handle, SimGpu, SimGpuInstance, SimComputeInstance]:
        handle = self._resolve(arg, Kind.COMPUTE_INSTANCE)
        gpu, gi, ci, _ = self._mig_parts(handle)
        return handle, gpu, gi, ci

    @c_function(Target.HANDLE)
    def nvmlComputeInstanceDestroy(self, computeInstance: Any) -> int:
        """IN_USE while processes run in it."""
        handle, gpu, gi, ci = self._compute_instance(computeInstance)
        if ci.processes:
            return pynvml.NVML_ERROR_IN_USE
        new_gi = replace(gi, compute_instances=tuple(c for c in gi.compute_instances if c.id != ci.id))
        self._commit_gpu(handle.gpu, gpu.with_instances(tuple(new_gi if g.id == gi.id else g for g in gpu.instances)))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceGetComputeInstances(self, gpuInstance: Any, profileId: Any, computeInstances: Any,
                                           count: Any) -> int:
        handle, _, gi, profile = self._gpu_instance(gpuInstance)
        slices = self._compute_slices(profile, value(profileId))
        if computeInstances is None:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        found = [ci for ci in gi.compute_instances if ci.slices == slices]
        capacity = array_capacity(computeInstances)
        if capacity is not None and capacity < len(found):
            target(count).value = len(found)
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        array = target(computeInstances)
        for i, ci in enumerate(found):
            write_handle_at(array, i, Handle(Kind.COMPUTE_INSTANCE, handle.gpu, gi.id, ci.id))
        target(count).value = len(found)
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceGetComputeInstanceById(self, gpuInstance: Any, id: Any, computeInstance: Any) -> int:
        handle, _, gi, _ = self._gpu_instance(gpuInstance)
        if gi.compute_instance(value(id)) is None:
            return pynvml.NVML_ERROR_NOT_FOUND
        write_handle(computeInstance, Handle(Kind.COMPUTE_INSTANCE, handle.gpu, gi.id, value(id)))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlComputeInstanceGetInfo_v2(self, computeInstance: Any, info: Any) -> int:
        handle, _, gi, ci = self._compute_instance(computeInstance)
        out = target(info)
        out.device = as_pointer(Handle(Kind.DEVICE, handle.gpu), pynvml.c_nvmlDevice_t)
        out.gpuInstance = as_pointer(Handle(Kind.GPU_INSTANCE, handle.gpu, gi.id), pynvml.c_nvmlGpuInstance_t)
        out.id, out.profileId = ci.id, COMPUTE_PROFILE_ENUM_BY_SLICES[ci.slices]
        out.placement.start, out.placement.size = ci.start, ci.slices
        return pynvml.NVML_SUCCESS

    # ---- MIG devices ----------------------------------------------------------------------------

    @staticmethod
    def mig_slot(gpu_instance: SimGpuInstance, compute_instance: SimComputeInstance) -> int:
        """A MIG device's index under its parent: its first compute slice on the GPU. Compute
        slices of different instances never overlap, so slots are unique, and they are not
        contiguous (two 3g.40gb: slots 0 and 4)."""
        return gpu_instance.start + compute_instance.start

    @c_function(Target.HANDLE)
    def nvmlDeviceGetMaxMigDeviceCount(self, device: Any, count: Any) -> int:
        """0 with MIG off; the compute slices (7, or 4 on A30) with MIG on."""
        handle = self._resolve(device, Kind.DEVICE, Kind.MIG_DEVICE)
        if handle.kind is Kind.MIG_DEVICE:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        gpu = self.gpu_of(handle)
        target(count).value = gpu.model.compute_slices if gpu.mig.current else 0
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: Any, index: Any, migDevice: Any) -> int:
        """NOT_FOUND for an empty slot (see ``mig_slot``)."""
        gpu_index, gpu = self._mig_enabled(device)
        slot = value(index)
        if not 0 <= slot < gpu.model.compute_slices:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        for gi in gpu.instances:
            for ci in gi.compute_instances:
                if self.mig_slot(gi, ci) == slot:
                    write_handle(migDevice, Handle(Kind.MIG_DEVICE, gpu_index, gi.id, ci.id))
                    return pynvml.NVML_SUCCESS
        return pynvml.NVML_ERROR_NOT_FOUND

    @c_function(Target.HANDLE)
    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: Any, device: Any) -> int:
        handle = self._resolve(migDevice, Kind.MIG_DEVICE)
        write_handle(device, Handle(Kind.DEVICE, handle.gpu))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceIsMigDeviceHandle(self, device: Any, isMigDevice: Any) -> int:
        handle, _ = self._device_or_mig(device)
        target(isMigDevice).value = int(handle.kind is Kind.MIG_DEVICE)
        return pynvml.NVML_SUCCESS

    def _mig_handle(self, device: Any) -> Handle:
        handle, _ = self._device_or_mig(device)
        if handle.kind is not Kind.MIG_DEVICE:
            raise NvmlFailure(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return handle

    @c_function(Target.HANDLE)
    def nvmlDeviceGetGpuInstanceId(self, device: Any, id: Any) -> int:
        target(id).value = self._mig_handle(device).gpu_instance
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetComputeInstanceId(self, device: Any, id: Any) -> int:
        target(id).value = self._mig_handle(device).compute_instance
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetAttributes_v2(self, device: Any, attributes: Any) -> int:
        """MIG device handles only, as nvml.h says ("currently only supports MIG device handles")."""
        gpu, gi, ci, profile = self._mig_parts(self._mig_handle(device))
        one_slice = gpu.model.profile_by_enum(0)
        out = target(attributes)
        out.multiprocessorCount = driver.compute_multiprocessors(
            profile, one_slice.multiprocessors if one_slice else profile.multiprocessors, ci.slices)
        out.sharedCopyEngineCount = profile.copy_engines
        out.sharedDecoderCount = profile.decoders
        out.sharedEncoderCount = profile.encoders
        out.sharedJpegCount = profile.jpeg
        out.sharedOfaCount = profile.ofa
        out.gpuInstanceSliceCount = profile.slice_count
        out.computeInstanceSliceCount = ci.slices
        out.memorySizeMB = profile.memory_mib
        return pynvml.NVML_SUCCESS
