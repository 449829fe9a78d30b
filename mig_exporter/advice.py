"""Right-sized MIG advice: which instance each workload needs, and on which GPU.

A GPU shared without MIG gives its processes no isolation; MIG gives each one its own memory and
SMs. The advice sizes one instance per workload from what the workload holds now (its total over
every physical GPU, since a process spread over four GPUs needs all of it in one instance once it
is pinned) plus a headroom, and picks the smallest profile of the GPU's model that holds it. The
layout is checked with the placement search ``remediate`` itself uses
(``mig_exporter.remediate.packing``), so the advice is never a layout remediate would refuse.
Pure: the exporter's ``mig_exporter_advised_layout_info`` series and ``diagnose`` both read it
from a Snapshot.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mig_exporter.findings import is_unpartitioned_sharing
from mig_exporter.model import MIB, Gpu, Snapshot
from mig_exporter.profiles import GpuInstanceProfile, GpuModel, model_by_nvml_name
from mig_exporter.remediate.packing import pack

# Why 20 %: a Snapshot is one moment, and a serving process's memory moves with batch sizes and
# its allocator's cache; on a whole GPU a peak borrows from the neighbour, in a MIG instance it is
# an out-of-memory error. 20 % also keeps the incident's processes (about 17.7 GiB each) out of a
# 2g.20gb instance (19.5 GiB), which would leave them under 2 GiB to grow.
DEFAULT_HEADROOM_RATIO = 0.20


@dataclass(frozen=True)
class Workload:
    """A process to move into its own MIG instance."""

    pid: int
    name: str | None
    gpu_indices: tuple[int, ...]  # the physical GPUs it holds memory on now
    used_bytes: int | None  # total over those GPUs; None when NVML did not report a figure
    needed_bytes: int | None  # used_bytes plus the headroom: what its instance must hold


@dataclass(frozen=True)
class AssignedInstance:
    """One instance of an advised layout and the workload it is for."""

    profile: str  # the driver's name on that GPU's model, e.g. "3g.40gb"
    memory_bytes: int
    pid: int


@dataclass(frozen=True)
class GpuLayout:
    """A GPU to partition, its layout (largest instance first) and who goes where."""

    gpu_index: int
    model: str  # fleet-file model key, e.g. "A100-SXM4-80GB"
    instances: tuple[AssignedInstance, ...]

    @property
    def profiles(self) -> tuple[str, ...]:
        return tuple(i.profile for i in self.instances)


@dataclass(frozen=True)
class Unplaced:
    """A workload the advice could not fit into an instance, and why."""

    pid: int
    reason: str


@dataclass(frozen=True)
class RemediateStep:
    """One ``mig-exporter remediate`` run: GPUs that take the same layout go in one command."""

    gpu_indices: tuple[int, ...]
    layout: tuple[str, ...]

    def argv(self, fleet: str | None = None) -> tuple[str, ...]:
        """The command's arguments; ``fleet`` is the ``--fleet`` diagnose ran on, if any."""
        fleet_args = ("--fleet", fleet) if fleet is not None else ()
        return (
            "mig-exporter", "remediate", *fleet_args,
            "--gpu", ",".join(str(i) for i in self.gpu_indices),
            "--layout", ",".join(self.layout),
        )

    def command(self, fleet: str | None = None) -> str:
        return shlex.join(self.argv(fleet))


@dataclass(frozen=True)
class Advice:
    """The host-level plan: partition ``layouts``, which frees ``freed_gpus``."""

    headroom_ratio: float
    workloads: tuple[Workload, ...]
    layouts: tuple[GpuLayout, ...]
    freed_gpus: tuple[int, ...]  # GPUs the workloads leave and no instance is advised on
    unplaced: tuple[Unplaced, ...]
    steps: tuple[RemediateStep, ...]


def needed_bytes(used_bytes: int, headroom_ratio: float) -> int:
    return int(used_bytes * (1 + headroom_ratio))


def process_memory_totals(snapshot: Snapshot) -> dict[int, int | None]:
    """pid → bytes it holds over all physical GPUs; None when any of its figures is missing,
    because a partial sum would size an instance too small."""
    totals: dict[int, int | None] = {}
    for process in snapshot.processes:
        so_far = totals.get(process.pid, 0)
        if so_far is None or process.used_memory_bytes is None:
            totals[process.pid] = None
        else:
            totals[process.pid] = so_far + process.used_memory_bytes
    return totals


def gpu_model(gpu: Gpu) -> GpuModel | None:
    """The MIG-capable model of a GPU, or None when MIG cannot be advised on it."""
    if gpu.lost or not gpu.mig_supported or gpu.name is None:
        return None
    return model_by_nvml_name(gpu.name)


def smallest_profile(model: GpuModel, needed: int) -> GpuInstanceProfile | None:
    """The profile with the least memory that holds ``needed`` bytes, fewest slices on a tie
    (3g.40gb before 4g.40gb). ``+me`` variants are left out: same memory as the plain 1g, but one
    per GPU, and their media engines buy a compute workload nothing.

    The smallest is also the easiest to place: in every table a smaller profile occupies no more
    memory slices and has at least as many valid starts, so no larger choice can make a layout fit
    that the smallest did not.
    """
    fitting = [p for p in model.profiles if not p.name.endswith("+me") and p.memory_mib * MIB >= needed]
    return min(fitting, key=lambda p: (p.memory_mib, p.slice_count), default=None)


def _ordered(instances: Iterable[tuple[GpuInstanceProfile, int]]) -> tuple[AssignedInstance, ...]:
    """Largest instance first, then by pid: the order ``nvidia-smi mig -lgi`` readers expect."""
    ranked = sorted(instances, key=lambda item: (-item[0].memory_mib, -item[0].slice_count, item[1]))
    return tuple(AssignedInstance(p.name, p.memory_mib * MIB, pid) for p, pid in ranked)


