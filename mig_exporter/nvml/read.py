"""NVML → Snapshot in one pass, each failure confined to the value, the GPU or (when NVML itself
is gone) the collection it concerns.

How an NVML error is treated (docs/metrics.md says the same to operators):

- NOT_SUPPORTED, and FUNCTION_NOT_FOUND or ``NVMLLibraryMismatchError`` (a driver older than the
  call): this GPU does not give that value. The value is absent and no error is counted, because
  nothing is wrong and a counter that grows forever on healthy MIG GPUs (utilization is never
  supported there) would only teach people to ignore it.
- GPU_IS_LOST: the GPU is reported as lost with its last known UUID; the other GPUs are still read.
  From a call about no GPU (the GPU count, the driver or NVML version) it is treated as NVML gone.
- UNINITIALIZED, DRIVER_NOT_LOADED, LIB_RM_VERSION_MISMATCH, LIBRARY_NOT_FOUND: NVML itself is gone.
  The collection stops with ``nvml_up`` False and the session initialises NVML again next time.
- Anything else: a ``CollectionError`` naming the call, and the value is absent.

Each NVML call is made at most once per collection (per device and arguments): process names are
looked up once per pid, MIG capability (profiles, placements) comes from the session's cache
(``nvml.capability``), the remaining capacity
per profile is asked again only when a GPU's instances changed, and a MIG device's GPU instance
profile comes from the GPU-instance list already read. Processes of a MIG-enabled GPU are
read per MIG device, never on the parent (which would list them a second time, in aggregate).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pynvml

from mig_exporter.capability import GpuInstanceProfile
from mig_exporter.model import CollectionError, Gpu, GpuInstance, GpuProcess, MigInstance, Snapshot
from mig_exporter.nvml.capability import gpu_capability, with_compute_profiles
from mig_exporter.nvml.process_util import with_utilization
from mig_exporter.nvml.session import NVML_GONE_CODES, NvmlSession, NvmlUnavailable

NOT_AN_INSTANCE = 0xFFFFFFFF  # a process's gpuInstanceId / computeInstanceId when MIG is off
_ABSENT_CODES = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})
_NOT_FOUND = frozenset({pynvml.NVML_ERROR_NOT_FOUND})
_INVALID_ARGUMENT = frozenset({pynvml.NVML_ERROR_INVALID_ARGUMENT})


class _GpuLost(Exception):
    """GPU_IS_LOST: stop reading this GPU."""


class _NvmlGone(Exception):
    """NVML itself failed: stop the collection."""


class _Collection:
    """One collection's bookkeeping: NVML calls made, errors met, process names looked up."""

    def __init__(self) -> None:
        self.calls = 0
        self.errors: list[CollectionError] = []
        self._process_names: dict[int, str | None] = {}

    def failed_since(self, errors_before: int) -> bool:
        """Whether a call failed (not just answered "absent") since there were ``errors_before``."""
        return len(self.errors) > errors_before

    def call(
        self, function: Callable[..., Any], *args: Any, gpu: int | None = None,
        expected: frozenset[int] = frozenset(),
    ) -> Any:
        """``function(*args)``, or None when the value is absent. ``expected`` lists error codes
        that are an answer rather than a failure here (NOT_FOUND for an empty MIG slot)."""
        self.calls += 1
        try:
            return function(*args)
        except pynvml.NVMLLibraryMismatchError:
            return None
        except pynvml.NVMLError as error:
            code = error.value
            if code in _ABSENT_CODES or code in expected:
                return None
            self.errors.append(CollectionError(function.__name__, str(error), gpu))
            if code == pynvml.NVML_ERROR_GPU_IS_LOST:
                raise _GpuLost from None
            if code in NVML_GONE_CODES:
                raise _NvmlGone from None
            return None

    def process_name(self, pid: int) -> str | None:
        if pid not in self._process_names:
            # NOT_FOUND: the process ended between the two calls, or lives in another PID namespace.
            self._process_names[pid] = self.call(pynvml.nvmlSystemGetProcessName, pid, expected=_NOT_FOUND)
        return self._process_names[pid]


