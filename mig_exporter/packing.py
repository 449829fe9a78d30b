"""The placement search: where each new GPU instance goes, so that creating them never fails.

The driver's own placement depends on creation order (mig-facts.md: 19,19,14,9 fails where
9,19,14,19 succeeds), and mig-parted gives up when every order fails. Searching the placements
up front, around the instances that stay, finds a fit whenever one exists and lets every creation
name its placement explicitly. GPUs have at most 8 memory slices, so an exhaustive backtracking
search is instant.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from mig_exporter.capability import GpuInstanceProfile, MigCapability


@dataclass(frozen=True)
class Slot:
    """A GPU instance on the memory slices: one that exists or one to create."""

    profile_id: int
    profile: str
    start: int
    size: int

    @classmethod
    def of(cls, profile: GpuInstanceProfile, start: int) -> Slot:
        return cls(profile.id, profile.name, start, profile.placement_size)

    @property
    def slices(self) -> range:
        return range(self.start, self.start + self.size)

    def overlaps(self, other: Slot) -> bool:
        return self.start < other.start + other.size and other.start < self.start + self.size

    def __str__(self) -> str:
        return f"{self.profile}@{self.start}"


def search_order(wanted: Sequence[GpuInstanceProfile]) -> list[GpuInstanceProfile]:
    """Largest first, then the most constrained: big instances have the fewest valid starts."""
    return sorted(wanted, key=lambda p: (-p.placement_size, len(p.placement_starts), p.id))


def pack(
    capability: MigCapability, fixed: Sequence[Slot], wanted: Sequence[GpuInstanceProfile],
) -> tuple[Slot, ...] | None:
    """Placements for ``wanted`` beside ``fixed``, in creation order; None when no placement fits.

    Starts are tried from the highest down, as the driver itself places (3g@4 before 3g@0 on an
    empty A100, which gives GPU instance IDs 2 then 1 as in the incident).
    """
    order = search_order(wanted)
    counts = Counter(slot.profile_id for slot in fixed)

    def place(position: int, placed: list[Slot]) -> list[Slot] | None:
        if position == len(order):
            return placed
        profile = order[position]
        if counts[profile.id] + sum(s.profile_id == profile.id for s in placed) >= profile.max_count:
            return None
        previous = placed[-1] if placed and placed[-1].profile_id == profile.id else None
        for start in sorted(profile.placement_starts, reverse=True):
            # identical profiles are interchangeable: trying them in one order only keeps the search small
            if previous is not None and start >= previous.start:
                continue
            slot = Slot.of(profile, start)
            if any(slot.overlaps(other) for other in (*fixed, *placed)):
                continue
            found = place(position + 1, [*placed, slot])
            if found is not None:
                return found
        return None

    result = place(0, [])
    return None if result is None else tuple(result)


def misfit_reason(
    capability: MigCapability, fixed: Sequence[Slot], wanted: Sequence[GpuInstanceProfile],
) -> str:
    """Why ``wanted`` does not fit beside ``fixed``: the first profile that finds no room, and why.

    E.g. ``no memory slice left for another 1g.10gb (taken: 3g.40gb@4, 3g.40gb@0)``.
    """
    order = search_order(wanted)
    placed: tuple[Slot, ...] = ()
    for length in range(1, len(order) + 1):
        attempt = pack(capability, fixed, order[:length])
        if attempt is None:
            return _why_not(capability, (*fixed, *placed), order[length - 1])
        placed = attempt
    raise ValueError("misfit_reason called for a layout that fits")


def _why_not(capability: MigCapability, taken: Sequence[Slot], profile: GpuInstanceProfile) -> str:
    if sum(slot.profile_id == profile.id for slot in taken) >= profile.max_count:
        return f"at most {profile.max_count} {profile.name} fit on this GPU (NVML's instance count)"
    used = {index for slot in taken for index in slot.slices}
    listing = ", ".join(str(slot) for slot in taken) or "nothing"
    if len(used) + profile.placement_size > capability.memory_slices:
        return f"no memory slice left for another {profile.name} (taken: {listing})"
    starts = ", ".join(str(start) for start in profile.placement_starts)
    return (f"no free place for another {profile.name}: it needs {profile.placement_size} memory slice(s) "
            f"starting at {starts} (taken: {listing})")
