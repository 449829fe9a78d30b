"""The MIG profile tables of mig-facts.md, row by row, as the real pynvml reads them from the
simulator: profile info by enum, the enum → driver ID map, and the placements table.

The expected numbers are copied from mig-facts.md here, not taken from ``profiles.py``, so a
mistake in either shows up as a failure.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pynvml
import pytest

from sim.conftest import StartNvml

E = pynvml  # the NVML_GPU_INSTANCE_PROFILE_* enums
# (enum, name, ID, MiB, SM, CE, DEC, JPG, OFA, max instances, compute slices)
A100_40GB = [
    (E.NVML_GPU_INSTANCE_PROFILE_1_SLICE, "1g.5gb", 19, 4864, 14, 1, 0, 0, 0, 7, 1),
    (E.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1, "1g.5gb+me", 20, 4864, 14, 1, 1, 1, 1, 1, 1),
    (E.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2, "1g.10gb", 15, 9856, 14, 1, 1, 0, 0, 4, 1),
    (E.NVML_GPU_INSTANCE_PROFILE_2_SLICE, "2g.10gb", 14, 9856, 28, 2, 1, 0, 0, 3, 2),
    (E.NVML_GPU_INSTANCE_PROFILE_3_SLICE, "3g.20gb", 9, 19968, 42, 3, 2, 0, 0, 2, 3),
    (E.NVML_GPU_INSTANCE_PROFILE_4_SLICE, "4g.20gb", 5, 19968, 56, 4, 2, 0, 0, 1, 4),
    (E.NVML_GPU_INSTANCE_PROFILE_7_SLICE, "7g.40gb", 0, 40192, 98, 7, 5, 1, 1, 1, 7),
]


def _like(table: list[tuple[Any, ...]], names_mib: list[tuple[str, int]]) -> list[tuple[Any, ...]]:
    """The rows of ``table`` (enum, ID, SMs, engines, max, slices) with another model's own profile
    names and sizes, row by row."""
    return [
        (enum, name, profile_id, mib, *rest)
        for (enum, _, profile_id, _, *rest), (name, mib) in zip(table, names_mib, strict=True)
    ]


# "Same IDs, SMs, engines, placements as 40GB"; 1g.20gb "about 19968 (unconfirmed)"; +me as 1g.
A100_80GB = _like(
    A100_40GB,
    [
        ("1g.10gb", 9728),
        ("1g.10gb+me", 9728),
        ("1g.20gb", 19968),
        ("2g.20gb", 19968),
        ("3g.40gb", 40192),
        ("4g.40gb", 40192),
        ("7g.80gb", 80896),
    ],
)
A30 = [
    (E.NVML_GPU_INSTANCE_PROFILE_1_SLICE, "1g.6gb", 14, 5952, 14, 1, 1, 0, 0, 4, 1),
    (E.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1, "1g.6gb+me", 21, 5952, 14, 1, 1, 1, 1, 1, 1),
    (E.NVML_GPU_INSTANCE_PROFILE_2_SLICE, "2g.12gb", 5, 11968, 28, 2, 2, 0, 0, 2, 2),
    (E.NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1, "2g.12gb+me", 6, 11968, 28, 2, 2, 1, 1, 1, 2),
    (E.NVML_GPU_INSTANCE_PROFILE_4_SLICE, "4g.24gb", 0, 24000, 56, 4, 4, 1, 1, 1, 4),
]
H100_80GB = [
    (E.NVML_GPU_INSTANCE_PROFILE_1_SLICE, "1g.10gb", 19, 9984, 16, 1, 1, 1, 0, 7, 1),
    (E.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1, "1g.10gb+me", 20, 9984, 16, 1, 1, 1, 1, 1, 1),
    (E.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2, "1g.20gb", 15, 20096, 26, 1, 1, 1, 0, 4, 1),
    (E.NVML_GPU_INSTANCE_PROFILE_2_SLICE, "2g.20gb", 14, 20096, 32, 2, 2, 2, 0, 3, 2),
    (E.NVML_GPU_INSTANCE_PROFILE_3_SLICE, "3g.40gb", 9, 40448, 60, 3, 3, 3, 0, 2, 3),
    (E.NVML_GPU_INSTANCE_PROFILE_4_SLICE, "4g.40gb", 5, 40448, 64, 4, 4, 4, 0, 1, 4),
    (E.NVML_GPU_INSTANCE_PROFILE_7_SLICE, "7g.80gb", 0, 81152, 132, 8, 7, 7, 1, 1, 7),
]

# "SMs, engines and IDs as H100" with the model's own names and sizes.
H100_NVL = _like(
    H100_80GB,
    [
        ("1g.12gb", 11008),
        ("1g.12gb+me", 11008),
        ("1g.24gb", 22144),
        ("2g.24gb", 22144),
        ("3g.47gb", 47488),
        ("4g.47gb", 47488),
        ("7g.94gb", 95360),
    ],
)
H200 = _like(
    H100_80GB,
    [
        ("1g.18gb", 16384),
        ("1g.18gb+me", 16384),
        ("1g.35gb", 33024),
        ("2g.35gb", 33024),
        ("3g.71gb", 71168),
        ("4g.71gb", 71168),
        ("7g.141gb", 143104),
    ],
)

TABLES = {
    "A100-SXM4-40GB": A100_40GB,
    "A100-SXM4-80GB": A100_80GB,
    "A100-PCIE-80GB": A100_80GB,
    "A30": A30,
    "H100-SXM5-80GB": H100_80GB,
    "H100-NVL": H100_NVL,
    "H200": H200,
}
ROWS = [(model, row) for model, table in TABLES.items() for row in table]
# One GPU of every model, at the model's index in TABLES.
ALL_MODELS = "gpus:\n" + "".join(f"  - {{model: {model}}}\n" for model in TABLES)


@pytest.fixture
def models(start_nvml: StartNvml) -> dict[str, Any]:
    """The simulator over ALL_MODELS: each model key's NVML handle."""
    start_nvml(ALL_MODELS)
    return {model: pynvml.nvmlDeviceGetHandleByIndex(index) for index, model in enumerate(TABLES)}