def read_snapshot(session: NvmlSession) -> Snapshot:
    """Read everything NVML gives into one Snapshot. Never raises for an NVML failure."""
    started = time.monotonic()
    collection = _Collection()

    def snapshot(**values: Any) -> Snapshot:
        return Snapshot(
            taken_at=time.time(), duration_seconds=time.monotonic() - started,
            errors=tuple(collection.errors), nvml_calls=collection.calls, **values,
        )

    try:
        session.reopen_if_failed()
    except NvmlUnavailable as unavailable:
        collection.errors.append(CollectionError("nvmlInit", unavailable.nvml_error))
        return snapshot(nvml_up=False)
    try:
        driver_version = collection.call(pynvml.nvmlSystemGetDriverVersion)
        cuda_version = collection.call(pynvml.nvmlSystemGetCudaDriverVersion)
        nvml_version = collection.call(pynvml.nvmlSystemGetNVMLVersion)
        count = collection.call(pynvml.nvmlDeviceGetCount) or 0
        gpus = tuple(_read_gpu(collection, session, index) for index in range(count))
    except (_NvmlGone, _GpuLost):
        # GPU_IS_LOST from a system-level call (the count, the versions) names no GPU to set
        # aside: NVML as a whole is unusable, and the next collection initialises it again.
        session.mark_failed()
        return snapshot(nvml_up=False)
    return snapshot(
        nvml_up=True, driver_version=driver_version, cuda_driver_version=_cuda_version(cuda_version),
        nvml_version=nvml_version, gpus=gpus,
    )


def _cuda_version(encoded: int | None) -> str | None:
    """NVML encodes CUDA 12.9 as 12090."""
    return None if encoded is None else f"{encoded // 1000}.{encoded % 1000 // 10}"


def _read_gpu(collection: _Collection, session: NvmlSession, index: int) -> Gpu:
    try:
        return _read_present_gpu(collection, session, index)
    except _GpuLost:
        return Gpu(index=index, uuid=session.known_uuids.get(index, ""), lost=True,
                   gpu_instances_complete=False, processes_complete=False)


