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
# NVML 13 (mig-facts.md): Blackwell's graphics (+gfx), no-media (-me) and all-media (+me.all) profiles.
ENUM_1_SLICE_GFX, ENUM_2_SLICE_GFX, ENUM_4_SLICE_GFX = 0xA, 0xB, 0xC
ENUM_1_SLICE_NO_ME, ENUM_2_SLICE_NO_ME = 0xD, 0xE
ENUM_1_SLICE_ALL_ME, ENUM_2_SLICE_ALL_ME = 0xF, 0x10


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

# PCI IDs 0x2322 and 0x2324 are H800 (mig-facts.md), not H100: see H800 below.
H100_SXM5_80GB = GpuModel(
    key="H100-SXM5-80GB", nvml_name="NVIDIA H100 80GB HBM3", memory_total_mib=81559,
    pci_device_ids=(0x2330, 0x2331), memory_slices=8, compute_slices=7,
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

# ---- Newer models (mig-facts.md "Newer models": mig-parted PRs and default config, NVIDIA's MIG
# user guide). mig-facts.md gives names, IDs, SMs and counts where known; what it does not give is
# marked "unconfirmed" and derived as said. H20 is not modelled: no numbers are known for it.

# H800: "0x2322 and 0x2324 are H800, same geometry" as H100. NVML name and total memory taken as
# H100's geometry implies (unconfirmed).
H800 = GpuModel(
    key="H800", nvml_name="NVIDIA H800", memory_total_mib=81559, pci_device_ids=(0x2324, 0x2322),
    memory_slices=8, compute_slices=7, architecture="hopper", default_power_limit_watts=700,
    profiles=H100_SXM5_80GB.profiles,
)


def _scaled(names: list[str], total_mib: int) -> dict[int, tuple[str, int]]:
    """Names with sizes in H100's fractions of the GPU's memory (unconfirmed: mig-facts.md gives
    the newer models' names, not their MiB): 1g 12.2 %, 1g double memory and 2g 24.6 %, 3g and
    4g 49.6 %, 7g 99.5 %, as 9984, 20096, 40448 and 81152 of H100's 81559 MiB."""
    h100 = [p.memory_mib for p in H100_SXM5_80GB.profiles]
    return _names([(name, h100_mib * total_mib // H100_SXM5_80GB.memory_total_mib)
                   for name, h100_mib in zip(names, h100, strict=True)])


def _sms(one: int, one_double: int, two: int, three: int, four: int, seven: int) -> dict[int, int]:
    """SMs per profile in the order of ``_names`` (the +me 1g has the 1g's)."""
    enums = [ENUM_1_SLICE, ENUM_1_SLICE_REV1, ENUM_1_SLICE_REV2, ENUM_2_SLICE, ENUM_3_SLICE, ENUM_4_SLICE,
             ENUM_7_SLICE]
    return dict(zip(enums, [one, one, one_double, two, three, four, seven], strict=True))


# B200 (PCI 0x2901, Blackwell, driver >= 570.133.20): 1g.23gb ID 19 x7 18 SM, 1g.23gb+me ID 20,
# 1g.45gb ID 15 x4 30 SM, 2g.45gb ID 14 x3 36 SM, 3g.90gb x2, 4g.90gb x1, 7g.180gb x1 (IDs 9/5/0
# "probably", unconfirmed). Unconfirmed: total memory (183359 MiB, what nvidia-smi shows), the 3g/4g/
# 7g SMs (the 2g's 18 per compute slice: 54, 72, 126) and the engines (H100's).
B200 = GpuModel(
    key="B200", nvml_name="NVIDIA B200", memory_total_mib=183359, pci_device_ids=(0x2901,),
    memory_slices=8, compute_slices=7, architecture="blackwell", default_power_limit_watts=1000,
    profiles=_ampere_like(
        _scaled(["1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"], 183359),
        _sms(18, 30, 36, 54, 72, 126), _H100_ENGINES),
)

# GB200 (PCI 0x2941, Blackwell): 1g.23gb ID 19 18 SM (early boards said 1g.24gb), 1g.47gb ID 15
# 32 SM, 2g.47gb ID 14 38 SM, 3g.93gb, 4g.93gb, 7g.186gb. Unconfirmed: the +me 1g (ID 20 as on
# B200), IDs 9/5/0, total memory (189471 MiB), the 3g/4g/7g SMs (19 per compute slice: 57, 76, 133)
# and the engines (H100's).
GB200 = GpuModel(
    key="GB200", nvml_name="NVIDIA GB200", memory_total_mib=189471, pci_device_ids=(0x2941,),
    memory_slices=8, compute_slices=7, architecture="blackwell", default_power_limit_watts=1200,
    profiles=_ampere_like(
        _scaled(["1g.23gb", "1g.23gb+me", "1g.47gb", "2g.47gb", "3g.93gb", "4g.93gb", "7g.186gb"], 189471),
        _sms(18, 32, 38, 57, 76, 133), _H100_ENGINES),
)

# GH200 144GB (PCI 0x2348, Hopper): 1g.18gb ID 19 16 SM, 1g.36gb ID 15 26 SM, 2g.36gb ID 14 32 SM,
# 3g.72gb, 4g.72gb, 7g.144gb. Unconfirmed: the +me 1g, IDs 9/5/0, total memory (146687 MiB), the
# 3g/4g/7g SMs and the engines (H100's: the same GH100 chip).
GH200 = GpuModel(
    key="GH200", nvml_name="NVIDIA GH200 144G HBM3e", memory_total_mib=146687, pci_device_ids=(0x2348,),
    memory_slices=8, compute_slices=7, architecture="hopper", default_power_limit_watts=900,
    profiles=_ampere_like(
        _scaled(["1g.18gb", "1g.18gb+me", "1g.36gb", "2g.36gb", "3g.72gb", "4g.72gb", "7g.144gb"], 146687),
        _H100_SMS, _H100_ENGINES),
)


def _rtx_pro(enum: int, profile_id: int, slices: int, variant: str, max_count: int) -> GpuInstanceProfile:
    """One RTX PRO 6000 Blackwell profile: 4 memory slices, 1g 24186 MiB (23.62 GiB) 46 SM, 2g 94 SM,
    4g 188 SM (mig-facts.md). Unconfirmed: the 2g/4g MiB (2x and 4x the 1g's) and the engines:
    one copy engine, decoder, encoder and JPEG per slice; +me adds the OFA, -me has no media
    engine, +me.all has all of them (4 of each, 1 OFA)."""
    per_slice = (slices, slices, slices)
    media = {"": (*per_slice, 0), "+gfx": (*per_slice, 0), "+me": (*per_slice, 1), "-me": (0, 0, 0, 0),
             "+me.all": (4, 4, 4, 1)}[variant]
    decoders, encoders, jpeg, ofa = media
    gb = 24 * slices
    return GpuInstanceProfile(
        enum=enum, id=profile_id, name=f"{slices}g.{gb}gb{variant}", memory_mib=24186 * slices,
        multiprocessors={1: 46, 2: 94, 4: 188}[slices], copy_engines=slices, decoders=decoders,
        encoders=encoders, jpeg=jpeg, ofa=ofa, max_count=max_count, slice_count=slices,
        placement_starts=tuple(range(0, 4, slices)), placement_size=slices,
    )


# RTX PRO 6000 Blackwell (PCI 0x2BB5, driver >= 575.51.03): IDs of mig-facts.md: 1g.24gb 14 (+me 21,
# +gfx 47, +me.all 65, -me 67), 2g.48gb 5 (+gfx 35, +me.all 64, -me 66), 4g.96gb 0 (+gfx 32).
# Unconfirmed: the NVML name, total memory (97887 MiB), placements (A30's 4-slice rule) and instance
# counts: +me and +me.all one per GPU (exclusive engines), the others one per placement.
RTX_PRO_6000 = GpuModel(
    key="RTX-PRO-6000-Blackwell", nvml_name="NVIDIA RTX PRO 6000 Blackwell Server Edition",
    memory_total_mib=97887, pci_device_ids=(0x2BB5,), memory_slices=4, compute_slices=4,
    architecture="blackwell", default_power_limit_watts=600,
    profiles=(
        _rtx_pro(ENUM_1_SLICE, 14, 1, "", 4),
        _rtx_pro(ENUM_1_SLICE_REV1, 21, 1, "+me", 1),
        _rtx_pro(ENUM_1_SLICE_GFX, 47, 1, "+gfx", 4),
        _rtx_pro(ENUM_1_SLICE_ALL_ME, 65, 1, "+me.all", 1),
        _rtx_pro(ENUM_1_SLICE_NO_ME, 67, 1, "-me", 4),
        _rtx_pro(ENUM_2_SLICE, 5, 2, "", 2),
        _rtx_pro(ENUM_2_SLICE_GFX, 35, 2, "+gfx", 2),
        _rtx_pro(ENUM_2_SLICE_ALL_ME, 64, 2, "+me.all", 1),
        _rtx_pro(ENUM_2_SLICE_NO_ME, 66, 2, "-me", 2),
        _rtx_pro(ENUM_4_SLICE, 0, 4, "", 1),
        _rtx_pro(ENUM_4_SLICE_GFX, 32, 4, "+gfx", 1),
    ),
)

MODELS: dict[str, GpuModel] = {
    m.key: m for m in (A100_SXM4_40GB, A100_SXM4_80GB, A100_PCIE_80GB, A30, H100_SXM5_80GB, H100_NVL, H200,
                       H800, B200, GB200, GH200, RTX_PRO_6000)
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