@pytest.mark.parametrize(("model", "row"), ROWS, ids=[f"{m}-{r[1]}" for m, r in ROWS])
def test_profile_info_by_enum_matches_the_table(
    models: dict[str, Any], model: str, row: tuple[Any, ...]
) -> None:
    """mig-facts.md, "Per-model tables" and "Profile numbers": `nvmlDeviceGetGpuInstanceProfileInfo(dev,
    ENUM, version=2)` "returns `info.id`, the driver's profile ID", with the table's MiB, SM, CE,
    DEC, JPG, OFA and max; "`sliceCount` counts compute slices (7)"."""
    enum, name, profile_id, mib, sms, ce, dec, jpg, ofa, max_count, slices = row
    info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(models[model], enum)
    assert (info.id, info.name, info.memorySizeMB, info.multiprocessorCount) == (
        profile_id,
        f"MIG {name}",
        mib,
        sms,
    )
    assert (info.copyEngineCount, info.decoderCount, info.jpegCount, info.ofaCount) == (ce, dec, jpg, ofa)
    assert (info.instanceCount, info.sliceCount) == (max_count, slices)
    legacy = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(models[model], enum, version=1)
    assert (legacy.id, legacy.memorySizeMB, legacy.instanceCount) == (profile_id, mib, max_count)


@pytest.mark.parametrize(
    ("model", "missing"),
    [
        (
            "A100-SXM4-80GB",
            [
                E.NVML_GPU_INSTANCE_PROFILE_8_SLICE,
                E.NVML_GPU_INSTANCE_PROFILE_6_SLICE,
                E.NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1,
                E.NVML_GPU_INSTANCE_PROFILE_3_SLICE_GFX,
            ],
        ),
        (
            "A30",
            [
                E.NVML_GPU_INSTANCE_PROFILE_3_SLICE,
                E.NVML_GPU_INSTANCE_PROFILE_7_SLICE,
                E.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2,
            ],
        ),
        ("H200", [E.NVML_GPU_INSTANCE_PROFILE_8_SLICE, E.NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1]),
    ],
)
def test_an_enum_the_model_lacks_is_not_supported(
    models: dict[str, Any], model: str, missing: list[int]
) -> None:
    """mig-facts.md: "An enum the GPU lacks returns NOT_SUPPORTED"."""
    for enum in missing:
        with pytest.raises(pynvml.NVMLError_NotSupported):
            pynvml.nvmlDeviceGetGpuInstanceProfileInfo(models[model], enum)