def _read_present_gpu(collection: _Collection, session: NvmlSession, index: int) -> Gpu:
    def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return collection.call(function, *args, gpu=index, **kwargs)

    handle = call(pynvml.nvmlDeviceGetHandleByIndex, index)
    if handle is None:
        return Gpu(index=index, uuid=session.known_uuids.get(index, ""),
                   gpu_instances_complete=False, processes_complete=False)
    uuid = call(pynvml.nvmlDeviceGetUUID, handle) or session.known_uuids.get(index, "")
    if uuid:
        session.known_uuids[index] = uuid
    name = call(pynvml.nvmlDeviceGetName, handle)
    pci = call(pynvml.nvmlDeviceGetPciInfo, handle)
    serial = call(pynvml.nvmlDeviceGetSerial, handle)
    memory = call(pynvml.nvmlDeviceGetMemoryInfo, handle, pynvml.nvmlMemory_v2)
    persistence = call(pynvml.nvmlDeviceGetPersistenceMode, handle)
    mig_mode = call(pynvml.nvmlDeviceGetMigMode, handle)
    utilization = call(pynvml.nvmlDeviceGetUtilizationRates, handle)
    temperature = call(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU)
    power_mw = call(pynvml.nvmlDeviceGetPowerUsage, handle)
    power_limit_mw = call(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    clock_sm_mhz = call(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM)
    clock_memory_mhz = call(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_MEM)
    health = session.health.read(call, handle, uuid)  # ECC with the slow counters

    mig_current = None if mig_mode is None else mig_mode[0] == pynvml.NVML_DEVICE_MIG_ENABLE
    mig_pending = None if mig_mode is None else mig_mode[1] == pynvml.NVML_DEVICE_MIG_ENABLE
    gpu_instances: tuple[GpuInstance, ...] = ()
    gpu_instances_complete = True
    mig_instances: tuple[MigInstance, ...] = ()
    mig_profile_capacity = None
    errors_before = len(collection.errors)
    capability = None if mig_current is None else gpu_capability(
        collection, session.mig_capabilities, index, handle, uuid, mig_current)
    if mig_current and capability is not None:
        profiles_complete = not collection.failed_since(errors_before)
        profiles = {profile.id: profile for profile in capability.profiles}
        gpu_instances, listed_complete = _read_gpu_instances(collection, handle, index, profiles)
        gpu_instances_complete = profiles_complete and listed_complete
        capability = with_compute_profiles(collection, session.mig_capabilities, index, handle, uuid,
                                           capability, gpu_instances)
        mig_profile_capacity = _read_mig_profile_capacity(
            collection, session, handle, index, uuid, profiles,
            gpu_instances if gpu_instances_complete else None)
        mig_instances, processes, processes_complete = _read_mig_devices(
            collection, handle, index, uuid, gpu_instances)
        gpu_instances = _with_compute_instances(gpu_instances, mig_instances)
    else:
        listed = _read_processes(collection, handle, index, uuid, mig=None)
        processes, processes_complete = listed or (), listed is not None
        processes = with_utilization(call, handle, processes)
    gpm, mig_instances = session.gpm_samples.read(call, handle, uuid, gpu_instances, mig_instances)

    return Gpu(
        index=index, uuid=uuid, name=name,
        pci_bus_id=None if pci is None else _text(pci.busId),
        pci_device_id=None if pci is None else pci.pciDeviceId >> 16,
        serial=serial,
        memory_total_bytes=None if memory is None else memory.total,
        memory_used_bytes=None if memory is None else memory.used,
        memory_reserved_bytes=None if memory is None else memory.reserved,
        persistence_mode=None if persistence is None else persistence == pynvml.NVML_FEATURE_ENABLED,
        mig_mode_current=mig_current, mig_mode_pending=mig_pending, mig_capability=capability,
        utilization_gpu_ratio=None if utilization is None else utilization.gpu / 100,
        utilization_memory_ratio=None if utilization is None else utilization.memory / 100,
        temperature_celsius=temperature,
        power_watts=None if power_mw is None else power_mw / 1000,
        power_limit_watts=None if power_limit_mw is None else power_limit_mw / 1000,
        clock_sm_hz=None if clock_sm_mhz is None else clock_sm_mhz * 1e6,
        clock_memory_hz=None if clock_memory_mhz is None else clock_memory_mhz * 1e6,
        ecc_errors_corrected_total=health.ecc_errors_corrected_total,
        ecc_errors_uncorrected_total=health.ecc_errors_uncorrected_total,
        gpu_instances=gpu_instances, gpu_instances_complete=gpu_instances_complete,
        mig_profile_capacity=mig_profile_capacity, mig_instances=mig_instances, processes=processes,
        processes_complete=processes_complete, gpm=gpm, health=health,
    )


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _read_processes(
    collection: _Collection, handle: Any, gpu_index: int, gpu_uuid: str, mig: tuple[int, int] | None,
) -> tuple[GpuProcess, ...] | None:
    """Compute processes on ``handle``: the whole GPU when MIG is off, else one MIG device whose
    (GPU instance ID, compute instance ID) is ``mig``. None when NVML did not list them (an error,
    or a driver without the call): not "no processes".

    A pid NVML lists twice on one device is kept once (the first entry): two identical label sets
    in one exposition would make Prometheus reject the second sample of the scrape.
    """
    infos = collection.call(pynvml.nvmlDeviceGetComputeRunningProcesses, handle, gpu=gpu_index)
    if infos is None:
        return None
    processes = []
    seen: set[tuple[int, int, int]] = set()
    for info in infos:
        gpu_instance_id, compute_instance_id = mig or (info.gpuInstanceId, info.computeInstanceId)
        if (info.pid, gpu_instance_id, compute_instance_id) in seen:
            continue
        seen.add((info.pid, gpu_instance_id, compute_instance_id))
        processes.append(GpuProcess(
            pid=info.pid, name=collection.process_name(info.pid), gpu_index=gpu_index, gpu_uuid=gpu_uuid,
            used_memory_bytes=info.usedGpuMemory,  # pynvml turns "not available" into None
            gpu_instance_id=None if gpu_instance_id == NOT_AN_INSTANCE else gpu_instance_id,
            compute_instance_id=None if compute_instance_id == NOT_AN_INSTANCE else compute_instance_id,
        ))
    return tuple(processes)


def _read_gpu_instances(
    collection: _Collection, handle: Any, index: int, profiles: dict[int, GpuInstanceProfile],
) -> tuple[tuple[GpuInstance, ...], bool]:
    """Every GPU instance with its placement, including those without compute instances (which
    have no MIG device, but which remediate must see); and whether the list is complete: an error
    or a NOT_SUPPORTED on a profile the GPU has means some may be missing."""
    errors_before = len(collection.errors)
    complete = True
    instances = []
    for profile_id, profile in profiles.items():
        found = (pynvml.c_nvmlGpuInstance_t * profile.max_count)()
        count = ctypes.c_uint(0)
        if collection.call(pynvml.nvmlDeviceGetGpuInstances, handle, profile_id, found,
                           ctypes.byref(count), gpu=index) is None:
            complete = False
            continue
        for gpu_instance in found[:count.value]:
            info = collection.call(pynvml.nvmlGpuInstanceGetInfo, gpu_instance, gpu=index)
            if info is None:
                complete = False
            else:
                instances.append(GpuInstance(
                    gpu_index=index, gpu_instance_id=info.id, profile_id=profile_id, profile=profile.name,
                    placement_start=info.placement.start, placement_size=info.placement.size,
                ))
    ordered = tuple(sorted(instances, key=lambda instance: instance.gpu_instance_id))
    return ordered, complete and not collection.failed_since(errors_before)


def _read_mig_profile_capacity(
    collection: _Collection, session: NvmlSession, handle: Any, index: int, uuid: str,
    profiles: dict[int, GpuInstanceProfile], gpu_instances: tuple[GpuInstance, ...] | None,
) -> tuple[tuple[str, int], ...]:
    """How many more GPU instances of each profile NVML says can be created now.

    What fits depends only on the GPU instances there are, so the answer is kept per GPU with the
    layout it was read for and asked again only when the layout changed; ``gpu_instances`` None (a
    list NVML would not give in full) is a layout that cannot be compared, so NVML is asked.
    """
    layout = None if gpu_instances is None else tuple(
        (instance.profile_id, instance.placement_start) for instance in gpu_instances)
    cached = session.mig_profile_capacity.get(uuid)
    if layout is not None and cached is not None and cached[0] == layout:
        return cached[1]
    errors_before = len(collection.errors)
    capacity = []
    for profile_id, profile in profiles.items():
        count = collection.call(pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity, handle, profile_id,
                                gpu=index)
        if count is not None:
            capacity.append((profile.name, count))
    if uuid and layout is not None and not collection.failed_since(errors_before):
        session.mig_profile_capacity[uuid] = (layout, tuple(capacity))
    return tuple(capacity)


def _read_mig_devices(
    collection: _Collection, handle: Any, index: int, uuid: str, gpu_instances: tuple[GpuInstance, ...],
) -> tuple[tuple[MigInstance, ...], tuple[GpuProcess, ...], bool]:
    """MIG devices (compute instances) by scanning every slot: empty slots answer NOT_FOUND and
    need not be contiguous, so the scan goes on past them. Then the processes read, and whether
    they are all of them: not when some MIG device could not be found, placed or listed."""
    def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return collection.call(function, *args, gpu=index, **kwargs)

    profile_of = {instance.gpu_instance_id: instance.profile for instance in gpu_instances}
    mig_instances = []
    processes: list[GpuProcess] = []
    complete = True
    slots = call(pynvml.nvmlDeviceGetMaxMigDeviceCount, handle)
    if slots is None:
        return (), (), False
    for slot in range(slots):
        errors_before = len(collection.errors)
        mig = call(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot, expected=_NOT_FOUND)
        if mig is None:
            complete = complete and not collection.failed_since(errors_before)  # NOT_FOUND: an empty slot
            continue
        gpu_instance_id = call(pynvml.nvmlDeviceGetGpuInstanceId, mig)
        compute_instance_id = call(pynvml.nvmlDeviceGetComputeInstanceId, mig)
        if gpu_instance_id is None or compute_instance_id is None:
            complete = False
            continue  # a MIG device that cannot be placed in its GPU instance is not worth a guess
        mig_uuid = call(pynvml.nvmlDeviceGetUUID, mig) or ""
        memory = call(pynvml.nvmlDeviceGetMemoryInfo, mig, pynvml.nvmlMemory_v2)
        attributes = call(pynvml.nvmlDeviceGetAttributes, mig)
        mig_instances.append(MigInstance(
            gpu_index=index, gpu_uuid=uuid, mig_index=slot, mig_uuid=mig_uuid,
            gpu_instance_id=gpu_instance_id, compute_instance_id=compute_instance_id,
            profile=_mig_profile(profile_of.get(gpu_instance_id, ""), attributes),
            memory_total_bytes=None if memory is None else memory.total,
            memory_used_bytes=None if memory is None else memory.used,
            multiprocessors=None if attributes is None else attributes.multiprocessorCount,
        ))
        instance_ids = (gpu_instance_id, compute_instance_id)
        instance_processes = _read_processes(collection, mig, index, uuid, instance_ids)
        if instance_processes is None:
            complete = False
        else:
            processes.extend(instance_processes)
    return tuple(mig_instances), tuple(processes), complete


def _mig_profile(gpu_instance_profile: str, attributes: Any) -> str:
    """``3g.40gb``, or ``1c.3g.40gb`` for a compute instance smaller than its GPU instance (the
    name nvidia-smi gives it)."""
    if attributes is not None and attributes.computeInstanceSliceCount < attributes.gpuInstanceSliceCount:
        return f"{attributes.computeInstanceSliceCount}c.{gpu_instance_profile}"
    return gpu_instance_profile


def _with_compute_instances(
    gpu_instances: tuple[GpuInstance, ...], mig_instances: tuple[MigInstance, ...],
) -> tuple[GpuInstance, ...]:
    """Each GPU instance's compute instances, from the MIG devices already read (no extra call)."""
    return tuple(
        replace(gpu_instance, compute_instance_ids=tuple(sorted(
            mig.compute_instance_id for mig in mig_instances
            if mig.gpu_instance_id == gpu_instance.gpu_instance_id
        )))
        for gpu_instance in gpu_instances
    )
