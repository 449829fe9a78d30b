"""The newer built-in models, read through the real pynvml and reader from the simulator, against
the numbers mig-facts.md gives for them ("Newer models", and the H100 table's note on H800's PCI
IDs). Only what mig-facts.md states is asserted; what the simulator's table derives is marked
unconfirmed there (``sim/models.py``), and docs/fleet-models.md lists both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest

from mig_exporter.host import nvml_session
from mig_exporter.model import Gpu
from mig_exporter.nvml.read import read_snapshot

E = pynvml
MODELS = ("B200", "GB200", "GH200", "RTX-PRO-6000-Blackwell", "H800", "H100-SXM5-80GB")


@pytest.fixture(scope="module")
def gpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Gpu]]:
    path: Path = tmp_path_factory.mktemp("newer") / "fleet.yaml"
    path.write_text("gpus:\n" + "".join(f"  - {{model: {m}, mig: enabled}}\n" for m in MODELS))
    session = nvml_session(str(path))
    session.open()
    try:
        snapshot = read_snapshot(session)
        assert not snapshot.errors
        yield dict(zip(MODELS, snapshot.gpus, strict=True))
    finally:
        session.close()


def rows(gpu: Gpu) -> dict[str, tuple[int, int, int]]:
    """name → (driver ID, SMs, instance count), as NVML listed the profiles."""
    assert gpu.mig_capability is not None
    return {p.name: (p.id, p.multiprocessors, p.max_count) for p in gpu.mig_capability.profiles}


def test_b200(gpus: dict[str, Gpu]) -> None:
    """mig-facts.md: "B200 (PCI 0x2901): 1g.23gb ID 19 ×7 18 SM; 1g.23gb+me ID 20; 1g.45gb ID 15 ×4
    30 SM; 2g.45gb ID 14 ×3 36 SM; 3g.90gb ×2, 4g.90gb ×1, 7g.180gb ×1"."""
    gpu = gpus["B200"]
    assert gpu.mig_capability is not None
    assert (gpu.pci_device_id, gpu.mig_capability.architecture) == (0x2901, "blackwell")
    found = rows(gpu)
    assert {n: found[n] for n in ("1g.23gb", "1g.45gb", "2g.45gb")} == {
        "1g.23gb": (19, 18, 7), "1g.45gb": (15, 30, 4), "2g.45gb": (14, 36, 3)}
    assert found["1g.23gb+me"][0] == 20
    assert [found[n][2] for n in ("3g.90gb", "4g.90gb", "7g.180gb")] == [2, 1, 1]


def test_gb200(gpus: dict[str, Gpu]) -> None:
    """mig-facts.md: "GB200 (0x2941): 1g.23gb ID 19 18 SM …; 1g.47gb ID 15 32 SM; 2g.47gb ID 14 38
    SM; 3g.93gb, 4g.93gb, 7g.186gb"."""
    gpu = gpus["GB200"]
    assert gpu.pci_device_id == 0x2941
    found = rows(gpu)
    assert {n: found[n][:2] for n in ("1g.23gb", "1g.47gb", "2g.47gb")} == {
        "1g.23gb": (19, 18), "1g.47gb": (15, 32), "2g.47gb": (14, 38)}
    assert {"3g.93gb", "4g.93gb", "7g.186gb"} <= set(found)


def test_gh200(gpus: dict[str, Gpu]) -> None:
    """mig-facts.md: "GH200 144GB (0x2348): 1g.18gb ID 19 16 SM; 1g.36gb ID 15 26 SM; 2g.36gb ID 14
    32 SM; 3g.72gb; 4g.72gb; 7g.144gb"."""
    gpu = gpus["GH200"]
    assert gpu.pci_device_id == 0x2348
    found = rows(gpu)
    assert {n: found[n][:2] for n in ("1g.18gb", "1g.36gb", "2g.36gb")} == {
        "1g.18gb": (19, 16), "1g.36gb": (15, 26), "2g.36gb": (14, 32)}
    assert {"3g.72gb", "4g.72gb", "7g.144gb"} <= set(found)


def test_rtx_pro_6000_blackwell(gpus: dict[str, Gpu]) -> None:
    """mig-facts.md: "RTX PRO 6000 Blackwell (0x2BB5), 4 slices: 1g.24gb ID 14 (+me 21, +gfx 47,
    +me.all 65, -me 67; 46 SM, 23.62 GiB); 2g.48gb ID 5 (+gfx 35, +me.all 64, -me 66; 94 SM);
    4g.96gb ID 0 (+gfx 32; 188 SM)", each variant under its NVML 13 enum (1/2/4_SLICE_GFX,
    1/2_SLICE_NO_ME, 1/2_SLICE_ALL_ME)."""
    gpu = gpus["RTX-PRO-6000-Blackwell"]
    assert gpu.pci_device_id == 0x2BB5 and gpu.mig_capability is not None
    assert gpu.mig_capability.memory_slices == 4
    by_name = {p.name: (p.enum, p.id, p.multiprocessors) for p in gpu.mig_capability.profiles}
    assert by_name == {
        "1g.24gb": (E.NVML_GPU_INSTANCE_PROFILE_1_SLICE, 14, 46),
        "1g.24gb+me": (E.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1, 21, 46),
        "1g.24gb+gfx": (E.NVML_GPU_INSTANCE_PROFILE_1_SLICE_GFX, 47, 46),
        "1g.24gb+me.all": (E.NVML_GPU_INSTANCE_PROFILE_1_SLICE_ALL_ME, 65, 46),
        "1g.24gb-me": (E.NVML_GPU_INSTANCE_PROFILE_1_SLICE_NO_ME, 67, 46),
        "2g.48gb": (E.NVML_GPU_INSTANCE_PROFILE_2_SLICE, 5, 94),
        "2g.48gb+gfx": (E.NVML_GPU_INSTANCE_PROFILE_2_SLICE_GFX, 35, 94),
        "2g.48gb+me.all": (E.NVML_GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME, 64, 94),
        "2g.48gb-me": (E.NVML_GPU_INSTANCE_PROFILE_2_SLICE_NO_ME, 66, 94),
        "4g.96gb": (E.NVML_GPU_INSTANCE_PROFILE_4_SLICE, 0, 188),
        "4g.96gb+gfx": (E.NVML_GPU_INSTANCE_PROFILE_4_SLICE_GFX, 32, 188),
    }
    one_g = gpu.mig_capability.profile_by_id(14)
    assert one_g is not None and round(one_g.memory_mib / 1024, 2) == 23.62


def test_pci_ids_0x2322_and_0x2324_are_h800_with_h100_geometry(gpus: dict[str, Gpu]) -> None:
    """mig-facts.md, H100 table: "PCI IDs 0x2330 0x2331; 0x2322 and 0x2324 are H800, same
    geometry"."""
    h800, h100 = gpus["H800"], gpus["H100-SXM5-80GB"]
    assert h800.name == "NVIDIA H800" and h800.pci_device_id in (0x2322, 0x2324)
    assert h100.pci_device_id in (0x2330, 0x2331)
    assert h800.mig_capability is not None and h100.mig_capability is not None
    assert h800.mig_capability.profiles == h100.mig_capability.profiles


@pytest.mark.parametrize("model", MODELS)
def test_an_empty_newer_gpu_fits_each_profile_its_instance_count(gpus: dict[str, Gpu], model: str) -> None:
    """mig-facts.md "Placements": with every memory slice free a profile fits its instance count."""
    gpu = gpus[model]
    assert gpu.mig_capability is not None
    assert dict(gpu.mig_profile_capacity or ()) == {p.name: p.max_count for p in gpu.mig_capability.profiles}
