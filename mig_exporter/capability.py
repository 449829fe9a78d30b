"""What a GPU can do with MIG, as NVML reported it, and how a profile name given by a person is
matched against it.

The reader (``mig_exporter.nvml.capability``) fills a ``MigCapability`` once per GPU and NVML
session: every GPU instance profile with its driver ID, sizes, engines and valid placements, and
the compute-instance profiles inside each. ``remediate``, the advice and ``diagnose`` take their
profiles only from here, never from a table keyed by the GPU's name: a GPU no table knows, or a
driver that reports other sizes or IDs, is planned as the GPU itself says (mig-parted asks the
device too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mig_exporter.model import Gpu


@dataclass(frozen=True)
class ComputeInstanceProfile:
    """One row of ``nvidia-smi mig -lcip`` for a GPU instance profile."""

    id: int  # what nvmlGpuInstanceCreateComputeInstance takes
    slice_count: int  # compute slices: the "1" of 1c.3g.40gb
    instance_count: int  # how many fit in an empty GPU instance
    multiprocessors: int
    name: str | None = None  # "1c.3g.40gb"; None from drivers whose info struct has no name


@dataclass(frozen=True)
class GpuInstanceProfile:
    """One row of ``nvidia-smi mig -lgip`` with its placements (``-lgipp``)."""

    enum: int  # NVML_GPU_INSTANCE_PROFILE_* that GetGpuInstanceProfileInfo answered to
    id: int  # the driver's profile ID, taken by every other call
    name: str  # "3g.40gb", "1g.24gb+gfx"
    memory_mib: int
    multiprocessors: int
    slice_count: int  # compute slices (the "3" of 3g)
    max_count: int  # instanceCount: how many fit on an empty GPU
    copy_engines: int
    decoders: int
    encoders: int
    jpeg: int
    ofa: int
    placement_starts: tuple[int, ...]  # valid starts, in memory slices
    placement_size: int  # memory slices occupied
    # NVML lists compute-instance profiles only through an existing GPU instance of this profile:
    # None until one has been seen in this session (the reader never creates one to ask).
    compute_profiles: tuple[ComputeInstanceProfile, ...] | None = None

    # Cached: the advice asks these for every profile of every GPU for each workload it places
    # (558,628 parses for one advice on 10k processes before; the name never changes).
    @cached_property
    def variant(self) -> str:
        """The engine variant of the name: ``+me``, ``+me.all``, ``+gfx``, ``-me``, or ``""``."""
        parsed = parse_profile_name(self.name)
        return "" if parsed is None else parsed.variant

    @cached_property
    def memory_class_gb(self) -> int | None:
        """The memory class in the name: 40 for ``3g.40gb``, 10 for ``1g.10gb+me``."""
        parsed = parse_profile_name(self.name)
        return None if parsed is None else parsed.gb

    def compute_slice_options(self) -> tuple[int, ...]:
        """Sizes of the compute instances this GPU instance can hold: as NVML listed them, or,
        before NVML could be asked (no instance of the profile yet), the MIG user guide's rule
        (mig-facts.md, "Compute instances"): C == G, or C < G and 2C <= G + 1. The write side asks
        NVML for the compute profile when it creates one, and the run is undone if NVML refuses."""
        if self.compute_profiles is not None:
            return tuple(sorted(p.slice_count for p in self.compute_profiles))
        g = self.slice_count
        return tuple(c for c in range(1, g + 1) if c == g or 2 * c <= g + 1)


@dataclass(frozen=True)
class MigCapability:
    """Every GPU instance profile one GPU offers, in NVML's enum order."""

    profiles: tuple[GpuInstanceProfile, ...]
    architecture: str | None = None  # "ampere", "hopper", "blackwell"…; None: NVML did not say

    @property
    def memory_slices(self) -> int:
        """Placement slots on the GPU: where the last placement of any profile ends (8 on A100)."""
        return max((s + p.placement_size for p in self.profiles for s in p.placement_starts), default=0)

    @property
    def compute_slices(self) -> int:
        """Compute slices on the GPU: those of its largest profile (7 on A100)."""
        return max((p.slice_count for p in self.profiles), default=0)

    def profile_by_id(self, profile_id: int) -> GpuInstanceProfile | None:
        return next((p for p in self.profiles if p.id == profile_id), None)

    def profile_by_enum(self, enum: int) -> GpuInstanceProfile | None:
        return next((p for p in self.profiles if p.enum == enum), None)


def capability_of(gpu: Gpu) -> MigCapability | None:
    """What a Snapshot's GPU can be partitioned into, or None when it cannot (no MIG, lost, or
    NVML listed no profile). ``remediate`` plans and the advice sizes with it, so both take the
    same GPUs for MIG-capable."""
    if gpu.lost or not gpu.mig_supported or gpu.mig_capability is None or not gpu.mig_capability.profiles:
        return None
    return gpu.mig_capability


@dataclass(frozen=True)
class ProfileName:
    """A MIG device name taken apart: ``1c.3g.40gb+me`` → compute 1, slices 3, gb 40, ``+me``."""

    compute: int | None
    slices: int
    gb: int | None
    variant: str


_NAME_RE = re.compile(
    r"^(?:(?P<c>\d+)c\.)?(?P<g>\d+)g(?:\.(?P<gb>\d+)gb)?(?P<variant>\+me\.all|\+me|\+gfx|-me)?$", re.ASCII)


def parse_profile_name(name: str) -> ProfileName | None:
    m = _NAME_RE.match(name.strip().lower())
    if m is None:
        return None
    return ProfileName(
        compute=None if m.group("c") is None else int(m.group("c")), slices=int(m.group("g")),
        gb=None if m.group("gb") is None else int(m.group("gb")), variant=m.group("variant") or "")


def match_profile(capability: MigCapability, wanted: str) -> GpuInstanceProfile | None:
    """Resolve a GPU instance profile name as the driver writes it or in its short form.

    Names are matched by slice count, engine variant and memory class, not by exact string,
    because the driver computes names from memory sizes that drift (mig-parted saw "3g.39gb";
    mig-facts.md). So ``3g``, ``3g.40gb`` and ``3g.39gb`` all resolve to the 3-slice profile of an
    A100-80GB. A bare ``1g`` means the plain 1-slice profile with the least memory, not a variant
    (``+me``, ``+me.all``, ``+gfx``, ``-me``) or the double-memory one.
    """
    parsed = parse_profile_name(wanted)
    if parsed is None or parsed.compute is not None:
        return None
    candidates = [p for p in capability.profiles
                  if p.slice_count == parsed.slices and p.variant == parsed.variant]
    if not candidates:
        return None
    if parsed.gb is None:
        return min(candidates, key=lambda p: p.memory_mib)
    gb = parsed.gb
    classed = [p for p in candidates if p.memory_class_gb is not None]
    if not classed:
        return None
    # the profile whose advertised GB is nearest; drift is a GB or two, classes differ by 2x
    best = min(classed, key=lambda p: abs((p.memory_class_gb or 0) - gb))
    advertised = best.memory_class_gb or 0
    return best if abs(advertised - gb) <= max(2, advertised // 10) else None
