"""A MIG-enabled GPU's layout (GPU instances, MIG devices, remaining capacity per profile), read
only when it can have changed, and what changes under it every collection (each MIG device's
memory and processes).

The layout changes only when someone creates or destroys an instance, and reading it costs some
fifty NVML calls per GPU (7 ms at 1 ms a call, per MIG device). So the session keeps it
(``MigLayout`` on ``KnownGpu``) and a collection checks it with one call per GPU: the remaining
capacity of the profile with the most instances (the smallest), which a GPU instance created or
destroyed anywhere on the GPU changes; and one per GPU instance with room for another compute
instance (its compute instances leave slices free, or it has none): the remaining capacity of
1-slice compute instances in it, which a compute instance created there by another tool changes
(it changes no GPU instance capacity). A GPU instance its compute instances fill, the usual
layout, costs no call: nothing can be created in it. It is read again in full when:

- none is kept: the first collection, or the session forgot the GPU (NVML initialised again, the
  GPU lost or the GPU count changed, its MIG mode changed, remediate wrote to it);
- a check answers another count than the layout was read with;
- a kept MIG device handle is refused (its compute instance was destroyed);
- ``LAYOUT_REFRESH_COLLECTIONS`` collections have passed: what no check sees (a GPU instance
  without compute instances destroyed and another made elsewhere between two collections, a
  check NVML would not answer) goes unseen at most that long.

A process on a compute instance the layout does not know would be no signal: processes are listed
per known MIG device, and the parent GPU's list is for privileged callers only (mig-facts.md).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pynvml

from mig_exporter.capability import GpuInstanceProfile
from mig_exporter.model import GpuInstance, GpuProcess, MigInstance
from mig_exporter.nvml.calls import Collection, HandleGone
from mig_exporter.nvml.processes import read_processes

# At the default 5 s interval, five minutes: how long a change no check sees can go unseen. A full
# read costs ~56 calls per GPU.
LAYOUT_REFRESH_COLLECTIONS = 60
# The 1-slice compute-instance profile: its ID is its enum (mig-facts.md), and every GPU instance
# size has it, so its remaining capacity in a GPU instance is the count of free slices.
_ONE_SLICE = pynvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE
_NOT_FOUND = frozenset({pynvml.NVML_ERROR_NOT_FOUND})
# What NVML answers for a handle to a destroyed MIG device.
_GONE = frozenset({pynvml.NVML_ERROR_INVALID_ARGUMENT, pynvml.NVML_ERROR_NOT_FOUND})


@dataclass(frozen=True)
class MigDevice:
    """What does not change of a MIG device while the layout stands."""

    slot: int
    handle: Any
    gpu_instance_id: int
    compute_instance_id: int
    uuid: str
    profile: str
    multiprocessors: int | None
    compute_slices: int | None  # of its compute instance: 1 for 1c.3g.40gb


@dataclass(frozen=True)
class MigLayout:
    gpu_instances: tuple[GpuInstance, ...]  # with their compute instance IDs
    gpu_instances_complete: bool  # False: NVML would not list them all
    capacity: tuple[tuple[str, int], ...]  # (profile name, instances that can still be created)
    devices: tuple[MigDevice, ...]
    devices_complete: bool  # False: some MIG device could not be found or placed
    check: tuple[int, int] | None  # (profile ID, its remaining capacity) that tells a change
    # (GPU instance handle, 1-slice compute instances it can still take) of each with room for one
    compute_checks: tuple[tuple[Any, int], ...]
    kept: bool  # read without a failure: worth keeping for the next collections


@dataclass(frozen=True)
class MigValues:
    """One collection's view of a MIG GPU."""

    layout: MigLayout
    mig_instances: tuple[MigInstance, ...]
    processes: tuple[GpuProcess, ...]
    processes_complete: bool


def read_mig(
    collection: Collection, kept: MigLayout | None, collections_since: int, handle: Any, index: int,
    uuid: str, profiles: Mapping[int, GpuInstanceProfile],
) -> MigValues:
    """The GPU's MIG devices, their memory and processes; the layout from ``kept`` when it still
    stands (see the module docstring), else from NVML."""
    if kept is not None and collections_since < LAYOUT_REFRESH_COLLECTIONS and _unchanged(
            collection, kept, handle, index):
        try:
            return _values(collection, kept, index, uuid)
        except HandleGone:
            pass  # a MIG device destroyed under the kept layout: read it again
    layout = read_layout(collection, handle, index, profiles)
    try:
        return _values(collection, layout, index, uuid)
    except HandleGone:  # destroyed between the layout and its values: a layout not to keep
        return MigValues(replace(layout, kept=False), (), (), False)


