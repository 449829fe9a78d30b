"""The driver's own choices, through the real pynvml: where a GPU instance goes without a
placement, which GPU instance ID it gets, where compute instances go and their IDs."""

from __future__ import annotations

from typing import Any

import pynvml
import pytest

from sim.conftest import StartNvml
from sim.fleets import fleet, gpu, one_gpu

# Memory slices a GPU instance of each A100 profile ID occupies (mig-facts.md, "Placements").
MEMORY_SLICES = {0: 8, 5: 4, 9: 4, 14: 2, 15: 2, 19: 1, 20: 1}


@pytest.fixture
def a100(start_nvml: StartNvml) -> Any:
    """An idle A100-SXM4-80GB with MIG enabled and no instance."""
    start_nvml(one_gpu())
    return pynvml.nvmlDeviceGetHandleByIndex(0)


def create_in_order(device: Any, profile_ids: list[int]) -> list[tuple[int, int] | str]:
    """(placement start, GPU instance ID) of each creation, or the error's class name."""
    results: list[tuple[int, int] | str] = []
    for profile_id in profile_ids:
        try:
            info = pynvml.nvmlGpuInstanceGetInfo(pynvml.nvmlDeviceCreateGpuInstance(device, profile_id))
        except pynvml.NVMLError as error:
            results.append(type(error).__name__)
            continue
        results.append((info.placement.start, info.id))
    return results


@pytest.mark.parametrize(
    ("profile_ids", "expected"),
    [
        ([19, 14, 5], [(6, 13), (4, 5), (0, 1)]),
        ([14, 19, 19, 19, 19, 19], [(4, 5), (6, 13), (0, 7), (1, 8), (2, 9), (3, 10)]),
        ([9, 9], [(4, 2), (0, 1)]),
    ],
)
def test_auto_placement_reproduces_the_observed_vectors(
    a100: Any, profile_ids: list[int], expected: list[tuple[int, int]]
) -> None:
    """mig-facts.md: "creating 19,14,5 gives 1g@6, 2g@4, 4g@0; creating 14 then five 19s gives 2g@4
    then 1g@6,0,1,2,3; creating 9 twice (the incident) gives 3g@4 (GPU instance ID 2) then 3g@0
    (ID 1)", with "GPU instance IDs follow the placement"."""
    assert create_in_order(a100, profile_ids) == expected


def test_order_matters_19_19_14_9_fails_but_9_19_14_19_succeeds(start_nvml: StartNvml) -> None:
    """mig-facts.md: "Creating 19,19,14,9 without placements fails with INSUFFICIENT_RESOURCES;
    9,19,14,19 succeeds. Order matters"."""
    start_nvml(fleet(gpu(), gpu()))
    first, second = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
    assert create_in_order(first, [19, 19, 14, 9])[-1] == "NVMLError_InsufficientResources"
    assert all(isinstance(result, tuple) for result in create_in_order(second, [9, 19, 14, 19]))


def test_seven_1g_instances_fill_the_gpu_as_nvidias_user_guide_shows(a100: Any) -> None:
    """mig-facts.md: "1g@k→7+k". NVIDIA's MIG user guide creates seven 1g.5gb and gets GPU instance
    IDs 13, 11, 12, 7, 8, 9, 10; an eighth does not fit."""
    results = create_in_order(a100, [19] * 8)
    assert [r[1] for r in results[:7] if isinstance(r, tuple)] == [13, 11, 12, 7, 8, 9, 10]
    assert results[7] == "NVMLError_InsufficientResources"


@pytest.mark.parametrize(
    ("profile_id", "start", "gpu_instance_id"),
    [
        (0, 0, 0),
        (5, 0, 1),
        (9, 0, 1),
        (9, 4, 2),
        (14, 0, 3),
        (14, 2, 4),
        (14, 4, 5),
        *((19, k, 7 + k) for k in range(7)),
        (15, 0, 3),
        (15, 2, 4),
        (15, 4, 5),
        (15, 6, 6),
    ],
)
def test_gpu_instance_id_follows_the_placement(
    a100: Any, profile_id: int, start: int, gpu_instance_id: int
) -> None:
    """mig-facts.md: "7g@0→0; 4g@0 or 3g@0→1, 3g@4→2; 2g@0,2,4→3,4,5; 1g@k→7+k". The double-memory
    1g (15, two slices) takes the ID of the two-slice span it covers, like the 2g there (our rule,
    documented in ``placement``)."""
    placement = pynvml.c_nvmlGpuInstancePlacement_t(start, MEMORY_SLICES[profile_id])
    handle = pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(a100, profile_id, placement)
    info = pynvml.nvmlGpuInstanceGetInfo(handle)
    assert (info.id, info.profileId, info.placement.start) == (gpu_instance_id, profile_id, start)
    assert (
        pynvml.nvmlGpuInstanceGetInfo(pynvml.nvmlDeviceGetGpuInstanceById(a100, gpu_instance_id)).id
        == gpu_instance_id
    )


