"""The simulator's MIG profile tables per GPU model, exactly as ``shared/reference/mig-facts.md``
states them.

Only the simulator reads them: it answers NVML's profile queries from them. The product learns
every GPU's profiles through NVML (``mig_exporter.nvml.capability``), and tests/test_boundaries.py
fails if anything outside ``sim/`` imports this module. Each entry cites mig-facts.md; values
marked "unconfirmed" there are marked here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# NVML_GPU_INSTANCE_PROFILE_* enums (nvml.h), used by nvmlDeviceGetGpuInstanceProfileInfo.
ENUM_1_SLICE = 0
ENUM_2_SLICE = 1
ENUM_3_SLICE = 2
ENUM_4_SLICE = 3
ENUM_7_SLICE = 4
# 5 (8_SLICE) and 6 (6_SLICE) exist in nvml.h; no model here has them, so they are NOT_SUPPORTED.
ENUM_1_SLICE_REV1 = 7  # "+me": the one 1g with media engines
ENUM_2_SLICE_REV1 = 8
ENUM_1_SLICE_REV2 = 9  # double memory 1g


@dataclass(frozen=True)
class GpuInstanceProfile:
    """One row of ``nvidia-smi mig -lgip``: what a GPU instance of this profile gets."""

    enum: int  # NVML_GPU_INSTANCE_PROFILE_* passed to GetGpuInstanceProfileInfo
    id: int  # the driver's profile ID, taken by every other call
    name: str  # "3g.40gb"
    memory_mib: int
    multiprocessors: int
    copy_engines: int
    decoders: int
    jpeg: int
    ofa: int
    max_count: int  # instanceCount: how many fit on an empty GPU
    slice_count: int  # compute slices (the "3" of 3g)
    placement_starts: tuple[int, ...]  # valid starts, in memory slices
    placement_size: int  # memory slices occupied
    encoders: int = 0


@dataclass(frozen=True)
class GpuModel:
    """A GPU model the fleet file may name, with what NVML reports for it."""

    key: str  # fleet file key, e.g. "A100-SXM4-80GB"
    nvml_name: str  # nvmlDeviceGetName, e.g. "NVIDIA A100-SXM4-80GB"
    memory_total_mib: int
    pci_device_ids: tuple[int, ...]  # first one is what the simulator reports
    memory_slices: int  # placement slots: 8 on A100/H100/H200, 4 on A30
    compute_slices: int  # 7 on A100/H100/H200, 4 on A30
    architecture: str  # "ampere" needs a reset to enable MIG; "hopper" does not
    profiles: tuple[GpuInstanceProfile, ...]
    default_power_limit_watts: int = 400

    def profile_by_enum(self, enum: int) -> GpuInstanceProfile | None:
        return next((p for p in self.profiles if p.enum == enum), None)

    def profile_by_id(self, profile_id: int) -> GpuInstanceProfile | None:
        return next((p for p in self.profiles if p.id == profile_id), None)


def _ampere_like(
    names: dict[int, tuple[str, int]],
    sms: dict[int, int],
    engines: dict[int, tuple[int, int, int, int]],
) -> tuple[GpuInstanceProfile, ...]:
    """A100/H100/H200 profiles: same enums, IDs, counts and placements (mig-facts.md, Placements).

    ``names`` maps enum → (name, MiB); ``sms`` enum → SMs; ``engines`` enum → (CE, DEC, JPG, OFA).
    """
    # enum: (id, slice count, max count, placement starts, placement size)
    layout = {
        ENUM_1_SLICE: (19, 1, 7, (0, 1, 2, 3, 4, 5, 6), 1),
        ENUM_1_SLICE_REV1: (20, 1, 1, (0, 1, 2, 3, 4, 5, 6), 1),
        ENUM_1_SLICE_REV2: (15, 1, 4, (0, 2, 4, 6), 2),
        ENUM_2_SLICE: (14, 2, 3, (0, 2, 4), 2),
        ENUM_3_SLICE: (9, 3, 2, (0, 4), 4),
        ENUM_4_SLICE: (5, 4, 1, (0,), 4),
        ENUM_7_SLICE: (0, 7, 1, (0,), 8),
    }
    out = []
    for enum, (profile_id, slices, max_count, starts, size) in layout.items():
        name, mib = names[enum]
        ce, dec, jpg, ofa = engines[enum]
        out.append(
            GpuInstanceProfile(
                enum=enum, id=profile_id, name=name, memory_mib=mib, multiprocessors=sms[enum],
                copy_engines=ce, decoders=dec, jpeg=jpg, ofa=ofa, max_count=max_count,
                slice_count=slices, placement_starts=starts, placement_size=size,
            )
        )
    return tuple(out)


# A100 SMs and engines (mig-facts.md, A100-SXM4-40GB table; "same for 80GB").
_A100_SMS = {ENUM_1_SLICE: 14, ENUM_1_SLICE_REV1: 14, ENUM_1_SLICE_REV2: 14, ENUM_2_SLICE: 28,
             ENUM_3_SLICE: 42, ENUM_4_SLICE: 56, ENUM_7_SLICE: 98}
_A100_ENGINES = {ENUM_1_SLICE: (1, 0, 0, 0), ENUM_1_SLICE_REV1: (1, 1, 1, 1), ENUM_1_SLICE_REV2: (1, 1, 0, 0),
                 ENUM_2_SLICE: (2, 1, 0, 0), ENUM_3_SLICE: (3, 2, 0, 0), ENUM_4_SLICE: (4, 2, 0, 0),
                 ENUM_7_SLICE: (7, 5, 1, 1)}
# H100/H200 SMs and engines (mig-facts.md, H100-SXM5-80GB table; "SMs, engines and IDs as H100").
_H100_SMS = {ENUM_1_SLICE: 16, ENUM_1_SLICE_REV1: 16, ENUM_1_SLICE_REV2: 26, ENUM_2_SLICE: 32,
             ENUM_3_SLICE: 60, ENUM_4_SLICE: 64, ENUM_7_SLICE: 132}
_H100_ENGINES = {ENUM_1_SLICE: (1, 1, 1, 0), ENUM_1_SLICE_REV1: (1, 1, 1, 1), ENUM_1_SLICE_REV2: (1, 1, 1, 0),
                 ENUM_2_SLICE: (2, 2, 2, 0), ENUM_3_SLICE: (3, 3, 3, 0), ENUM_4_SLICE: (4, 4, 4, 0),
                 ENUM_7_SLICE: (8, 7, 7, 1)}


def _names(prefix_mib: list[tuple[str, int]]) -> dict[int, tuple[str, int]]:
    """Name table in the order 1g, 1g+me, 1g double memory, 2g, 3g, 4g, 7g."""
    enums = [ENUM_1_SLICE, ENUM_1_SLICE_REV1, ENUM_1_SLICE_REV2, ENUM_2_SLICE, ENUM_3_SLICE,
             ENUM_4_SLICE, ENUM_7_SLICE]
    return dict(zip(enums, prefix_mib, strict=True))


A100_SXM4_40GB = GpuModel(
    key="A100-SXM4-40GB", nvml_name="NVIDIA A100-SXM4-40GB", memory_total_mib=40537,
    pci_device_ids=(0x20B0, 0x20B1, 0x20F1, 0x20F6), memory_slices=8, compute_slices=7,
    architecture="ampere",
    profiles=_ampere_like(
        _names([("1g.5gb", 4864), ("1g.5gb+me", 4864), ("1g.10gb", 9856), ("2g.10gb", 9856),
                ("3g.20gb", 19968), ("4g.20gb", 19968), ("7g.40gb", 40192)]),
        _A100_SMS, _A100_ENGINES),
)

# 80GB: "Same IDs, SMs, engines, placements as 40GB"; 1g.20gb "about 19968 (unconfirmed)".
_A100_80GB_NAMES = _names([("1g.10gb", 9728), ("1g.10gb+me", 9728), ("1g.20gb", 19968), ("2g.20gb", 19968),
                           ("3g.40gb", 40192), ("4g.40gb", 40192), ("7g.80gb", 80896)])

A100_SXM4_80GB = GpuModel(
    key="A100-SXM4-80GB", nvml_name="NVIDIA A100-SXM4-80GB", memory_total_mib=81920,
    pci_device_ids=(0x20B2, 0x20B5, 0x20F3, 0x20F5), memory_slices=8, compute_slices=7,
    architecture="ampere", profiles=_ampere_like(_A100_80GB_NAMES, _A100_SMS, _A100_ENGINES),
)

A100_PCIE_80GB = GpuModel(
    key="A100-PCIE-80GB", nvml_name="NVIDIA A100 80GB PCIe", memory_total_mib=81920,
    pci_device_ids=(0x20B5, 0x20B2, 0x20F3, 0x20F5), memory_slices=8, compute_slices=7,
    architecture="ampere", profiles=A100_SXM4_80GB.profiles,
    default_power_limit_watts=300,
)

# A30: 4 memory slices; mig-facts.md A30-24GB table. Total memory is not in mig-facts.md:
# 24576 MiB is what nvidia-smi shows for A30 (unconfirmed here).
A30 = GpuModel(
    key="A30", nvml_name="NVIDIA A30", memory_total_mib=24576, pci_device_ids=(0x20B7,),
    memory_slices=4, compute_slices=4, architecture="ampere", default_power_limit_watts=165,
    profiles=(
        GpuInstanceProfile(ENUM_1_SLICE, 14, "1g.6gb", 5952, 14, 1, 1, 0, 0, 4, 1, (0, 1, 2, 3), 1),
        GpuInstanceProfile(ENUM_1_SLICE_REV1, 21, "1g.6gb+me", 5952, 14, 1, 1, 1, 1, 1, 1, (0, 1, 2, 3), 1),
        GpuInstanceProfile(ENUM_2_SLICE, 5, "2g.12gb", 11968, 28, 2, 2, 0, 0, 2, 2, (0, 2), 2),
        GpuInstanceProfile(ENUM_2_SLICE_REV1, 6, "2g.12gb+me", 11968, 28, 2, 2, 1, 1, 1, 2, (0, 2), 2),
        GpuInstanceProfile(ENUM_4_SLICE, 0, "4g.24gb", 24000, 56, 4, 4, 1, 1, 1, 4, (0,), 4),
    ),
)

H100_SXM5_80GB = GpuModel(
    key="H100-SXM5-80GB", nvml_name="NVIDIA H100 80GB HBM3", memory_total_mib=81559,
    pci_device_ids=(0x2330, 0x2331, 0x2322, 0x2324), memory_slices=8, compute_slices=7,
    architecture="hopper", default_power_limit_watts=700,
    profiles=_ampere_like(
        _names([("1g.10gb", 9984), ("1g.10gb+me", 9984), ("1g.20gb", 20096), ("2g.20gb", 20096),
                ("3g.40gb", 40448), ("4g.40gb", 40448), ("7g.80gb", 81152)]),
        _H100_SMS, _H100_ENGINES),
)

H100_NVL = GpuModel(
    key="H100-NVL", nvml_name="NVIDIA H100 NVL", memory_total_mib=95830, pci_device_ids=(0x2321,),
    memory_slices=8, compute_slices=7, architecture="hopper",
    profiles=_ampere_like(
        _names([("1g.12gb", 11008), ("1g.12gb+me", 11008), ("1g.24gb", 22144), ("2g.24gb", 22144),
                ("3g.47gb", 47488), ("4g.47gb", 47488), ("7g.94gb", 95360)]),
        _H100_SMS, _H100_ENGINES),
)

# H200: total memory is not in mig-facts.md; 143771 MiB is what nvidia-smi shows (unconfirmed here).
# Placements "assumed equal to H100 (unconfirmed)"; 1g.18gb+me memory taken equal to 1g.18gb.
H200 = GpuModel(
    key="H200", nvml_name="NVIDIA H200", memory_total_mib=143771, pci_device_ids=(0x2335, 0x233B),
    memory_slices=8, compute_slices=7, architecture="hopper", default_power_limit_watts=700,
    profiles=_ampere_like(
        _names([("1g.18gb", 16384), ("1g.18gb+me", 16384), ("1g.35gb", 33024), ("2g.35gb", 33024),
                ("3g.71gb", 71168), ("4g.71gb", 71168), ("7g.141gb", 143104)]),
        _H100_SMS, _H100_ENGINES),
)

MODELS: dict[str, GpuModel] = {
    m.key: m for m in (A100_SXM4_40GB, A100_SXM4_80GB, A100_PCIE_80GB, A30, H100_SXM5_80GB, H100_NVL, H200)
}


# Compute instances (mig-facts.md, "Compute instances"): CI profile enum for C slices, and the
# valid C inside a GPU instance of G slices: C == G, or C < G and 2C <= G + 1.
COMPUTE_PROFILE_ENUM_BY_SLICES = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}


def valid_compute_slices(gpu_instance_slices: int) -> tuple[int, ...]:
    g = gpu_instance_slices
    return tuple(c for c in sorted(COMPUTE_PROFILE_ENUM_BY_SLICES) if c == g or (c < g and 2 * c <= g + 1))


# Engine variants of a profile name (mig-facts.md): "+me" the 1g with media engines; Blackwell's
# "+me.all" (every media engine), "+gfx" (graphics) and "-me" (no media engine).
VARIANTS = ("+me.all", "+me", "+gfx", "-me")
_VARIANT = r"(?P<variant>\+me\.all|\+me|\+gfx|-me)?"
_NAME_RE = re.compile(r"^(?:(?P<c>\d+)c\.)?(?P<g>\d+)g(?:\.(?P<gb>\d+)gb)?" + _VARIANT + "$", re.ASCII)
# A GPU instance profile's name as the driver writes it: ``<slices>g.<GB>gb`` and a variant.
PROFILE_NAME = re.compile(r"^(?P<g>\d+)g\.(?P<gb>\d+)gb" + _VARIANT + "$", re.ASCII)


def match_profile(model: GpuModel, wanted: str) -> GpuInstanceProfile | None:
    """Resolve a fleet file's profile name as the driver writes it or in its short form.

    Names are matched by slice count and memory class, not by exact string, because the driver
    computes names from memory sizes that drift (mig-parted saw "3g.39gb"; mig-facts.md). So
    ``3g``, ``3g.40gb`` and ``3g.39gb`` all resolve to the 3-slice profile of an A100-80GB. A bare
    ``1g`` means the plain 1-slice profile, not the +me or double-memory variant; ``1g+gfx`` the
    1-slice ``+gfx`` one.
    """
    m = _NAME_RE.match(wanted.strip().lower())
    if m is None or m.group("c"):
        return None
    slices = int(m.group("g"))
    candidates = [p for p in model.profiles
                  if p.slice_count == slices and variant(p.name) == (m.group("variant") or "")]
    if not candidates:
        return None
    if m.group("gb") is None:
        return min(candidates, key=lambda p: p.memory_mib)
    gb = int(m.group("gb"))
    # the profile whose advertised GB is nearest; drift is a GB or two, classes differ by 2x
    best = min(candidates, key=lambda p: abs(advertised_gb(p) - gb))
    return best if abs(advertised_gb(best) - gb) <= max(2, advertised_gb(best) // 10) else None


def variant(profile_name: str) -> str:
    """The engine variant of a profile name: ``+me`` for ``1g.10gb+me``, "" for ``3g.40gb``."""
    m = PROFILE_NAME.match(profile_name)
    return (m.group("variant") or "") if m else ""


def advertised_gb(profile: GpuInstanceProfile) -> int:
    """The memory class in the name: 40 for ``3g.40gb``, 10 for ``1g.10gb+me``."""
    m = PROFILE_NAME.match(profile.name)
    assert m is not None, profile.name  # built-in names and fleet-defined ones (checked) match
    return int(m.group("gb"))