def read_layout(
    collection: Collection, handle: Any, index: int, profiles: Mapping[int, GpuInstanceProfile],
) -> MigLayout:
    errors_before = len(collection.errors)
    gpu_instances, handles, listed_complete = _read_gpu_instances(collection, handle, index, profiles)
    capacity = {
        profile_id: collection.call(pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity, handle, profile_id,
                                    gpu=index)
        for profile_id in profiles
    }
    devices, devices_complete = _read_mig_devices(collection, handle, index, gpu_instances)
    compute_checks = _compute_checks(collection, index, gpu_instances, handles, devices, profiles)
    smallest = max(profiles.values(), key=lambda p: (p.max_count, -p.slice_count), default=None)
    left = None if smallest is None else capacity[smallest.id]
    check = None if smallest is None or left is None else (smallest.id, left)
    return MigLayout(
        gpu_instances=_with_compute_instances(gpu_instances, devices),
        gpu_instances_complete=listed_complete,
        capacity=tuple((profiles[i].name, count) for i, count in capacity.items() if count is not None),
        devices=devices, devices_complete=devices_complete, check=check, compute_checks=compute_checks,
        kept=check is not None and not collection.failed_since(errors_before),
    )


def _unchanged(collection: Collection, layout: MigLayout, handle: Any, index: int) -> bool:
    if layout.check is None:
        return False
    profile_id, count = layout.check
    if collection.call(pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity, handle, profile_id,
                       gpu=index) != count:
        return False
    # A GPU instance destroyed since is caught above (its capacity is back); its handle refused
    # here would only mean the same: read again.
    return all(collection.call(pynvml.nvmlGpuInstanceGetComputeInstanceRemainingCapacity, gpu_instance,
                               _ONE_SLICE, gpu=index, expected=_GONE) == free
               for gpu_instance, free in layout.compute_checks)


def _compute_checks(
    collection: Collection, index: int, gpu_instances: tuple[GpuInstance, ...], handles: Mapping[int, Any],
    devices: tuple[MigDevice, ...], profiles: Mapping[int, GpuInstanceProfile],
) -> tuple[tuple[Any, int], ...]:
    """For each GPU instance its compute instances may not fill, its handle and the 1-slice
    compute instances it can still take, when that is some (none: it is full after all)."""
    checks = []
    for gpu_instance in gpu_instances:
        used = [d.compute_slices for d in devices if d.gpu_instance_id == gpu_instance.gpu_instance_id]
        known = [slices for slices in used if slices is not None]
        full = len(known) == len(used) and sum(known) >= profiles[gpu_instance.profile_id].slice_count
        handle = handles.get(gpu_instance.gpu_instance_id)
        if full or handle is None:
            continue
        free = collection.call(pynvml.nvmlGpuInstanceGetComputeInstanceRemainingCapacity, handle,
                               _ONE_SLICE, gpu=index)
        if free:
            checks.append((handle, free))
    return tuple(checks)


def _values(collection: Collection, layout: MigLayout, index: int, uuid: str) -> MigValues:
    """Memory and processes of each MIG device (``HandleGone`` when one was destroyed)."""
    mig_instances = []
    processes: list[GpuProcess] = []
    complete = layout.devices_complete
    for device in layout.devices:
        memory = collection.call(pynvml.nvmlDeviceGetMemoryInfo, device.handle, pynvml.nvmlMemory_v2,
                                 gpu=index, gone=_GONE)
        mig_instances.append(MigInstance(
            gpu_index=index, gpu_uuid=uuid, mig_index=device.slot, mig_uuid=device.uuid,
            gpu_instance_id=device.gpu_instance_id, compute_instance_id=device.compute_instance_id,
            profile=device.profile,
            memory_total_bytes=None if memory is None else memory.total,
            memory_used_bytes=None if memory is None else memory.used,
            multiprocessors=device.multiprocessors, compute_slices=device.compute_slices,
        ))
        listed = read_processes(collection, device.handle, index, uuid,
                                (device.gpu_instance_id, device.compute_instance_id), gone=_GONE)
        if listed is None:
            complete = False
        else:
            processes.extend(listed)
    return MigValues(layout, tuple(mig_instances), tuple(processes), complete)


