"""Profile name resolution against a GPU's MIG capability (mig-facts.md, "Per-model tables",
"Newer models" and "Compute instances"). Capabilities of built-in models are read through the
simulator; the Blackwell names come from a hand-built capability, as NVML would report it."""

from __future__ import annotations

import pytest
from simulated_gpus import capability

from mig_exporter.capability import GpuInstanceProfile, MigCapability, match_profile


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ("3g.40gb", "3g.40gb"),
        ("3g", "3g.40gb"),  # short form, resolved per GPU
        ("3g.39gb", "3g.40gb"),  # driver drift (mig-parted #31): matched by slice count and memory class
        ("1g", "1g.10gb"),  # bare 1g is the plain 1-slice profile, not +me nor double memory
        ("1g.20gb", "1g.20gb"),  # double-memory 1g (ID 15)
        ("1g.10gb+me", "1g.10gb+me"),
        ("1g+me", "1g.10gb+me"),
        ("7G.80GB", "7g.80gb"),
    ],
)
def test_names_resolve_on_a100_80gb(wanted: str, expected: str) -> None:
    profile = match_profile(capability("A100-SXM4-80GB"), wanted)
    assert profile is not None and profile.name == expected


@pytest.mark.parametrize("wanted", ["2g.10gb", "3g.20gb", "5g", "1c.3g.40gb", "3g+gfx", "banana", ""])
def test_names_of_another_memory_class_or_no_profile_are_refused(wanted: str) -> None:
    assert match_profile(capability("A100-SXM4-80GB"), wanted) is None


def test_same_short_name_maps_per_gpu() -> None:
    """mig-parted #157: one name, different profiles on mixed GPUs. ``3g`` is 3g.40gb on an
    A100-80GB, 3g.20gb on an A100-40GB, 3g.71gb on an H200; A30 has no 3-slice profile."""
    assert getattr(match_profile(capability("A100-SXM4-40GB"), "3g"), "name", None) == "3g.20gb"
    assert getattr(match_profile(capability("H200"), "3g"), "name", None) == "3g.71gb"
    assert match_profile(capability("A30"), "3g") is None
    assert getattr(match_profile(capability("A30"), "2g"), "name", None) == "2g.12gb"


def blackwell_1g(name: str, enum: int, profile_id: int, max_count: int) -> GpuInstanceProfile:
    return GpuInstanceProfile(enum=enum, id=profile_id, name=name, memory_mib=24192, multiprocessors=46,
                              slice_count=1, max_count=max_count, copy_engines=1, decoders=1, encoders=1,
                              jpeg=1, ofa=1, placement_starts=(0, 1, 2, 3), placement_size=1)


# mig-facts.md "Newer models", RTX PRO 6000 Blackwell: 1g.24gb ID 14, +me 21, +gfx 47, +me.all 65,
# -me 67 (enums 1_SLICE, REV1, GFX 0xA, ALL_ME 0xF, NO_ME 0xD). The variants' counts are assumed.
RTX_PRO_6000 = MigCapability(profiles=(
    blackwell_1g("1g.24gb", 0x0, 14, 4), blackwell_1g("1g.24gb+me", 0x7, 21, 1),
    blackwell_1g("1g.24gb+gfx", 0xA, 47, 4), blackwell_1g("1g.24gb+me.all", 0xF, 65, 1),
    blackwell_1g("1g.24gb-me", 0xD, 67, 4),
), architecture="blackwell")


@pytest.mark.parametrize(("wanted", "profile_id"), [
    ("1g", 14), ("1g.24gb", 14), ("1g.23gb", 14), ("1g+me", 21), ("1g.24gb+gfx", 47), ("1g+gfx", 47),
    ("1g.24gb+me.all", 65), ("1g-me", 67), ("1g.24gb-me", 67),
])
def test_blackwell_engine_variants_are_matched_by_their_suffix(wanted: str, profile_id: int) -> None:
    profile = match_profile(RTX_PRO_6000, wanted)
    assert profile is not None and profile.id == profile_id


def test_variant_and_memory_class_come_from_the_name() -> None:
    assert [(p.variant, p.memory_class_gb) for p in RTX_PRO_6000.profiles] == [
        ("", 24), ("+me", 24), ("+gfx", 24), ("+me.all", 24), ("-me", 24)]


def test_geometry_is_derived_from_what_nvml_reported() -> None:
    """Placements end at the last memory slice: 8 on A100, 4 on A30 and this Blackwell board."""
    assert (capability("A100-SXM4-80GB").memory_slices, capability("A100-SXM4-80GB").compute_slices) == (8, 7)
    assert (capability("A30").memory_slices, capability("A30").compute_slices) == (4, 4)
    assert RTX_PRO_6000.memory_slices == 4


@pytest.mark.parametrize(
    ("name", "compute_slices"),
    [("7g.80gb", (1, 2, 3, 4, 7)), ("4g.40gb", (1, 2, 4)), ("3g.40gb", (1, 2, 3)), ("2g.20gb", (1, 2)),
     ("1g.10gb", (1,))],
)
def test_compute_sizes_before_nvml_can_be_asked(name: str, compute_slices: tuple[int, ...]) -> None:
    """No GPU instance exists, so the user guide's rule stands in: C = G, or C < G and 2C <= G + 1."""
    profile = match_profile(capability("A100-SXM4-80GB"), name)
    assert profile is not None and profile.compute_profiles is None
    assert profile.compute_slice_options() == compute_slices
