"""Verification: read the hardware again and compare it with what the plan promised. Pure.

Success is only claimed after this (mig-parted #18 and HAMi #2131 reported success with nothing
created): every planned GPU has the MIG mode wanted, exactly the GPU instances planned at their
placements, each with a compute instance, and persistence on where the plan turned it on. A GPU
left waiting for a reset must read back with that mode pending. After a rollback, "every GPU is as
it was found" is likewise only said once the hardware read again matches the hardware as found.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from mig_exporter.model import Gpu, Snapshot
from mig_exporter.remediate.plan import GpuPlan, Plan, failed_reads
from mig_exporter.remediate.steps import SetPersistence


def differences(fresh: Snapshot, plan: Plan, pending: Collection[int] = ()) -> tuple[str, ...]:
    """Each way ``fresh`` differs from the plan's target, one line each; GPUs in ``pending`` are
    skipped (their mode waits for a reset, so their instances are not made yet)."""
    found: list[str] = []
    for gpu_plan in plan.gpus:
        if gpu_plan.gpu.index not in pending:
            found.extend(_gpu_differences(fresh, gpu_plan))
        elif _pending_mode(fresh, gpu_plan.gpu.index) != gpu_plan.target.mig_enabled:
            found.append(f"GPU {gpu_plan.gpu.index}: the MIG mode change asked for is not pending")
    return tuple(found)


def _pending_mode(fresh: Snapshot, index: int) -> bool | None:
    try:
        return fresh.gpu(index).mig_mode_pending
    except KeyError:
        return None


def unrestored(found: Snapshot, fresh: Snapshot, gpu_indices: Collection[int]) -> tuple[str, ...]:
    """Each GPU of ``gpu_indices`` whose state read back after a rollback differs from ``found``:
    MIG mode, persistence, GPU instances (ID, profile, placement) and their compute instances."""
    lines = []
    for index in sorted(gpu_indices):
        try:
            before, after = _RestorableState.of(found.gpu(index)), _RestorableState.of(fresh.gpu(index))
        except KeyError:
            lines.append(f"GPU {index} is no longer listed by NVML")
            continue
        unread = failed_reads(fresh.gpu(index), fresh.errors)
        if before != after:
            with_errors = f" (read with errors: {unread})" if unread else ""
            lines.append(f"GPU {index} reads back as {after}; it was {before}{with_errors}")
        elif unread:
            lines.append(f"GPU {index} could not be read back completely ({unread}), "
                         "so it is not known to be as found")
    return tuple(lines)


@dataclass(frozen=True)
class _RestorableState:
    """What a rollback puts back (MIG UUIDs are new for re-created instances, so they are left out)."""

    lost: bool
    mig_current: bool | None
    mig_pending: bool | None
    persistence: bool | None
    gpu_instances: tuple[tuple[int, str, int, tuple[int, ...]], ...]  # ID, profile, start, compute IDs
    mig_devices: tuple[tuple[int, int, str], ...]  # GPU instance ID, compute instance ID, profile

    @classmethod
    def of(cls, gpu: Gpu) -> _RestorableState:
        return cls(
            gpu.lost, gpu.mig_mode_current, gpu.mig_mode_pending, gpu.persistence_mode,
            tuple(sorted((gi.gpu_instance_id, gi.profile, gi.placement_start, gi.compute_instance_ids)
                         for gi in gpu.gpu_instances)),
            tuple(sorted((m.gpu_instance_id, m.compute_instance_id, m.profile) for m in gpu.mig_instances)))

    def __str__(self) -> str:
        if self.lost:
            return "lost"
        instances = ", ".join(f"{profile}@{start} (GPU instance {gi_id}, compute instances "
                              f"{', '.join(map(str, compute)) or 'none'})"
                              for gi_id, profile, start, compute in self.gpu_instances)
        devices = ", ".join(profile for _, _, profile in self.mig_devices)
        return (f"MIG {_word(self.mig_current, 'enabled', 'disabled')} "
                f"(pending {_word(self.mig_pending, 'enabled', 'disabled')}), "
                f"persistence {_word(self.persistence, 'on', 'off')}, "
                f"GPU instances: {instances or 'none'}, MIG devices: {devices or 'none'}")


def _gpu_differences(fresh: Snapshot, gpu_plan: GpuPlan) -> list[str]:
    index, target = gpu_plan.gpu.index, gpu_plan.target
    try:
        gpu = fresh.gpu(index)
    except KeyError:
        return [f"GPU {index} is no longer listed by NVML"]
    if gpu.lost:
        return [f"GPU {index} is lost"]
    found = []
    mode = "enabled" if target.mig_enabled else "disabled"
    if gpu.mig_mode_current != target.mig_enabled or gpu.mig_mode_pending != target.mig_enabled:
        found.append(f"GPU {index}: MIG mode is {_word(gpu.mig_mode_current, 'enabled', 'disabled')} "
                     f"(pending {_word(gpu.mig_mode_pending, 'enabled', 'disabled')}); expected {mode}")
    have = sorted((gi.placement_start, gi.profile_id) for gi in gpu.gpu_instances)
    want = sorted((slot.start, slot.profile_id) for slot in gpu_plan.expected)
    if have != want:
        listing = ", ".join(f"{gi.profile}@{gi.placement_start}" for gi in gpu.gpu_instances) or "none"
        expected = ", ".join(str(slot) for slot in gpu_plan.expected) or "none"
        found.append(f"GPU {index}: GPU instances are {listing}; expected {expected}")
    found += [f"GPU {index}: GPU instance {gi.gpu_instance_id} has no compute instance"
              for gi in gpu.gpu_instances if not gi.compute_instance_ids]
    devices = sorted(m.profile for m in gpu.mig_instances)
    if target.compute_slices and devices != sorted(target.devices):
        found.append(f"GPU {index}: MIG devices are {', '.join(devices) or 'none'}; "
                     f"expected {', '.join(sorted(target.devices))}")
    if SetPersistence(index, True) in gpu_plan.steps and gpu.persistence_mode is not True:
        persistence = _word(gpu.persistence_mode, "on", "off")
        found.append(f"GPU {index}: persistence mode is {persistence}; expected on")
    errors = [f"{e.call}: {e.error}" for e in fresh.errors if e.gpu_index == index]
    if found and errors:  # the reading itself may be what differs
        found.append(f"GPU {index} was read with errors ({', '.join(errors)})")
    elif unread := failed_reads(gpu, fresh.errors):  # an instance not seen could be one too many
        found.append(f"GPU {index} could not be read back completely ({unread})")
    return found


def _word(value: bool | None, yes: str, no: str) -> str:
    return "unknown" if value is None else yes if value else no