def _read_gpu_instances(
    collection: Collection, handle: Any, index: int, profiles: Mapping[int, GpuInstanceProfile],
) -> tuple[tuple[GpuInstance, ...], dict[int, Any], bool]:
    """Every GPU instance with its placement, including those without compute instances (which
    have no MIG device, but which remediate must see); their handles by ID; and whether the list
    is complete: an error or a NOT_SUPPORTED on a profile the GPU has means some may be missing."""
    errors_before = len(collection.errors)
    complete = True
    instances = []
    handles = {}
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
                handles[info.id] = gpu_instance
                instances.append(GpuInstance(
                    gpu_index=index, gpu_instance_id=info.id, profile_id=profile_id, profile=profile.name,
                    placement_start=info.placement.start, placement_size=info.placement.size,
                ))
    ordered = tuple(sorted(instances, key=lambda instance: instance.gpu_instance_id))
    return ordered, handles, complete and not collection.failed_since(errors_before)


def _read_mig_devices(
    collection: Collection, handle: Any, index: int, gpu_instances: tuple[GpuInstance, ...],
) -> tuple[tuple[MigDevice, ...], bool]:
    """MIG devices (compute instances) by scanning every slot: empty slots answer NOT_FOUND and
    need not be contiguous, so the scan goes on past them. Whether they are all of them: not when
    some could not be found or placed."""
    def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return collection.call(function, *args, gpu=index, **kwargs)

    profile_of = {instance.gpu_instance_id: instance.profile for instance in gpu_instances}
    devices = []
    complete = True
    slots = call(pynvml.nvmlDeviceGetMaxMigDeviceCount, handle)
    if slots is None:
        return (), False
    for slot in range(slots):
        errors_before, unsupported_before = len(collection.errors), collection.unsupported_answers
        mig = call(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot, expected=_NOT_FOUND)
        if mig is None:  # NOT_FOUND: an empty slot; NOT_SUPPORTED on a GPU with MIG on is no answer
            complete = (complete and not collection.failed_since(errors_before)
                        and collection.unsupported_answers == unsupported_before)
            continue
        gpu_instance_id = call(pynvml.nvmlDeviceGetGpuInstanceId, mig)
        compute_instance_id = call(pynvml.nvmlDeviceGetComputeInstanceId, mig)
        if gpu_instance_id is None or compute_instance_id is None:
            complete = False
            continue  # a MIG device that cannot be placed in its GPU instance is not worth a guess
        attributes = call(pynvml.nvmlDeviceGetAttributes, mig)
        devices.append(MigDevice(
            slot=slot, handle=mig, gpu_instance_id=gpu_instance_id, compute_instance_id=compute_instance_id,
            uuid=call(pynvml.nvmlDeviceGetUUID, mig) or "",
            profile=_mig_profile(profile_of.get(gpu_instance_id, ""), attributes),
            multiprocessors=None if attributes is None else attributes.multiprocessorCount,
            compute_slices=None if attributes is None else attributes.computeInstanceSliceCount,
        ))
    return tuple(devices), complete


def _mig_profile(gpu_instance_profile: str, attributes: Any) -> str:
    """``3g.40gb``, or ``1c.3g.40gb`` for a compute instance smaller than its GPU instance (the
    name nvidia-smi gives it); empty when the GPU instance's profile or the device's attributes
    (which say whether it is the whole GPU instance) were not read."""
    if not gpu_instance_profile or attributes is None:
        return ""
    if attributes.computeInstanceSliceCount < attributes.gpuInstanceSliceCount:
        return f"{attributes.computeInstanceSliceCount}c.{gpu_instance_profile}"
    return gpu_instance_profile


def _with_compute_instances(
    gpu_instances: tuple[GpuInstance, ...], devices: tuple[MigDevice, ...],
) -> tuple[GpuInstance, ...]:
    """Each GPU instance's compute instances, from the MIG devices already read (no extra call)."""
    return tuple(
        replace(gpu_instance, compute_instance_ids=tuple(sorted(
            device.compute_instance_id for device in devices
            if device.gpu_instance_id == gpu_instance.gpu_instance_id
        )))
        for gpu_instance in gpu_instances
    )
