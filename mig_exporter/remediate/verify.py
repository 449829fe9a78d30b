"""Verification: read the hardware again and compare it with what the plan promised. Pure.

Success is only claimed after this (mig-parted #18 and HAMi #2131 reported success with nothing
created): every planned GPU has the MIG mode wanted, exactly the GPU instances planned at their
placements, each with a compute instance, and persistence on where the plan turned it on.
"""

from __future__ import annotations

from collections.abc import Collection

from mig_exporter.model import Snapshot
from mig_exporter.remediate.plan import GpuPlan, Plan
from mig_exporter.remediate.steps import SetPersistence


def differences(fresh: Snapshot, plan: Plan, pending: Collection[int] = ()) -> tuple[str, ...]:
    """Each way ``fresh`` differs from the plan's target, one line each; GPUs in ``pending`` are
    skipped (their mode waits for a reset, so their instances are not made yet)."""
    found: list[str] = []
    for gpu_plan in plan.gpus:
        if gpu_plan.gpu.index not in pending:
            found.extend(_gpu_differences(fresh, gpu_plan))
    return tuple(found)


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
    if SetPersistence(index, True) in gpu_plan.steps and gpu.persistence_mode is not True:
        persistence = _word(gpu.persistence_mode, "on", "off")
        found.append(f"GPU {index}: persistence mode is {persistence}; expected on")
    errors = [f"{e.call}: {e.error}" for e in fresh.errors if e.gpu_index == index]
    if found and errors:  # the reading itself may be what differs
        found.append(f"GPU {index} was read with errors ({', '.join(errors)})")
    return found


def _word(value: bool | None, yes: str, no: str) -> str:
    return "unknown" if value is None else yes if value else no
