"""What the driver decides on its own: where a GPU instance goes, which ID it gets, where compute
instances go, and how much memory the driver keeps for itself. Pure functions of the state.

GPU instance IDs (observed, mig-facts.md): 7g@0→0; 4g@0 or 3g@0→1, 3g@4→2; 2g@0,2,4→3,4,5;
1g@k→7+k. These are the nodes of a binary tree over the memory slices, numbered breadth first:
the span of ``size`` slices at ``start`` is node ``slices/size - 1 + start/size``. The same rule
gives the double-memory 1g (two slices) the IDs of the 2g at the same start (3..6), and the A30
(four slices) 4g→0, 2g→1,2, 1g→3..6.

Auto-placement (``nvmlDeviceCreateGpuInstance`` without a placement): the driver picks, among the
free valid starts, the one that blocks the fewest placements still possible for any profile of
the model (best fit: keep the most options open), the lowest start on a tie. This reproduces every
vector of mig-facts.md (19,14,5 → 1g@6, 2g@4, 4g@0; 14 then five 19 → 2g@4 then 1g@6,0,1,2,3;
9 twice → 3g@4 then 3g@0; 19,19,14,9 fails while 9,19,14,19 succeeds) and NVIDIA's user guide
example of seven 1g.5gb instances getting IDs 13,11,12,7,8,9,10 (starts 6,4,5,0,1,2,3).

Compute instances (mig-facts.md gives sizes, not placements; this is our rule): a compute instance
of C slices starts at a multiple of the next power of two ≥ C and fits in the GPU instance; the
lowest free start is taken; its ID is its start, so a full-size compute instance is ID 0.

Memory the driver uses with no process: the incident shows 107 MiB used on an idle 3g.40gb (4
memory slices) and 213 MiB on the partitioned A100 (8 slices): 213 MiB per 8 memory slices held
by GPU instances, each level reporting its share rounded to a whole MiB. An idle GPU without MIG
shows 4 MiB (as nvidia-smi does on an idle A100). This is the ``used`` nvidia-smi shows (NVML's
memory info v2); the driver's hidden reservation (v2 ``reserved``) is not modelled and reads 0.
"""

from __future__ import annotations

from collections.abc import Iterable

from mig_exporter.sim.models import GpuInstanceProfile, GpuModel
from mig_exporter.sim.state import SimComputeInstance, SimGpu, SimGpuInstance

MIG_OVERHEAD_MIB_PER_8_SLICES = 213
NON_MIG_OVERHEAD_MIB = 4


def gpu_instance_id(model: GpuModel, profile: GpuInstanceProfile, start: int) -> int:
    size = profile.placement_size
    return model.memory_slices // size - 1 + start // size


def memory_span(profile: GpuInstanceProfile, start: int) -> range:
    return range(start, start + profile.placement_size)


def occupied_slices(model: GpuModel, instances: Iterable[SimGpuInstance]) -> set[int]:
    taken: set[int] = set()
    for gi in instances:
        profile = model.profile_by_id(gi.profile_id)
        if profile is not None:
            taken.update(memory_span(profile, gi.start))
    return taken


def free_starts(
    model: GpuModel, instances: Iterable[SimGpuInstance], profile: GpuInstanceProfile
) -> list[int]:
    """Valid starts of ``profile`` whose memory slices are all free."""
    taken = occupied_slices(model, instances)
    return [s for s in profile.placement_starts if taken.isdisjoint(memory_span(profile, s))]


