"""Profile name resolution and compute-instance sizes (mig-facts.md, "Per-model tables" and
"Compute instances"). The numbers of each table are checked through NVML in tests/sim."""

import pytest

from mig_exporter.profiles import MODELS, match_profile, model_by_nvml_name, valid_compute_slices

A100_80 = MODELS["A100-SXM4-80GB"]


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ("3g.40gb", "3g.40gb"),
        ("3g", "3g.40gb"),  # short form, resolved per model
        ("3g.39gb", "3g.40gb"),  # driver drift (mig-parted #31): matched by slice count and memory class
        ("1g", "1g.10gb"),  # bare 1g is the plain 1-slice profile, not +me nor double memory
        ("1g.20gb", "1g.20gb"),  # double-memory 1g (ID 15)
        ("1g.10gb+me", "1g.10gb+me"),
        ("7G.80GB", "7g.80gb"),
    ],
)
def test_names_resolve_on_a100_80gb(wanted, expected):
    profile = match_profile(A100_80, wanted)
    assert profile is not None and profile.name == expected


@pytest.mark.parametrize("wanted", ["2g.10gb", "3g.20gb", "5g", "1c.3g.40gb", "banana", ""])
def test_names_of_another_memory_class_or_no_profile_are_refused(wanted):
    assert match_profile(A100_80, wanted) is None


def test_same_short_name_maps_per_model():
    """mig-parted #157: one name, different profiles on mixed GPUs. ``3g`` is 3g.40gb on an
    A100-80GB, 3g.20gb on an A100-40GB, 3g.71gb on an H200; A30 has no 3-slice profile."""
    assert match_profile(MODELS["A100-SXM4-40GB"], "3g").name == "3g.20gb"
    assert match_profile(MODELS["H200"], "3g").name == "3g.71gb"
    assert match_profile(MODELS["A30"], "3g") is None
    assert match_profile(MODELS["A30"], "2g").name == "2g.12gb"


def test_incident_profile_numbers():
    """The incident: 3g.40gb is profile ID 9, 40192 MiB, 42 SMs, placements {0,4}:4."""
    profile = match_profile(A100_80, "3g.40gb")
    assert (profile.id, profile.memory_mib, profile.multiprocessors) == (9, 40192, 42)
    assert (profile.placement_starts, profile.placement_size, profile.max_count) == ((0, 4), 4, 2)


@pytest.mark.parametrize(
    ("gpu_instance_slices", "compute_slices"),
    [(7, (1, 2, 3, 4, 7)), (4, (1, 2, 4)), (3, (1, 2, 3)), (2, (1, 2)), (1, (1,))],
)
def test_valid_compute_instance_sizes(gpu_instance_slices, compute_slices):
    """C = G, or C < G and 2C <= G + 1."""
    assert valid_compute_slices(gpu_instance_slices) == compute_slices


def test_models_are_found_by_the_name_nvml_reports():
    for model in MODELS.values():
        assert model_by_nvml_name(model.nvml_name) is model
    assert model_by_nvml_name("NVIDIA GeForce RTX 4090") is None
