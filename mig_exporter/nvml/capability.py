"""A GPU's MIG capability, read from NVML once per GPU and session: the GPU instance profiles
with their placements, the architecture, and the compute-instance profiles of each GPU instance
profile once an instance of it exists.

None of it changes while the driver is loaded, and on a real host each call costs 0.1-5 ms, so
the session keeps it and no collection asks again. It is asked again only after NVML was
initialised again, or when the GPU's MIG mode changed (a driver may list profiles only with MIG
on). A table read with an error is not kept, so the next collection tries again.

Compute-instance profiles need a GPU instance handle (``nvmlGpuInstanceGetComputeInstanceProfileInfo``).
The reader never creates an instance to ask (it would change the hardware, and take the slot from
a workload): the profiles of a GPU instance profile are read the first time one of its instances
is seen, and stay absent until then. The planner falls back to the MIG user guide's size rule
for them, and the write side asks NVML itself when it creates a compute instance.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import pynvml

from mig_exporter.capability import ComputeInstanceProfile, GpuInstanceProfile, MigCapability
from mig_exporter.model import CollectionError, GpuInstance


class Collection(Protocol):
    """The reader's collection: a call that confines NVML errors, and the errors it met."""

    errors: list[CollectionError]

    def call(self, function: Any, *args: Any, gpu: int | None = None,
             expected: frozenset[int] = frozenset()) -> Any: ...


# NVML_COMPUTE_INSTANCE_PROFILE_* by compute slices (nvml.h); the write side asks NVML for the
# profile of a size with these. The CI profile ID the driver answers equals the enum (mig-facts.md).
COMPUTE_PROFILE_ENUM_BY_SLICES = {
    1: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE,
    2: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE,
    3: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE,
    4: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE,
    6: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_6_SLICE,
    7: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE,
    8: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_8_SLICE,
}

_ARCHITECTURES = {
    pynvml.NVML_DEVICE_ARCH_AMPERE: "ampere",
    pynvml.NVML_DEVICE_ARCH_HOPPER: "hopper",
    pynvml.NVML_DEVICE_ARCH_BLACKWELL: "blackwell",
    pynvml.NVML_DEVICE_ARCH_RUBIN: "rubin",
}
# Past the last enum the driver knows (an older driver than pynvml): an answer, not a failure.
_INVALID_ARGUMENT = frozenset({pynvml.NVML_ERROR_INVALID_ARGUMENT})

# GPU UUID → (MIG mode it was read under, the capability); what ``read_capability`` keeps.
CapabilityCache = dict[str, tuple[bool, MigCapability]]


def gpu_capability(collection: Collection, cache: CapabilityCache, gpu: int, handle: Any, uuid: str,
                   mig_enabled: bool) -> MigCapability:
    """The GPU's capability from ``cache`` or NVML. One read with a failed call is not kept (its
    failures are in ``collection.errors``), so the next collection asks again."""
    cached = cache.get(uuid)
    if cached is not None and cached[0] == mig_enabled:
        return cached[1]
    errors_before = len(collection.errors)

    def asked(function: Any, *args: Any, expected: frozenset[int] = frozenset()) -> Any:
        return collection.call(function, *args, gpu=gpu, expected=expected)

    profiles = []
    for enum in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        # NOT_SUPPORTED: the GPU lacks this profile; INVALID_ARGUMENT: the driver predates the enum.
        info = asked(pynvml.nvmlDeviceGetGpuInstanceProfileInfo, handle, enum, expected=_INVALID_ARGUMENT)
        if info is None:
            continue
        placements = _placements(asked, handle, info.id)
        if placements is not None:
            profiles.append(_gpu_instance_profile(enum, info, placements))
    architecture = asked(pynvml.nvmlDeviceGetArchitecture, handle)
    capability = MigCapability(tuple(profiles), _ARCHITECTURES.get(architecture))
    if uuid and len(collection.errors) == errors_before:
        cache[uuid] = (mig_enabled, capability)
    return capability


def with_compute_profiles(collection: Collection, cache: CapabilityCache, gpu: int, handle: Any, uuid: str,
                          capability: MigCapability, gpu_instances: Sequence[GpuInstance]) -> MigCapability:
    """``capability`` with the compute-instance profiles of each GPU instance profile that has an
    instance now and was not asked yet; what was read without error joins the cache."""
    have = {gi.profile_id: gi.gpu_instance_id for gi in gpu_instances}
    profiles = list(capability.profiles)
    for position, profile in enumerate(profiles):
        if profile.compute_profiles is not None or profile.id not in have:
            continue
        errors_before = len(collection.errors)
        gpu_instance = collection.call(pynvml.nvmlDeviceGetGpuInstanceById, handle, have[profile.id], gpu=gpu)
        if gpu_instance is None:
            continue
        read = _compute_profiles(collection, gpu, gpu_instance)
        if len(collection.errors) == errors_before:
            profiles[position] = replace(profile, compute_profiles=read)
    updated = replace(capability, profiles=tuple(profiles))
    if uuid in cache and updated != capability:
        cache[uuid] = (cache[uuid][0], updated)
    return updated


def _placements(asked: Any, handle: Any, profile_id: int) -> tuple[tuple[int, ...], int] | None:
    """(valid starts, size) of a profile, whatever the MIG mode; the count first, then the list."""
    count = ctypes.c_uint(0)
    if asked(pynvml.nvmlDeviceGetGpuInstancePossiblePlacements, handle, profile_id, None,
             ctypes.byref(count)) is None:
        return None
    found = (pynvml.c_nvmlGpuInstancePlacement_t * max(count.value, 1))()
    if asked(pynvml.nvmlDeviceGetGpuInstancePossiblePlacements, handle, profile_id, found,
             ctypes.byref(count)) is None:
        return None
    placements = found[:count.value]
    return tuple(p.start for p in placements), (placements[0].size if placements else 0)


def _gpu_instance_profile(
    enum: int, info: Any, placements: tuple[tuple[int, ...], int],
) -> GpuInstanceProfile:
    starts, size = placements
    return GpuInstanceProfile(
        enum=enum, id=info.id, name=_text(info.name).removeprefix("MIG "), memory_mib=info.memorySizeMB,
        multiprocessors=info.multiprocessorCount, slice_count=info.sliceCount, max_count=info.instanceCount,
        copy_engines=info.copyEngineCount, decoders=info.decoderCount, encoders=info.encoderCount,
        jpeg=info.jpegCount, ofa=info.ofaCount, placement_starts=starts, placement_size=size,
    )


def _compute_profiles(
    collection: Collection, gpu: int, gpu_instance: Any,
) -> tuple[ComputeInstanceProfile, ...]:
    """Every compute-instance profile NVML lists for the GPU instance (NOT_SUPPORTED: not this size)."""
    found = []
    for enum in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
        info = collection.call(pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo, gpu_instance, enum,
                               pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, gpu=gpu,
                               expected=_INVALID_ARGUMENT)
        if info is not None:
            found.append(ComputeInstanceProfile(
                id=info.id, slice_count=info.sliceCount, instance_count=info.instanceCount,
                multiprocessors=info.multiprocessorCount, name=_text(info.name).removeprefix("MIG ") or None))
    return tuple(found)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