def remaining_capacity(
    model: GpuModel, instances: tuple[SimGpuInstance, ...], profile: GpuInstanceProfile
) -> int:
    """How many more instances of ``profile`` fit: the free starts (the spans of one profile never
    overlap each other), capped by the profile's instance count less those there, and by the
    compute slices left. The last cap never binds on the built-in models (their placements use
    at most all compute slices) but does on a fleet-defined model with fewer compute than memory
    slices."""
    existing = sum(1 for gi in instances if gi.profile_id == profile.id)
    return max(0, min(len(free_starts(model, instances, profile)), profile.max_count - existing,
                      free_compute_slices(model, instances) // profile.slice_count))


def free_compute_slices(model: GpuModel, instances: Iterable[SimGpuInstance]) -> int:
    used = 0
    for gi in instances:
        profile = model.profile_by_id(gi.profile_id)
        used += profile.slice_count if profile is not None else 0
    return model.compute_slices - used


def auto_placement(
    model: GpuModel, instances: tuple[SimGpuInstance, ...], profile: GpuInstanceProfile
) -> int | None:
    """The start the driver picks for ``profile``, or None when it does not fit (see module doc)."""
    if remaining_capacity(model, instances, profile) == 0:
        return None
    taken = occupied_slices(model, instances)
    still_possible = [
        set(memory_span(p, s))
        for p in model.profiles
        for s in p.placement_starts
        if taken.isdisjoint(memory_span(p, s))
    ]

    def blocked(start: int) -> int:
        span = set(memory_span(profile, start))
        return sum(1 for other in still_possible if not other.isdisjoint(span))

    return min(free_starts(model, instances, profile), key=lambda s: (blocked(s), s))


def compute_starts(gpu_instance_slices: int, compute_slices: int) -> tuple[int, ...]:
    """Valid starts of a compute instance of ``compute_slices`` inside a GPU instance."""
    align = 1
    while align < compute_slices:
        align *= 2
    return tuple(s for s in range(0, gpu_instance_slices, align) if s + compute_slices <= gpu_instance_slices)


def free_compute_starts(
    gpu_instance_slices: int, existing: Iterable[SimComputeInstance], compute_slices: int
) -> list[int]:
    taken = {s for ci in existing for s in range(ci.start, ci.start + ci.slices)}
    return [
        s
        for s in compute_starts(gpu_instance_slices, compute_slices)
        if taken.isdisjoint(range(s, s + compute_slices))
    ]


def compute_multiprocessors(model: GpuModel, profile: GpuInstanceProfile, compute_slices: int) -> int:
    """SMs of a compute instance: all of the GPU instance's when full size, else the model's 1g
    SMs per slice (A100: 14 per slice, so 1c.3g has 14 and 2c.3g 28; unconfirmed for H100/H200).
    A model whose enum 0 is no 1-slice profile (one a fleet file defines) shares the GPU
    instance's SMs evenly per compute slice."""
    one_slice = model.profile_by_enum(0)
    if compute_slices >= profile.slice_count:
        return profile.multiprocessors
    if one_slice is None or one_slice.slice_count != 1:
        return profile.multiprocessors * compute_slices // profile.slice_count
    return min(profile.multiprocessors, one_slice.multiprocessors * compute_slices)


def mig_overhead_mib(memory_slices: int) -> int:
    """MiB the driver uses on ``memory_slices`` slices of GPU instances, rounded half up
    (4 → 107, 8 → 213)."""
    return (2 * MIG_OVERHEAD_MIB_PER_8_SLICES * memory_slices + 8) // 16


def gpu_memory_used_mib(gpu: SimGpu) -> int:
    """The whole GPU's used memory: the fleet file's figure when it gives one, else the processes
    plus the driver's overhead (see module doc)."""
    if gpu.memory_used_mib is not None:
        return gpu.memory_used_mib
    processes = sum(p.used_memory_mib for p in gpu.all_processes)
    if gpu.mig.current:
        return mig_overhead_mib(len(occupied_slices(gpu.model, gpu.instances))) + processes
    return NON_MIG_OVERHEAD_MIB + processes


def gpu_instance_memory_used_mib(profile: GpuInstanceProfile, gpu_instance: SimGpuInstance) -> int:
    """A MIG device's used memory: its GPU instance's (compute instances share it)."""
    return mig_overhead_mib(profile.placement_size) + sum(p.used_memory_mib for p in gpu_instance.processes)
