"""The only code that changes the hardware: persistence, MIG mode, GPU and compute instances, reset.

Only ``remediate`` calls it, one mutation per method, so the applier can journal each one before
and after and undo it. Every NVML failure comes out as ``WriteFailed`` naming the call, the GPU and
NVML's own words (mig-parted #189: say why an operation failed), so nothing above this module needs
pynvml. GPU instances are created with explicit placements and with the profile ID the driver
gives for the profile's enum on that very GPU, because the same name can map to different IDs on
mixed GPUs (mig-parted #157).
"""

from __future__ import annotations

import ctypes
import subprocess
from dataclasses import dataclass
from typing import Any

import pynvml

from mig_exporter.nvml.capability import COMPUTE_PROFILE_ENUM_BY_SLICES
from mig_exporter.nvml.errors import NVML_ERROR_NAMES
from mig_exporter.nvml.session import NvmlSession

RESET_TIMEOUT_SECONDS = 120


class WriteFailed(Exception):
    """One mutation failed; nothing else was attempted. ``in_use``: the GPU was busy (IN_USE)."""

    def __init__(self, call: str, gpu_index: int, reason: str, in_use: bool = False) -> None:
        super().__init__(f"GPU {gpu_index}: {call} failed: {reason}")
        self.call = call
        self.gpu_index = gpu_index
        self.reason = reason
        self.in_use = in_use


@dataclass(frozen=True)
class MigModeChange:
    """What ``nvmlDeviceSetMigMode`` answered. Not activated: the mode is pending (see pending_mig.py)."""

    activated: bool
    reason: str | None = None  # NVML's words for the activation status, e.g. "In use by another client"


def describe_nvml_error(code: int) -> str:
    """``In use by another client (IN_USE)``: NVML's text and the code's name, as an operator searches it.

    ``nvmlErrorString`` is asked directly: ``str(NVMLError)`` would show its bytes as ``b'…'``.
    """
    try:
        text = pynvml.nvmlErrorString(code)
    except pynvml.NVMLError:
        text = None
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return f"{text or 'NVML error'} ({NVML_ERROR_NAMES.get(code, code)})"