@pytest.mark.parametrize(
    "enum", [pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT, pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT + 5]
)
def test_an_enum_past_the_last_is_invalid(models: dict[str, Any], enum: int) -> None:
    """mig-facts.md: "past the last enum, INVALID_ARGUMENT"."""
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetGpuInstanceProfileInfo(models["A100-SXM4-80GB"], enum)


def possible_placements(handle: Any, profile_id: int) -> list[tuple[int, int]]:
    """Both calls of the count-then-fill protocol of nvmlDeviceGetGpuInstancePossiblePlacements_v2."""
    count = ctypes.c_uint()
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, None, ctypes.byref(count))
    array = (pynvml.c_nvmlGpuInstancePlacement_t * count.value)()
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, array, ctypes.byref(count))
    return [(p.start, p.size) for p in array[: count.value]]


EIGHT_SLICE_PLACEMENTS = {
    19: [(s, 1) for s in range(7)],
    20: [(s, 1) for s in range(7)],
    15: [(0, 2), (2, 2), (4, 2), (6, 2)],
    14: [(0, 2), (2, 2), (4, 2)],
    9: [(0, 4), (4, 4)],
    5: [(0, 4)],
    0: [(0, 8)],
}


@pytest.mark.parametrize("model", ["A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "H100-NVL", "H200"])
def test_placements_table_on_eight_memory_slices(models: dict[str, Any], model: str) -> None:
    """mig-facts.md, "Placements": 1g, 1g+me (19/20) {0..6}:1; 1g double memory (15) {0,2,4,6}:2;
    2g (14) {0,2,4}:2; 3g (9) {0,4}:4; 4g (5) {0}:4; 7g (0) {0}:8 ("H200 placements assumed equal
    to H100"). Placements are given whatever the MIG mode (the GPUs here have MIG off)."""
    for profile_id, expected in EIGHT_SLICE_PLACEMENTS.items():
        assert possible_placements(models[model], profile_id) == expected, profile_id


def test_placements_table_on_the_a30(models: dict[str, Any]) -> None:
    """mig-facts.md: "A30 (4 memory slices): 1g (14/21) {0,1,2,3}:1; 2g (5/6) {0,2}:2; 4g (0) {0}:4"."""
    expected = {
        14: [(s, 1) for s in range(4)],
        21: [(s, 1) for s in range(4)],
        5: [(0, 2), (2, 2)],
        6: [(0, 2), (2, 2)],
        0: [(0, 4)],
    }
    for profile_id, placements in expected.items():
        assert possible_placements(models["A30"], profile_id) == placements, profile_id


def test_name_and_total_memory_per_model(models: dict[str, Any]) -> None:
    """DESIGN.md, the model keys and "the name NVML reports for each"; mig-facts.md totals:
    A100-SXM4-40GB 40537 MiB, A100 80GB 81920, H100-SXM5-80GB 81559, H100 NVL 95830."""
    expected = {
        "A100-SXM4-40GB": ("NVIDIA A100-SXM4-40GB", 40537),
        "A100-SXM4-80GB": ("NVIDIA A100-SXM4-80GB", 81920),
        "A100-PCIE-80GB": ("NVIDIA A100 80GB PCIe", 81920),
        "H100-SXM5-80GB": ("NVIDIA H100 80GB HBM3", 81559),
        "H100-NVL": ("NVIDIA H100 NVL", 95830),
    }
    for model, (name, mib) in expected.items():
        handle = models[model]
        assert pynvml.nvmlDeviceGetName(handle) == name
        assert pynvml.nvmlDeviceGetMemoryInfo(handle).total == mib * 1024 * 1024
    assert pynvml.nvmlDeviceGetName(models["A30"]) == "NVIDIA A30"
    assert pynvml.nvmlDeviceGetName(models["H200"]) == "NVIDIA H200"
