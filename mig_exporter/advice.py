"""Right-sized MIG advice: which instance each workload needs, and on which GPU.

A GPU shared without MIG gives its processes no isolation; MIG gives each one its own memory and
SMs. The advice sizes one instance per workload from what the workload holds now (its total over
every physical GPU, since a process spread over four GPUs needs all of it in one instance once it
is pinned) plus a headroom, and picks the smallest profile the GPU offers (its MIG capability, as
NVML reported it) that holds it. A workload NVML sampled computing (per-process SM utilization,
GPUs without MIG) is sized for its compute too: its instance must also have at least its share of
the GPU's SMs plus the same headroom in compute slices, so three workloads each computing on a
fifth of a GPU get 2g instances, not the 1g their memory alone would take. The layout is
checked with the placement search ``remediate`` itself uses (``mig_exporter.packing``),
so the advice is never a layout remediate would refuse. Pure: the exporter's
``mig_exporter_advised_layout_info`` series and ``diagnose`` both read it from a Snapshot.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mig_exporter.capability import GpuInstanceProfile, MigCapability, capability_of
from mig_exporter.findings import is_unpartitioned_sharing, process_gpus, sharing_read
from mig_exporter.model import Gpu, Snapshot
from mig_exporter.packing import pack
from mig_exporter.units import MIB

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
    # Share of one GPU's SMs it computes on now (NVML's samples summed over its GPUs); None: not
    # sampled. Plus the headroom, capped at a whole GPU: the share of compute slices it needs.
    sm_utilization_ratio: float | None = None
    needed_compute_ratio: float | None = None

    @property
    def sizing_rule(self) -> str:
        """Which rule sized its instance, for the report."""
        return "memory" if self.needed_compute_ratio is None else "memory and compute"


@dataclass(frozen=True)
class AssignedInstance:
    """One instance of an advised layout and the workload it is for."""

    profile: str  # the driver's name on that GPU, e.g. "3g.40gb"
    memory_bytes: int
    pid: int


@dataclass(frozen=True)
class GpuLayout:
    """A GPU to partition, its layout (largest instance first) and who goes where."""

    gpu_index: int
    model: str  # the GPU's name as NVML reports it, e.g. "NVIDIA A100-SXM4-80GB"
    instances: tuple[AssignedInstance, ...]

    @property
    def profiles(self) -> tuple[str, ...]:
        return tuple(i.profile for i in self.instances)


@dataclass(frozen=True)
class WholeGpu:
    """A workload no MIG instance can hold, advised onto a GPU of its own (MIG stays off there)."""

    pid: int
    gpu_index: int
    gpu_uuid: str  # for CUDA_VISIBLE_DEVICES, which CUDA may number differently from NVML


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

    def command(self, fleet: str | None = None) -> str:
        """The shell line; ``fleet`` is the ``--fleet`` diagnose ran on, if any (quoted: a fleet
        file's path may hold spaces)."""
        fleet_args = ("--fleet", fleet) if fleet is not None else ()
        return shlex.join((
            "mig-exporter", "remediate", *fleet_args,
            "--gpu", ",".join(str(i) for i in self.gpu_indices),
            "--layout", ",".join(self.layout),
        ))


@dataclass(frozen=True)
class Advice:
    """The host-level plan: partition ``layouts``, give ``whole_gpus``, which frees ``freed_gpus``."""

    headroom_ratio: float
    workloads: tuple[Workload, ...]
    layouts: tuple[GpuLayout, ...]
    whole_gpus: tuple[WholeGpu, ...]
    freed_gpus: tuple[int, ...]  # GPUs the workloads leave and nothing is advised onto
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


def process_names(snapshot: Snapshot) -> dict[int, str]:
    """pid → the first name NVML gave it (a name may be missing on some GPUs)."""
    names: dict[int, str] = {}
    for process in snapshot.processes:
        if process.name:
            names.setdefault(process.pid, process.name)
    return names


def smallest_profile(
    capability: MigCapability, needed: int, compute_ratio: float | None = None,
) -> GpuInstanceProfile | None:
    """The profile with the least memory that holds ``needed`` bytes and, given ``compute_ratio``,
    at least that share of the GPU's compute slices; fewest slices on a tie
    (3g.40gb before 4g.40gb). Engine variants (``+me``, ``+me.all``, ``+gfx``, ``-me``) are left
    out: same memory as the plain profile, often one per GPU, and their engines buy a compute
    workload nothing.

    The smallest is also the easiest to place: in every table a smaller profile occupies no more
    memory slices and has at least as many valid starts, so no larger choice can make a layout fit
    that the smallest did not.
    """
    slices = 0 if compute_ratio is None else math.ceil(compute_ratio * capability.compute_slices - 1e-9)
    fitting = [p for p in capability.profiles
               if not p.variant and p.memory_mib * MIB >= needed and p.slice_count >= slices]
    return min(fitting, key=lambda p: (p.memory_mib, p.slice_count), default=None)


def _ordered(instances: Iterable[tuple[GpuInstanceProfile, int]]) -> tuple[AssignedInstance, ...]:
    """Largest instance first, then by pid: the order ``nvidia-smi mig -lgi`` readers expect."""
    ranked = sorted(instances, key=lambda item: (-item[0].memory_mib, -item[0].slice_count, item[1]))
    return tuple(AssignedInstance(p.name, p.memory_mib * MIB, pid) for p, pid in ranked)


def advise(snapshot: Snapshot, headroom_ratio: float = DEFAULT_HEADROOM_RATIO) -> Advice | None:
    """The host-level advice, or None when no GPU is shared without MIG.

    The workloads are the processes on GPUs shared without MIG. Largest first, each goes into an
    instance on the first GPU, among all the GPUs the workloads occupy with MIG off, that still has
    room (first fit in index order, each GPU with its own profiles), so they fill as
    few GPUs as possible. A workload
    no instance can hold (too large, or no GPU that takes MIG) gets a GPU of its own, whole. The
    GPUs the workloads leave are freed for other work.
    """
    shared = [g for g in snapshot.gpus if is_unpartitioned_sharing(g)]
    # A workload's memory on a GPU whose processes were not read would be missing from its size,
    # a GPU whose MIG mode was not read may be one more shared without MIG, and one whose profiles
    # failed to read may be the one to partition (a lost GPU's processes lost it: they are not
    # sized for it).
    listed = snapshot.gpus_complete and all(sharing_read(g) and "mig_capability" not in g.unread
                                            for g in snapshot.gpus if not g.lost)
    if not shared or not listed:
        return None
    workload_pids = sorted({pid for g in shared for pid in g.pids})
    workloads = _workloads(snapshot, workload_pids, headroom_ratio)
    affected = sorted({i for w in workloads for i in w.gpu_indices})
    hosts = [g for i in affected if not (g := snapshot.gpu(i)).mig_enabled and not g.lost]
    capabilities = {g.index: c for g in hosts if (c := capability_of(g)) is not None}

    # A GPU with no room for its least profile has room for none (see smallest_profile): it is
    # left out of the search, which 10,000 workloads would otherwise repeat on each full GPU.
    least = {i: p.id for i, c in capabilities.items() if (p := smallest_profile(c, 0)) is not None}
    assigned: dict[int, list[tuple[GpuInstanceProfile, int]]] = {i: [] for i in capabilities}
    no_room: set[tuple[int, int]] = set()  # (GPU, profile ID) that no longer fit there
    whole: dict[int, WholeGpu] = {}
    unplaced: list[Unplaced] = []
    for workload in sorted(workloads, key=lambda w: (-(w.needed_bytes or 0), w.pid)):
        needed = workload.needed_bytes
        if needed is None:
            unplaced.append(Unplaced(workload.pid, "NVML reports no memory figure for it: no instance "
                                                   "can be sized"))
            continue
        open_gpus = {i: c for i, c in capabilities.items()
                     if i not in whole and i in least and (i, least[i]) not in no_room}
        target = _first_fit(open_gpus, assigned, no_room, needed, workload.needed_compute_ratio)
        if target is not None:
            gpu_index, profile = target
            assigned[gpu_index].append((profile, workload.pid))
            continue
        own = _free_gpu(hosts, workload, needed, taken={*whole, *(i for i, a in assigned.items() if a)})
        if own is not None:
            whole[own.index] = WholeGpu(workload.pid, own.index, own.uuid)
        else:
            unplaced.append(Unplaced(workload.pid, _why_unplaced(hosts, needed)))

    layouts = tuple(
        GpuLayout(i, snapshot.gpu(i).name or "", _ordered(chosen))
        for i, chosen in sorted(assigned.items()) if chosen
    )
    gpus_of = {w.pid: w.gpu_indices for w in workloads}
    stuck = {i for u in unplaced for i in gpus_of[u.pid]}
    # a MIG GPU a workload leaves may still run other processes in its other instances
    busy = {i for i in affected if not snapshot.gpu(i).pids <= set(workload_pids)}
    kept = {layout.gpu_index for layout in layouts} | set(whole) | stuck | busy
    return Advice(
        headroom_ratio=headroom_ratio,
        workloads=workloads,
        layouts=layouts,
        whole_gpus=tuple(whole[i] for i in sorted(whole)),
        freed_gpus=tuple(i for i in affected if i not in kept and not snapshot.gpu(i).lost),
        unplaced=tuple(sorted(unplaced, key=lambda u: u.pid)),
        steps=_steps(layouts),
    )


def _workloads(snapshot: Snapshot, pids: Sequence[int], headroom_ratio: float) -> tuple[Workload, ...]:
    totals = process_memory_totals(snapshot)
    gpus = process_gpus(snapshot)
    names = process_names(snapshot)
    computing = process_sm_utilization(snapshot)
    return tuple(
        Workload(
            pid=pid,
            name=names.get(pid),
            gpu_indices=gpus[pid],
            used_bytes=totals[pid],
            needed_bytes=None if (used := totals[pid]) is None else needed_bytes(used, headroom_ratio),
            sm_utilization_ratio=computing.get(pid),
            needed_compute_ratio=None if (sm := computing.get(pid)) is None
            else min(1.0, sm * (1 + headroom_ratio)),
        )
        for pid in pids
    )


def process_sm_utilization(snapshot: Snapshot) -> dict[int, float]:
    """pid → the share of one GPU's SMs it computes on, summed over the GPUs NVML sampled it on
    (a process on four GPUs at a quarter each needs a whole GPU's compute once pinned to one)."""
    shares: dict[int, float] = {}
    for process in snapshot.processes:
        if process.sm_utilization_ratio is not None:
            shares[process.pid] = shares.get(process.pid, 0.0) + process.sm_utilization_ratio
    return shares


def _first_fit(
    capabilities: dict[int, MigCapability],
    assigned: dict[int, list[tuple[GpuInstanceProfile, int]]],
    no_room: set[tuple[int, int]],
    needed: int,
    compute_ratio: float | None,
) -> tuple[int, GpuInstanceProfile] | None:
    """The first GPU with room for the smallest profile that holds ``needed`` (and
    ``compute_ratio`` of the GPU's compute).

    A profile that did not fit on a GPU never fits there later (instances are only added), so the
    misses are remembered in ``no_room``: with hundreds of workloads on full GPUs the placement
    search would otherwise run again for each of them.
    """
    for gpu_index in sorted(capabilities):
        capability = capabilities[gpu_index]
        profile = smallest_profile(capability, needed, compute_ratio)
        if profile is None or (gpu_index, profile.id) in no_room:
            continue
        if pack(capability, (), [p for p, _ in assigned[gpu_index]] + [profile]) is not None:
            return gpu_index, profile
        no_room.add((gpu_index, profile.id))
    return None


def _free_gpu(hosts: Sequence[Gpu], workload: Workload, needed: int, taken: set[int]) -> Gpu | None:
    """A GPU no other workload is advised onto and whose memory holds ``needed``; one the workload
    already uses first, so its data need not move."""
    free = [g for g in hosts if g.index not in taken and g.memory_total_bytes is not None
            and g.memory_total_bytes >= needed]
    return min(free, key=lambda g: (g.index not in workload.gpu_indices, g.index), default=None)


def _why_unplaced(hosts: Sequence[Gpu], needed: int) -> str:
    """Said the same way for every workload it applies to, so a report can group them."""
    if all(g.memory_total_bytes is not None and g.memory_total_bytes < needed for g in hosts):
        return "it needs more memory than one whole GPU holds: keep it on GPUs of its own"
    return "no MIG instance or whole GPU is left for it among the GPUs it uses"


def _steps(layouts: Sequence[GpuLayout]) -> tuple[RemediateStep, ...]:
    by_layout: dict[tuple[str, ...], list[int]] = {}
    for layout in layouts:
        by_layout.setdefault(layout.profiles, []).append(layout.gpu_index)
    return tuple(RemediateStep(tuple(gpus), profiles) for profiles, gpus in by_layout.items())
