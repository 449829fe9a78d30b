"""The mutations remediate can make, one frozen dataclass each, and how to undo each one.

The planner emits them, the journal records them, the applier runs them through
``mig_exporter.nvml.write`` and undoes them in reverse on failure, and the runbook prints them as
the ``nvidia-smi`` commands an operator would type. GPU instances are named by their placement
start (unique on a GPU and known before the instance exists) because their IDs are only known
once the driver has created them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mig_exporter.nvml.capability import COMPUTE_PROFILE_ENUM_BY_SLICES


@dataclass(frozen=True)
class SetPersistence:
    gpu_index: int
    enabled: bool

    def describe(self) -> str:
        return f"GPU {self.gpu_index}: turn persistence mode {'on' if self.enabled else 'off'}"

    def command(self) -> list[str]:
        return ["nvidia-smi", "-i", str(self.gpu_index), "-pm", "1" if self.enabled else "0"]


@dataclass(frozen=True)
class SetMigMode:
    gpu_index: int
    enabled: bool
    restore: bool  # the mode that was requested (pending) before this run: what an undo asks for

    def describe(self) -> str:
        return f"GPU {self.gpu_index}: {'enable' if self.enabled else 'disable'} MIG mode"

    def command(self) -> list[str]:
        return ["nvidia-smi", "-i", str(self.gpu_index), "-mig", "1" if self.enabled else "0"]


@dataclass(frozen=True)
class CreateGpuInstance:
    gpu_index: int
    profile: str  # the driver's name, e.g. "3g.40gb"
    profile_enum: int  # NVML_GPU_INSTANCE_PROFILE_*: the write side asks the driver for its ID
    start: int
    size: int

    def describe(self) -> str:
        return f"GPU {self.gpu_index}: create GPU instance {self.profile} at memory slice {self.start}"

    def command(self) -> list[str]:
        return ["nvidia-smi", "mig", "-i", str(self.gpu_index), "-cgi", f"{self.profile}:{self.start}"]


@dataclass(frozen=True)
class DestroyGpuInstance:
    gpu_index: int
    gpu_instance_id: int
    profile: str
    profile_enum: int
    start: int
    size: int

    def describe(self) -> str:
        return (f"GPU {self.gpu_index}: destroy GPU instance {self.gpu_instance_id} "
                f"({self.profile} at memory slice {self.start})")

    def command(self) -> list[str]:
        return ["nvidia-smi", "mig", "-i", str(self.gpu_index), "-gi", str(self.gpu_instance_id), "-dgi"]


@dataclass(frozen=True)
class CreateComputeInstance:
    gpu_index: int
    gpu_instance_start: int  # the GPU instance, by placement: it may not exist yet at plan time
    slices: int  # compute slices; equal to the GPU instance's for a full-size compute instance
    start: int | None = None  # the compute slice it starts at; None: where the driver puts it

    def describe(self) -> str:
        at = "" if self.start is None else f" at compute slice {self.start}"
        return (f"GPU {self.gpu_index}: create a {self.slices}-slice compute instance{at} in the GPU "
                f"instance at memory slice {self.gpu_instance_start}")

    def command_for(self, gpu_instance_id: int) -> list[str]:
        # CI profile IDs equal their enums (mig-facts.md).
        return ["nvidia-smi", "mig", "-i", str(self.gpu_index), "-gi", str(gpu_instance_id),
                "-cci", str(COMPUTE_PROFILE_ENUM_BY_SLICES[self.slices])]


@dataclass(frozen=True)
class DestroyComputeInstance:
    gpu_index: int
    gpu_instance_id: int
    gpu_instance_start: int
    compute_instance_id: int
    slices: int

    def describe(self) -> str:
        return (f"GPU {self.gpu_index}: destroy compute instance {self.compute_instance_id} "
                f"of GPU instance {self.gpu_instance_id}")

    def command(self) -> list[str]:
        return ["nvidia-smi", "mig", "-i", str(self.gpu_index), "-gi", str(self.gpu_instance_id),
                "-ci", str(self.compute_instance_id), "-dci"]


@dataclass(frozen=True)
class ResetGpu:
    """Applies a pending MIG mode. Only added by the applier, for a GPU whose mode stayed pending."""

    gpu_index: int

    def describe(self) -> str:
        return f"GPU {self.gpu_index}: reset the GPU to apply the pending MIG mode"

    def command(self) -> list[str]:
        return ["nvidia-smi", "-r", "-i", str(self.gpu_index)]


Step = (SetPersistence | SetMigMode | CreateGpuInstance | DestroyGpuInstance | CreateComputeInstance
        | DestroyComputeInstance | ResetGpu)


def undo(
    step: Step, created_id: int | None, gpu_instance_id: int | None, compute_start: int | None = None,
) -> Step | None:
    """The step that reverses ``step`` once it has run; None for a reset, which cannot be reversed.

    ``created_id`` is the ID the driver gave a created instance; ``gpu_instance_id`` the ID of the
    GPU instance a compute instance was created in; ``compute_start`` the compute slice a destroyed
    compute instance started at. Recreated instances get their old placement, hence (IDs following
    placement) their old IDs, but a new MIG UUID.
    """
    if isinstance(step, SetPersistence):
        return SetPersistence(step.gpu_index, not step.enabled)
    if isinstance(step, SetMigMode):
        return SetMigMode(step.gpu_index, step.restore, step.restore)
    if isinstance(step, CreateGpuInstance):
        assert created_id is not None
        return DestroyGpuInstance(step.gpu_index, created_id, step.profile, step.profile_enum,
                                  step.start, step.size)
    if isinstance(step, DestroyGpuInstance):
        return CreateGpuInstance(step.gpu_index, step.profile, step.profile_enum, step.start, step.size)
    if isinstance(step, CreateComputeInstance):
        assert created_id is not None and gpu_instance_id is not None
        return DestroyComputeInstance(step.gpu_index, gpu_instance_id, step.gpu_instance_start,
                                      created_id, step.slices)
    if isinstance(step, DestroyComputeInstance):
        return CreateComputeInstance(step.gpu_index, step.gpu_instance_start, step.slices, compute_start)
    return None


def to_json(step: Step) -> dict[str, Any]:
    """``{"action": "CreateGpuInstance", "gpu_index": 0, …}`` for the journal and ``--format json``."""
    return {"action": type(step).__name__, **asdict(step), "description": step.describe()}
