"""The common ground of the simulated C functions: how they fail, how they find their GPU, and
how they turn handles back into state.

A C function raises ``NvmlFailure(code)``; ``SimulatedNvml`` returns the code to pynvml. Each is
marked with ``c_function(target)``, saying where its first argument points (a GPU index, a UUID,
a handle) so faults with ``gpu:`` and lost GPUs apply to it. The functions read
``self.world.fleet`` and change it only through ``self.world.commit``, which writes the change back
to the fleet file.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol, TypeVar

import pynvml

from mig_exporter.sim.handles import Handle, Kind, decode
from mig_exporter.sim.models import GpuInstanceProfile
from mig_exporter.sim.state import Fleet, SimComputeInstance, SimGpu, SimGpuInstance, mig_device_uuid


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

    def wait(self, seconds: float) -> None: ...


F = TypeVar("F", bound=Callable[..., Any])


def c_function(where: Target) -> Callable[[F], F]:
    """Mark a method as the C symbol of the same name, saying where its GPU is found."""

    def mark(function: F) -> F:
        function._nvml_target = where  # type: ignore[attr-defined]
        return function

    return mark


class CallsBase:
    """Handle resolution shared by the device and MIG calls. ``init_count`` is nvmlInit's
    reference count: calls other than init answer UNINITIALIZED while it is 0."""

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

    def _mig_parts(
        self, handle: Handle
    ) -> tuple[SimGpu, SimGpuInstance, SimComputeInstance, GpuInstanceProfile]:
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
                mig_device_uuid(gpu.uuid, gi, ci) == text
                for gi in gpu.instances
                for ci in gi.compute_instances
            ):
                return index
        return None

    def _commit_gpu(self, index: int, gpu: SimGpu) -> None:
        self.world.commit(self.world.fleet.with_gpu(index, gpu))
