"""The plan: from a Snapshot and the targets, every step in order and every blocker. Pure.

Additive where it can be (mig-parted #119 destroys everything and re-creates): busy instances
always stay, idle instances that already match the layout stay unless they are in the way, and
only what must go is destroyed. Blockers are found here, before the first mutation: processes that
would lose their GPU or instance (unsafe, exit 3), and layouts that cannot be made at all (exit 2).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from itertools import combinations, product

from mig_exporter.capability import GpuInstanceProfile, MigCapability
from mig_exporter.model import CollectionError, Gpu, GpuInstance, GpuProcess, Snapshot
from mig_exporter.packing import Slot, misfit_reason, pack
from mig_exporter.remediate.layout import GpuTarget
from mig_exporter.remediate.steps import (
    CreateComputeInstance,
    CreateGpuInstance,
    DestroyComputeInstance,
    DestroyGpuInstance,
    SetMigMode,
    SetPersistence,
    Step,
)

# The parts of a GPU (``Gpu.unread``) a plan rests on: one unread on a target GPU (NOT_SUPPORTED is
# an answer, not a failure) means the plan could miss an instance or a process, or size one wrong.
PLAN_NEEDS = frozenset({"gpu", "mig_mode", "persistence", "mig_capability", "gpu_instances",
                        "mig_devices", "processes"})


class BlockerKind(str, Enum):
    UNSAFE = "unsafe"  # processes would lose their GPU or instance: refused, exit 3
    IMPOSSIBLE = "impossible"  # cannot be done as asked: exit 2


@dataclass(frozen=True)
class Blocker:
    kind: BlockerKind
    gpu_index: int | None  # None for the host (not root)
    reason: str
    processes: tuple[GpuProcess, ...] = ()  # what must stop first, one entry per pid


@dataclass(frozen=True)
class GpuPlan:
    """One target GPU: what is there, what stays, what is created, and the steps in order."""

    gpu: Gpu
    target: GpuTarget
    kept: tuple[GpuInstance, ...]
    created: tuple[Slot, ...]  # in creation order
    steps: tuple[Step, ...]

    @property
    def expected(self) -> tuple[Slot, ...]:
        """Every GPU instance the GPU should have once the plan has run, by placement."""
        return tuple(sorted((*map(_slot, self.kept), *self.created), key=lambda slot: slot.start))


@dataclass(frozen=True)
class Plan:
    gpus: tuple[GpuPlan, ...]
    blockers: tuple[Blocker, ...]

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(step for gpu_plan in self.gpus for step in gpu_plan.steps)

    @property
    def nothing_to_do(self) -> bool:
        return not self.steps and not self.blockers

    @property
    def unsafe(self) -> bool:
        return any(b.kind is BlockerKind.UNSAFE for b in self.blockers)

    @property
    def impossible(self) -> bool:
        return any(b.kind is BlockerKind.IMPOSSIBLE for b in self.blockers)


def make_plan(snapshot: Snapshot, targets: Sequence[GpuTarget], *, privileged: bool,
              persistence: bool) -> Plan:
    """The plan for ``targets``. ``privileged``: the caller may change the hardware (root, or a
    simulated fleet); ``persistence``: turn persistence mode on where MIG is wanted."""
    gpu_plans: list[GpuPlan] = []
    blockers: list[Blocker] = []
    for target in targets:
        gpu = snapshot.gpu(target.gpu_index)
        gpu_plan, gpu_blockers = _plan_gpu(gpu, target, snapshot.errors, persistence)
        blockers.extend(gpu_blockers)
        if gpu_plan is not None:
            gpu_plans.append(gpu_plan)
    if not privileged and any(gpu_plan.steps for gpu_plan in gpu_plans):
        blockers.append(Blocker(BlockerKind.IMPOSSIBLE, None,
                                "changing MIG needs root: run as root (sudo mig-exporter remediate …)"))
    return Plan(tuple(gpu_plans), tuple(blockers))


def _plan_gpu(
    gpu: Gpu, target: GpuTarget, errors: Sequence[CollectionError], persistence: bool,
) -> tuple[GpuPlan | None, list[Blocker]]:
    if gpu.lost:
        return None, [Blocker(BlockerKind.IMPOSSIBLE, gpu.index,
                              f"GPU {gpu.index} is lost (NVML: GPU is lost): reset or reboot it first")]
    calls = failed_reads(gpu, errors)
    if calls:
        return None, [Blocker(BlockerKind.IMPOSSIBLE, gpu.index,
                              f"GPU {gpu.index} could not be read completely ({calls}); a plan made from a "
                              "partial reading could destroy what it did not see")]
    if target.capability is None:
        if not target.mig_enabled:  # a GPU without MIG already is what "MIG disabled" asks for
            return None, []
        return None, [Blocker(BlockerKind.IMPOSSIBLE, gpu.index,
                              f"GPU {gpu.index} ({gpu.name or 'unknown model'}) does not support MIG")]
    unsafe = _mode_change_blockers(gpu, target) + _busy_instance_blockers(gpu, target, target.capability)
    # The steps are still planned, as they will run once the blocking processes have stopped, so
    # the plan shows the whole way; the blockers alone keep --apply from starting.
    idle = _without(gpu, [p for blocker in unsafe for p in blocker.processes])
    kept, destroyed, created, impossible = _choose_instances(idle, target, target.capability)
    impossible += [_unknown_profile_blocker(gpu, gi, target.capability)
                   for gi in destroyed if target.capability.profile_by_id(gi.profile_id) is None]
    if impossible:
        return None, unsafe + impossible
    steps = _steps(idle, target, target.capability, kept, destroyed, created, persistence)
    return GpuPlan(gpu, target, kept, created, tuple(steps)), unsafe


def failed_reads(gpu: Gpu, errors: Sequence[CollectionError]) -> str | None:
    """None when every part of ``gpu`` a plan or a verification rests on was read; else NVML's
    errors on that GPU, as ``call: error, …`` (or the parts unread, if no error names them), and
    the listings NVML answered NOT_SUPPORTED (no error, yet not listed is not "none")."""
    unread = gpu.unread & PLAN_NEEDS
    failed = [f"{e.call}: {e.error}" for e in errors if e.gpu_index == gpu.index] if unread else []
    reasons = failed or [f"{part} unread" for part in sorted(unread)] or [
        f"{what} not listed by NVML" for what, listed in (
            ("processes", gpu.processes_complete),
            ("GPU instances", gpu.gpu_instances_complete or not gpu.mig_enabled)) if not listed]
    return ", ".join(reasons) or None


def _unknown_profile_blocker(gpu: Gpu, gi: GpuInstance, capability: MigCapability) -> Blocker:
    """An instance of a profile the tables lack could not be re-created if the run had to be undone."""
    return Blocker(BlockerKind.IMPOSSIBLE, gpu.index,
                   f"GPU {gpu.index}: GPU instance {gi.gpu_instance_id} has profile ID {gi.profile_id}, "
                   f"which NVML does not list for this GPU, so it could not be re-created on undo; "
                   f"destroy it by hand "
                   f"(nvidia-smi mig -i {gpu.index} -gi {gi.gpu_instance_id} -dci, then -dgi)")


def _mode_change_blockers(gpu: Gpu, target: GpuTarget) -> list[Blocker]:
    """Enabling MIG takes the whole GPU from every process on it. (Disabling it first destroys
    the instances, whose processes are blockers of their own; cancelling a pending change takes
    nothing from anyone.)"""
    if gpu.mig_mode_current or not target.mig_enabled or not gpu.processes:
        return []
    return [Blocker(BlockerKind.UNSAFE, gpu.index,
                    f"GPU {gpu.index} runs processes, and they would lose the GPU when MIG is enabled",
                    _unique_processes(gpu.processes))]


def _needs_mode_change(gpu: Gpu, target: GpuTarget) -> bool:
    return gpu.mig_mode_current != target.mig_enabled or gpu.mig_mode_pending != target.mig_enabled


def _unique_processes(processes: Sequence[GpuProcess]) -> tuple[GpuProcess, ...]:
    return tuple({p.pid: p for p in sorted(processes, key=lambda p: p.pid)}.values())


def _wanted(target: GpuTarget) -> Counter[int]:
    """GPU instances wanted, by profile ID."""
    return Counter(p.id for p in target.profiles) if target.mig_enabled else Counter[int]()


def _existing(gpu: Gpu) -> tuple[GpuInstance, ...]:
    return gpu.gpu_instances if gpu.mig_enabled else ()


def _busy_instance_blockers(gpu: Gpu, target: GpuTarget, capability: MigCapability) -> list[Blocker]:
    """Busy GPU instances beyond what the layout keeps of their profile: they would have to go."""
    return [Blocker(BlockerKind.UNSAFE, gpu.index,
                    f"GPU {gpu.index}: GPU instance {gi.gpu_instance_id} ({gi.profile} at memory slice "
                    f"{gi.placement_start}) runs processes and is not in the layout {target.layout}",
                    _unique_processes(_processes_in(gpu, gi)))
            for gi in _busy_beyond_layout(gpu, target, capability)]


def _busy_beyond_layout(gpu: Gpu, target: GpuTarget, capability: MigCapability) -> list[GpuInstance]:
    """Where the layout keeps fewer instances of a profile than are busy, which busy ones must go:
    the first choice that lets the rest of the layout fit beside the kept ones, so the plan names
    processes whose stopping really clears the way (both 3g busy and ``4g,3g`` wanted: the 3g at
    slice 0 is in the 4g's way, the one at slice 4 is not)."""
    wanted = _wanted(target)
    busy = [gi for gi in _existing(gpu) if _processes_in(gpu, gi)]
    by_profile: dict[int, list[GpuInstance]] = {}
    for gi in busy:
        by_profile.setdefault(gi.profile_id, []).append(gi)
    choices = [list(combinations(group, min(len(group), wanted[profile_id])))
               for profile_id, group in by_profile.items()]
    first: list[GpuInstance] | None = None
    for picked in product(*choices):
        kept = [gi for group in picked for gi in group]
        beyond = [gi for gi in busy if gi not in kept]
        if first is None:
            first = beyond
        new = _take(target.profiles, wanted - Counter(gi.profile_id for gi in kept))
        if pack(capability, [_slot(gi) for gi in kept], new) is not None:
            return beyond
    return first or []


def _without(gpu: Gpu, stopped: Sequence[GpuProcess]) -> Gpu:
    """``gpu`` as it will be once the ``stopped`` processes (by pid, in their GPU instance) are gone."""
    gone = {(p.pid, p.gpu_instance_id) for p in stopped}
    return replace(gpu, processes=tuple(p for p in gpu.processes if (p.pid, p.gpu_instance_id) not in gone))


def _choose_instances(gpu: Gpu, target: GpuTarget, capability: MigCapability) -> tuple[
        tuple[GpuInstance, ...], tuple[GpuInstance, ...], tuple[Slot, ...], list[Blocker]]:
    """(kept, destroyed, created in order, blockers) for the GPU instances of ``gpu``, whose busy
    instances all fit the layout (``_busy_instance_blockers`` found none)."""
    existing = _existing(gpu)
    busy = [gi for gi in existing if _processes_in(gpu, gi)]
    remaining = _wanted(target) - Counter(gi.profile_id for gi in busy)
    reusable = [gi for gi in existing if gi not in busy and remaining[gi.profile_id]
                and _compute_matches(gpu, gi, target, capability)]
    fixed = [_slot(gi) for gi in busy]
    for keep in _keep_choices(reusable, remaining):
        if _compute_left(gpu, target, capability, (*busy, *keep)) is None:
            continue
        new = _take(target.profiles, remaining - Counter(gi.profile_id for gi in keep))
        placed = pack(capability, [*fixed, *map(_slot, keep)], new)
        if placed is not None:
            kept = (*busy, *keep)
            return kept, tuple(gi for gi in existing if gi not in kept), placed, []
    reason = misfit_reason(capability, fixed, _take(target.profiles, remaining))
    why = f"layout {target.layout} does not fit GPU {gpu.index} ({gpu.name or 'unnamed GPU'}): {reason}"
    return (), (), (), [Blocker(BlockerKind.IMPOSSIBLE, gpu.index, why)]


def _take(profiles: Sequence[GpuInstanceProfile], counts: Counter[int]) -> list[GpuInstanceProfile]:
    """The first ``counts[id]`` profiles of each ID from ``profiles``, in their order."""
    left = counts.copy()
    taken = []
    for profile in profiles:
        if left[profile.id] > 0:
            left[profile.id] -= 1
            taken.append(profile)
    return taken


def _keep_choices(
    reusable: Sequence[GpuInstance], remaining: Counter[int],
) -> Iterator[tuple[GpuInstance, ...]]:
    """Sets of idle matching instances to keep, the largest first: keep as many as a fit allows."""
    for size in range(len(reusable), -1, -1):
        for keep in combinations(reusable, size):
            if all(n <= remaining[pid] for pid, n in Counter(gi.profile_id for gi in keep).items()):
                yield keep


def _processes_in(gpu: Gpu, gi: GpuInstance) -> tuple[GpuProcess, ...]:
    return tuple(p for p in gpu.processes if p.gpu_instance_id == gi.gpu_instance_id)


def _single_compute(gpu: Gpu, gi: GpuInstance, capability: MigCapability) -> int | None:
    """Slices of the GPU instance's only compute instance; None without one; 0 with several."""
    if not gi.compute_instance_ids:
        return None
    if len(gi.compute_instance_ids) > 1:
        return 0
    return _compute_slices(gpu, gi, gi.compute_instance_ids[0], _profile(capability, gi.profile_id))


def _wanted_compute(target: GpuTarget) -> dict[int, list[int]]:
    """Compute instance sizes wanted, per GPU instance profile ID, in the layout's order."""
    slices = target.compute_slices or tuple(p.slice_count for p in target.profiles)
    wanted: dict[int, list[int]] = {}
    for profile, c in zip(target.profiles, slices, strict=True):
        wanted.setdefault(profile.id, []).append(c)
    return wanted


def _compute_matches(gpu: Gpu, gi: GpuInstance, target: GpuTarget, capability: MigCapability) -> bool:
    """The instance has no compute instance yet (one is then created) or exactly one of a size the
    layout asks for (``1c.3g.40gb`` matches only where the layout says ``1c.3g.40gb``)."""
    c = _single_compute(gpu, gi, capability)
    return c is None or c in _wanted_compute(target).get(gi.profile_id, [])


def _compute_left(gpu: Gpu, target: GpuTarget, capability: MigCapability,
                  kept: Sequence[GpuInstance]) -> dict[int, list[int]] | None:
    """The compute instance sizes still to create, per profile ID, once ``kept`` stays; None when
    idle kept instances hold more of one size than the layout asks for."""
    left = _wanted_compute(target)
    for gi in kept:
        c = _single_compute(gpu, gi, capability)
        sizes = left.get(gi.profile_id, [])
        if c in sizes:
            sizes.remove(c)
        elif c is not None and not _processes_in(gpu, gi):
            return None
    return left


def _slot(gi: GpuInstance) -> Slot:
    return Slot(gi.profile_id, gi.profile, gi.placement_start, gi.placement_size)


def _steps(gpu: Gpu, target: GpuTarget, capability: MigCapability, kept: Sequence[GpuInstance],
           destroyed: Sequence[GpuInstance], created: Sequence[Slot], persistence: bool) -> list[Step]:
    """Destroy what goes (compute instances first), set the mode, then persistence (after the mode,
    so it never holds the GPU during a mode change), then create. Mode first also means nothing is
    created on a GPU whose mode stays pending."""
    steps: list[Step] = []
    for gi in destroyed:
        profile = _profile(capability, gi.profile_id)
        steps += [DestroyComputeInstance(gpu.index, gi.gpu_instance_id, gi.placement_start, ci,
                                         _compute_slices(gpu, gi, ci, profile))
                  for ci in gi.compute_instance_ids]
        steps.append(DestroyGpuInstance(gpu.index, gi.gpu_instance_id, gi.profile, profile.enum,
                                        gi.placement_start, gi.placement_size))
    if _needs_mode_change(gpu, target):
        steps.append(SetMigMode(gpu.index, target.mig_enabled, restore=bool(gpu.mig_mode_pending)))
    if persistence and target.mig_enabled and gpu.persistence_mode is False:
        steps.append(SetPersistence(gpu.index, True))
    left = _compute_left(gpu, target, capability, kept) or {}
    for gi in kept:
        if not gi.compute_instance_ids:
            steps.append(CreateComputeInstance(gpu.index, gi.placement_start, left[gi.profile_id].pop(0)))
    for slot in created:
        profile = _profile(capability, slot.profile_id)
        steps.append(CreateGpuInstance(gpu.index, profile.name, profile.enum, slot.start, slot.size))
        steps.append(CreateComputeInstance(gpu.index, slot.start, left[slot.profile_id].pop(0)))
    return steps


def _profile(capability: MigCapability, profile_id: int) -> GpuInstanceProfile:
    """A profile the planner already checked the GPU has."""
    profile = capability.profile_by_id(profile_id)
    if profile is None:
        raise KeyError(f"no GPU instance profile ID {profile_id} on this GPU")
    return profile


def _compute_slices(gpu: Gpu, gi: GpuInstance, ci: int, profile: GpuInstanceProfile) -> int:
    """Compute slices of a compute instance, as NVML gave them for its MIG device, for undo; a
    device without the figure (attributes not supported) is taken for a full-size one."""
    for device in gpu.mig_instances:
        if (device.gpu_instance_id, device.compute_instance_id) == (gi.gpu_instance_id, ci) \
                and device.compute_slices is not None:
            return device.compute_slices
    return profile.slice_count
