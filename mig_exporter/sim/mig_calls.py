"""The simulated C functions about MIG: GPU instance profiles, placements and capacity, creating
and destroying GPU and compute instances, and MIG device handles.

The driver's own decisions (auto-placement, instance IDs, memory overhead) come from
``placement``; signatures are the C ones, as pynvml calls them (see ``calls``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pynvml

from mig_exporter.sim import placement as driver
from mig_exporter.sim.calls import CallsBase, NvmlFailure, Target, c_function
from mig_exporter.sim.handles import (
    Handle,
    Kind,
    array_capacity,
    as_pointer,
    target,
    value,
    write_handle,
    write_handle_at,
)
from mig_exporter.sim.models import COMPUTE_PROFILE_ENUM_BY_SLICES, GpuInstanceProfile, valid_compute_slices
from mig_exporter.sim.state import SimComputeInstance, SimGpu, SimGpuInstance, new_mig_device_uuid

SLICES_BY_COMPUTE_PROFILE = {enum: slices for slices, enum in COMPUTE_PROFILE_ENUM_BY_SLICES.items()}


class MigCalls(CallsBase):
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
    def nvmlDeviceGetGpuInstancePossiblePlacements_v2(
        self, device: Any, profileId: Any, placements: Any, count: Any
    ) -> int:
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
        elif (
            start not in driver.free_starts(gpu.model, gpu.instances, profile)
            or driver.remaining_capacity(gpu.model, gpu.instances, profile) == 0
        ):
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
    def nvmlDeviceCreateGpuInstanceWithPlacement(
        self, device: Any, profileId: Any, placement: Any, gpuInstance: Any
    ) -> int:
        """INVALID_ARGUMENT for a start or size the profile cannot have, INSUFFICIENT_RESOURCES when
        the slices are taken."""
        _, gpu = self._mig_enabled(device)
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
        found = [
            Handle(Kind.GPU_INSTANCE, index, gi.id) for gi in gpu.instances if gi.profile_id == profile.id
        ]
        return self._write_handles(gpuInstances, count, found)

    @staticmethod
    def _write_handles(array: Any, count: Any, handles: list[Handle]) -> int:
        """Fill a caller's handle array; one shorter than the list gets INSUFFICIENT_SIZE and the
        count needed, never a write past its end."""
        capacity = array_capacity(array)
        target(count).value = len(handles)
        if capacity is not None and capacity < len(handles):
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        for i, handle in enumerate(handles):
            write_handle_at(target(array), i, handle)
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

    @staticmethod
    def _fill_shared_engines(out: Any, profile: GpuInstanceProfile) -> None:
        """The engines a compute instance (or MIG device) shares with its whole GPU instance."""
        out.sharedCopyEngineCount = profile.copy_engines
        out.sharedDecoderCount = profile.decoders
        out.sharedEncoderCount = profile.encoders
        out.sharedJpegCount = profile.jpeg
        out.sharedOfaCount = profile.ofa

    def _fill_compute_profile(self, out: Any, gpu: SimGpu, profile: GpuInstanceProfile, enum: int) -> str:
        slices = self._compute_slices(profile, enum)
        out.id = enum
        out.sliceCount = slices
        out.instanceCount = len(driver.compute_starts(profile.slice_count, slices))
        out.multiprocessorCount = driver.compute_multiprocessors(gpu.model, profile, slices)
        self._fill_shared_engines(out, profile)
        return profile.name if slices == profile.slice_count else f"{slices}c.{profile.name}"

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, gpuInstance: Any, profile: Any, engProfile: Any, info: Any
    ) -> int:
        _, gpu, _, gi_profile = self._gpu_instance(gpuInstance)
        if value(engProfile) != pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        self._fill_compute_profile(target(info), gpu, gi_profile, value(profile))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceGetComputeInstanceProfileInfoV(
        self, gpuInstance: Any, profile: Any, engProfile: Any, info: Any
    ) -> int:
        _, gpu, _, gi_profile = self._gpu_instance(gpuInstance)
        out = target(info)
        if out.version != pynvml.nvmlComputeInstanceProfileInfo_v2:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        if value(engProfile) != pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        out.name = f"MIG {self._fill_compute_profile(out, gpu, gi_profile, value(profile))}".encode()
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceGetComputeInstanceRemainingCapacity(
        self, gpuInstance: Any, profileId: Any, count: Any
    ) -> int:
        _, _, gi, profile = self._gpu_instance(gpuInstance)
        slices = self._compute_slices(profile, value(profileId))
        target(count).value = len(
            driver.free_compute_starts(profile.slice_count, gi.compute_instances, slices)
        )
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceGetComputeInstancePossiblePlacements(
        self, gpuInstance: Any, profileId: Any, placements: Any, count: Any
    ) -> int:
        _, _, _, profile = self._gpu_instance(gpuInstance)
        slices = self._compute_slices(profile, value(profileId))
        return self._write_placements(
            placements, count, driver.compute_starts(profile.slice_count, slices), slices
        )

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
        mig_uuid, created = new_mig_device_uuid(gpu, gi, compute_instance)
        compute_instance = replace(compute_instance, uuid=mig_uuid)
        gpu = replace(gpu, mig_devices_created=created)
        self._commit_compute_instances(handle.gpu, gpu, gi, (*gi.compute_instances, compute_instance))
        write_handle(out, Handle(Kind.COMPUTE_INSTANCE, handle.gpu, gi.id, compute_instance.id))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceCreateComputeInstance(
        self, gpuInstance: Any, profileId: Any, computeInstance: Any
    ) -> int:
        """At the lowest free start; its ID is the start, so a full-size one is ID 0."""
        return self._create_compute_instance(gpuInstance, profileId, None, computeInstance)

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceCreateComputeInstanceWithPlacement(
        self, gpuInstance: Any, profileId: Any, placement: Any, computeInstance: Any
    ) -> int:
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
        self._commit_compute_instances(
            handle.gpu, gpu, gi, tuple(c for c in gi.compute_instances if c.id != ci.id)
        )
        return pynvml.NVML_SUCCESS

    def _commit_compute_instances(
        self, index: int, gpu: SimGpu, gi: SimGpuInstance, compute_instances: tuple[SimComputeInstance, ...]
    ) -> None:
        """Give GPU instance ``gi`` of GPU ``index`` these compute instances (kept in ID order)."""
        new_gi = replace(gi, compute_instances=tuple(sorted(compute_instances, key=lambda c: c.id)))
        self._commit_gpu(
            index, gpu.with_instances(tuple(new_gi if g.id == gi.id else g for g in gpu.instances))
        )

    @c_function(Target.HANDLE)
    def nvmlGpuInstanceGetComputeInstances(
        self, gpuInstance: Any, profileId: Any, computeInstances: Any, count: Any
    ) -> int:
        handle, _, gi, profile = self._gpu_instance(gpuInstance)
        slices = self._compute_slices(profile, value(profileId))
        if computeInstances is None:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        found = [
            Handle(Kind.COMPUTE_INSTANCE, handle.gpu, gi.id, ci.id)
            for ci in gi.compute_instances
            if ci.slices == slices
        ]
        return self._write_handles(computeInstances, count, found)

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
        gpu, _, ci, profile = self._mig_parts(self._mig_handle(device))
        out = target(attributes)
        out.multiprocessorCount = driver.compute_multiprocessors(gpu.model, profile, ci.slices)
        self._fill_shared_engines(out, profile)
        out.gpuInstanceSliceCount = profile.slice_count
        out.computeInstanceSliceCount = ci.slices
        out.memorySizeMB = profile.memory_mib
        return pynvml.NVML_SUCCESS