class HardwareWriter:
    """Mutations on the GPUs of an open ``NvmlSession`` (real, or a simulated fleet)."""

    def __init__(self, session: NvmlSession) -> None:
        self._session = session

    def set_persistence(self, gpu_index: int, enabled: bool) -> None:
        state = pynvml.NVML_FEATURE_ENABLED if enabled else pynvml.NVML_FEATURE_DISABLED
        self._call(gpu_index, pynvml.nvmlDeviceSetPersistenceMode, self._device(gpu_index), state)

    def set_mig_mode(self, gpu_index: int, enabled: bool) -> MigModeChange:
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if enabled else pynvml.NVML_DEVICE_MIG_DISABLE
        status = self._call(gpu_index, pynvml.nvmlDeviceSetMigMode, self._device(gpu_index), mode)
        if status == pynvml.NVML_SUCCESS:
            return MigModeChange(activated=True)
        return MigModeChange(activated=False, reason=describe_nvml_error(status))

    def create_gpu_instance(self, gpu_index: int, profile_enum: int, start: int, size: int) -> int:
        """Create at placement ``start`` and return the new GPU instance ID."""
        device = self._device(gpu_index)
        info = self._call(gpu_index, pynvml.nvmlDeviceGetGpuInstanceProfileInfo, device, profile_enum)
        placement = pynvml.c_nvmlGpuInstancePlacement_t(start, size)
        instance = self._call(gpu_index, pynvml.nvmlDeviceCreateGpuInstanceWithPlacement, device, info.id,
                              ctypes.byref(placement))
        return self._created_id(gpu_index, instance, pynvml.nvmlGpuInstanceGetInfo,
                                pynvml.nvmlGpuInstanceDestroy)

    def create_compute_instance(
        self, gpu_index: int, gpu_instance_id: int, slices: int, start: int | None = None,
    ) -> int:
        """Create a compute instance of ``slices`` in the GPU instance and return its ID: at compute
        slice ``start`` when given (an undo puts it back where it was), else where the driver picks."""
        gpu_instance = self._gpu_instance(gpu_index, gpu_instance_id)
        info = self._call(gpu_index, pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo, gpu_instance,
                          COMPUTE_PROFILE_ENUM_BY_SLICES[slices],
                          pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
        if start is None:
            compute = self._call(gpu_index, pynvml.nvmlGpuInstanceCreateComputeInstance, gpu_instance,
                                 info.id)
        else:
            placement = pynvml.c_nvmlComputeInstancePlacement_t(start, slices)
            compute = self._call(gpu_index, pynvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement,
                                 gpu_instance, info.id, ctypes.byref(placement))
        return self._created_id(gpu_index, compute, pynvml.nvmlComputeInstanceGetInfo,
                                pynvml.nvmlComputeInstanceDestroy)

    def _created_id(self, gpu_index: int, created: Any, get_info: Any, destroy: Any) -> int:
        """The ID of an instance just created. Without it the applier could not undo the creation,
        so an instance whose ID cannot be read is destroyed again before the failure is raised."""
        try:
            return int(self._call(gpu_index, get_info, created).id)
        except WriteFailed as failed:
            try:
                self._call(gpu_index, destroy, created)
            except WriteFailed as orphaned:
                raise WriteFailed(failed.call, gpu_index, f"{failed.reason}; the instance it created is "
                                  f"left: {orphaned.call}: {orphaned.reason}") from None
            raise WriteFailed(failed.call, gpu_index, f"{failed.reason}; the instance it created was "
                              "destroyed again") from None

    def destroy_compute_instance(
        self, gpu_index: int, gpu_instance_id: int, compute_instance_id: int,
    ) -> int:
        """Destroy it and return the compute slice it started at, so an undo can put it back there
        (the Snapshot knows compute instances by ID only)."""
        gpu_instance = self._gpu_instance(gpu_index, gpu_instance_id)
        compute = self._call(gpu_index, pynvml.nvmlGpuInstanceGetComputeInstanceById, gpu_instance,
                             compute_instance_id)
        start = int(self._call(gpu_index, pynvml.nvmlComputeInstanceGetInfo, compute).placement.start)
        self._call(gpu_index, pynvml.nvmlComputeInstanceDestroy, compute)
        return start

    def destroy_gpu_instance(self, gpu_index: int, gpu_instance_id: int) -> None:
        self._call(gpu_index, pynvml.nvmlGpuInstanceDestroy, self._gpu_instance(gpu_index, gpu_instance_id))

    def reset_gpu(self, gpu_index: int) -> None:
        """``nvidia-smi -r -i N``, which applies a pending MIG mode; on a simulated fleet, its simulation."""
        self._session.forget_gpu(gpu_index)
        simulator = self._session.simulator
        if simulator is not None:
            self._call(gpu_index, simulator.reset_gpu, gpu_index)
            return
        command = ["nvidia-smi", "-r", "-i", str(gpu_index)]
        # An initialised NVML client holds every GPU open, and a reset is refused while anything
        # does (NVSentinel #1691): this process lets go of NVML for the reset.
        self._call(gpu_index, pynvml.nvmlShutdown)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=RESET_TIMEOUT_SECONDS,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise WriteFailed(" ".join(command), gpu_index, str(error)) from None
        finally:
            self._call(gpu_index, pynvml.nvmlInit)
            self._session.forget_gpus()  # every handle the session kept went with that shutdown
        if done.returncode != 0:
            said = " ".join((done.stdout + done.stderr).split()) or f"exit status {done.returncode}"
            raise WriteFailed(" ".join(command), gpu_index, said, in_use="in use" in said.lower())

    def _device(self, gpu_index: int) -> Any:
        """The device every mutation starts from. The session forgets what it knew of the GPU
        (layout, capability, identity), so the next read, remediate's verify among them, sees
        the change (``nvml.known``)."""
        self._session.forget_gpu(gpu_index)
        return self._call(gpu_index, pynvml.nvmlDeviceGetHandleByIndex, gpu_index)

    def _gpu_instance(self, gpu_index: int, gpu_instance_id: int) -> Any:
        device = self._device(gpu_index)
        return self._call(gpu_index, pynvml.nvmlDeviceGetGpuInstanceById, device, gpu_instance_id)

    @staticmethod
    def _call(gpu_index: int, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except pynvml.NVMLError as error:
            raise WriteFailed(function.__name__, gpu_index, describe_nvml_error(error.value),
                              in_use=error.value == pynvml.NVML_ERROR_IN_USE) from None