def advised_layout(
    snapshot: Snapshot, gpu_index: int, headroom_ratio: float = DEFAULT_HEADROOM_RATIO
) -> tuple[str, ...] | None:
    """For a GPU shared without MIG: one instance per process on it, each the smallest profile of
    the GPU's model that holds the process's total memory over all GPUs plus the headroom.

    None when the GPU is not shared without MIG, has no MIG-capable model, a process's memory is
    unknown, or the instances do not fit together on it.
    """
    gpu = snapshot.gpu(gpu_index)
    model = gpu_model(gpu)
    if model is None or not is_unpartitioned_sharing(gpu):
        return None
    totals = process_memory_totals(snapshot)
    chosen: list[tuple[GpuInstanceProfile, int]] = []
    for pid in sorted(gpu.pids):
        used = totals[pid]
        profile = None if used is None else smallest_profile(model, needed_bytes(used, headroom_ratio))
        if profile is None:
            return None
        chosen.append((profile, pid))
    if pack(model, (), [p for p, _ in chosen]) is None:
        return None
    return tuple(i.profile for i in _ordered(chosen))


def advise(snapshot: Snapshot, headroom_ratio: float = DEFAULT_HEADROOM_RATIO) -> Advice | None:
    """The host-level advice, or None when no GPU is shared without MIG.

    The workloads are the processes on GPUs shared without MIG. They are packed, largest first,
    into as few of the GPUs they occupy as possible (first fit in index order), each GPU taking the
    profiles of its own model. GPUs the workloads leave empty are freed for other work.
    """
    shared = [g for g in snapshot.gpus if is_unpartitioned_sharing(g)]
    if not shared:
        return None
    workload_pids = sorted({pid for g in shared for pid in g.pids})
    workloads = _workloads(snapshot, workload_pids, headroom_ratio)
    affected = sorted({i for w in workloads for i in w.gpu_indices})
    hosts = [snapshot.gpu(i) for i in affected if not snapshot.gpu(i).mig_enabled]
    models = {g.index: m for g in hosts if (m := gpu_model(g)) is not None}

    assigned: dict[int, list[tuple[GpuInstanceProfile, int]]] = {i: [] for i in models}
    unplaced: list[Unplaced] = []
    for workload in sorted(workloads, key=lambda w: (-(w.needed_bytes or 0), w.pid)):
        if workload.needed_bytes is None:
            unplaced.append(Unplaced(workload.pid, "NVML reported no memory figure for it, so no "
                                                   "instance can be sized"))
            continue
        target = _first_fit(models, assigned, workload.needed_bytes)
        if target is None:
            unplaced.append(Unplaced(workload.pid, _why_no_room(models, workload.needed_bytes)))
            continue
        gpu_index, profile = target
        assigned[gpu_index].append((profile, workload.pid))

    layouts = tuple(
        GpuLayout(i, models[i].key, _ordered(chosen)) for i, chosen in sorted(assigned.items()) if chosen
    )
    stuck = {i for u in unplaced for w in workloads if w.pid == u.pid for i in w.gpu_indices}
    hosting = {layout.gpu_index for layout in layouts}
    freed = tuple(i for i in affected if i not in hosting and i not in stuck and not snapshot.gpu(i).lost)
    return Advice(
        headroom_ratio=headroom_ratio,
        workloads=workloads,
        layouts=layouts,
        freed_gpus=freed,
        unplaced=tuple(sorted(unplaced, key=lambda u: u.pid)),
        steps=_steps(layouts),
    )


def _workloads(snapshot: Snapshot, pids: Sequence[int], headroom_ratio: float) -> tuple[Workload, ...]:
    totals = process_memory_totals(snapshot)
    out = []
    for pid in pids:
        mine = [p for p in snapshot.processes if p.pid == pid]
        used = totals[pid]
        out.append(
            Workload(
                pid=pid,
                name=next((p.name for p in mine if p.name), None),
                gpu_indices=tuple(sorted({p.gpu_index for p in mine})),
                used_bytes=used,
                needed_bytes=None if used is None else needed_bytes(used, headroom_ratio),
            )
        )
    return tuple(out)


def _first_fit(
    models: dict[int, GpuModel],
    assigned: dict[int, list[tuple[GpuInstanceProfile, int]]],
    needed: int,
) -> tuple[int, GpuInstanceProfile] | None:
    for gpu_index in sorted(models):
        model = models[gpu_index]
        profile = smallest_profile(model, needed)
        if profile is None:
            continue
        if pack(model, (), [p for p, _ in assigned[gpu_index]] + [profile]) is not None:
            return gpu_index, profile
    return None


def _why_no_room(models: dict[int, GpuModel], needed: int) -> str:
    need = f"{needed / (1024 * MIB):.1f} GiB with headroom"
    if not models:
        return f"needs {need}, and none of its GPUs can take MIG instances"
    if all(smallest_profile(m, needed) is None for m in models.values()):
        return f"needs {need}, more than the largest MIG instance of its GPUs: give it a whole GPU"
    return f"needs {need}, and its GPUs have no room left for another instance"


def _steps(layouts: Sequence[GpuLayout]) -> tuple[RemediateStep, ...]:
    by_layout: dict[tuple[str, ...], list[int]] = {}
    for layout in layouts:
        by_layout.setdefault(layout.profiles, []).append(layout.gpu_index)
    return tuple(RemediateStep(tuple(gpus), profiles) for profiles, gpus in by_layout.items())