def test_explicit_placement_refuses_an_occupied_or_invalid_start(a100: Any) -> None:
    """mig-facts.md: "Create: INSUFFICIENT_RESOURCES when the profile does not fit (including an
    occupied placement)"; a start the profile cannot have is an invalid argument."""
    pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(a100, 9, pynvml.c_nvmlGpuInstancePlacement_t(4, 4))
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(a100, 14, pynvml.c_nvmlGpuInstancePlacement_t(4, 2))
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(a100, 9, pynvml.c_nvmlGpuInstancePlacement_t(2, 4))


def test_remaining_capacity_counts_what_still_fits(a100: Any) -> None:
    """mig-facts.md: a 3g "occupies 4 memory slices", so after one 3g.40gb, one more 3g fits, two 2g,
    three 1g (the 1g cannot start at slice 7), and no 7g or 4g (the incident: "A further 1g.10gb
    instance is impossible" once both 3g.40gb exist)."""
    pynvml.nvmlDeviceCreateGpuInstance(a100, 9)
    capacity = {p: pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(a100, p) for p in (0, 5, 9, 14, 19)}
    assert capacity == {0: 0, 5: 1, 9: 1, 14: 2, 19: 4}
    pynvml.nvmlDeviceCreateGpuInstance(a100, 9)
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(a100, 19) == 0
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        pynvml.nvmlDeviceCreateGpuInstance(a100, 19)


def test_a_full_size_compute_instance_is_id_0(a100: Any) -> None:
    """mig-facts.md: "`nvidia-smi mig -cgi X -C` creates one full-size compute instance (CI ID 0)";
    "CI profile enums 1..8 slices = 0..6; the CI profile id equals the enum"."""
    gpu_instance = pynvml.nvmlDeviceCreateGpuInstance(a100, 9)
    profile = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
        gpu_instance,
        pynvml.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE,
        pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
    )
    assert (profile.id, profile.sliceCount, profile.multiprocessorCount, profile.name) == (
        2,
        3,
        42,
        "MIG 3g.40gb",
    )
    info = pynvml.nvmlComputeInstanceGetInfo(
        pynvml.nvmlGpuInstanceCreateComputeInstance(gpu_instance, profile.id)
    )
    assert (info.id, info.profileId, info.placement.start, info.placement.size) == (0, 2, 0, 3)


def test_compute_instance_sizes_inside_a_gpu_instance(a100: Any) -> None:
    """mig-facts.md: "valid compute-instance sizes C are C = G or (C < G and 2C ≤ G+1): 7g → 1,2,3,4,7;
    4g → 1,2,4; 3g → 1,2,3; 2g → 1,2"; names `<C>c.<G>g.<N>gb` when C < G."""
    sizes = {0: [1, 2, 3, 4, 7], 5: [1, 2, 4], 9: [1, 2, 3], 14: [1, 2]}
    enum_of = {1: 0, 2: 1, 3: 2, 4: 3, 6: 6, 7: 4, 8: 5}
    for profile_id, valid in sizes.items():
        gpu_instance = pynvml.nvmlDeviceCreateGpuInstance(a100, profile_id)
        supported = []
        for slices, enum in enum_of.items():
            try:
                info = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gpu_instance, enum, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                )
            except pynvml.NVMLError_NotSupported:
                continue
            supported.append(slices)
            assert info.sliceCount == slices
        assert sorted(supported) == valid, profile_id
        pynvml.nvmlGpuInstanceDestroy(gpu_instance)


def test_split_gpu_instance_gets_compute_instances_with_their_own_ids_and_sms(a100: Any) -> None:
    """mig-facts.md: a 3g splits into 1c.3g and 2c.3g ("3g → 1,2,3"); A100 SMs are 14 per slice
    (1g.10gb: 14 SMs, 3g.40gb: 42). A compute instance's ID is its start (our rule)."""
    gpu_instance = pynvml.nvmlDeviceCreateGpuInstance(a100, 9)
    two = pynvml.nvmlGpuInstanceCreateComputeInstance(
        gpu_instance, pynvml.NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE
    )
    one = pynvml.nvmlGpuInstanceCreateComputeInstance(
        gpu_instance, pynvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE
    )
    assert [pynvml.nvmlComputeInstanceGetInfo(c).id for c in (two, one)] == [0, 2]
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        pynvml.nvmlGpuInstanceCreateComputeInstance(
            gpu_instance, pynvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE
        )
    names = {}
    for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(a100)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(a100, slot)
        except pynvml.NVMLError_NotFound:
            continue
        names[pynvml.nvmlDeviceGetName(mig)] = pynvml.nvmlDeviceGetAttributes(mig).multiprocessorCount
    assert names == {"NVIDIA A100-SXM4-80GB MIG 2c.3g.40gb": 28, "NVIDIA A100-SXM4-80GB MIG 1c.3g.40gb": 14}
