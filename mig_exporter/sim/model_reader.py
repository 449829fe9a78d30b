"""GPU models a fleet file defines under ``models:`` (DESIGN.md, "Models a fleet file defines").

A test can then run the product on a GPU no table knows, with profile IDs, sizes and placements of
its own; the simulator serves it like a built-in model. A definition is refused, like any other
invalid fleet content, when the simulator could not answer NVML consistently from it: GPU
instance IDs number the spans of a binary tree over the memory slices (``placement``), so the
slices are a power of two and every placement is aligned to its size; an enum or an ID answers
for one profile only; a profile fits where its placements say, no more often than that.
"""

from __future__ import annotations

from typing import Any

import pynvml

from mig_exporter.errors import shown_key
from mig_exporter.sim.fleet_checks import UINT_MAX, Checks, join
from mig_exporter.sim.models import MODELS, PROFILE_NAME, GpuInstanceProfile, GpuModel

ARCHITECTURES = ("ampere", "hopper", "blackwell")
MODEL_KEYS = ("nvml_name", "memory_total_mib", "architecture", "memory_slices", "compute_slices",
              "pci_device_id", "profiles")
ENGINE_KEYS = ("copy_engines", "decoders", "encoders", "jpeg", "ofa")
PROFILE_KEYS = ("name", "enum", "id", "memory_mib", "multiprocessors", "max_count", "slices",
                "placement_starts", "placement_size", *ENGINE_KEYS)
_MAX_MEMORY_SLICES = 64


def read_models(checks: Checks, raw: Any) -> dict[str, GpuModel]:
    """The models of ``models:``, by the key ``gpus[].model`` names them with."""
    models: dict[str, GpuModel] = {}
    for key, entry in checks.any_mapping(raw, "models").items():
        path = join("models", shown_key(key))
        name = checks.string(key, path)
        if name in MODELS:
            raise checks.error(path, f"{name} is a built-in model: name the one this file defines otherwise")
        models[name] = _model(checks, name, entry, path)
    return models


def _model(checks: Checks, key: str, raw: Any, path: str) -> GpuModel:
    entry = checks.mapping(raw, path, MODEL_KEYS, required=MODEL_KEYS)
    nvml_name = checks.string(entry["nvml_name"], f"{path}.nvml_name")
    if "\n" in nvml_name:
        raise checks.error(f"{path}.nvml_name", "must be one line (nvmlDeviceGetName reports it)")
    architecture = entry["architecture"]
    if architecture not in ARCHITECTURES:
        raise checks.error(f"{path}.architecture",
                           f"{architecture!r} is not an architecture ({', '.join(ARCHITECTURES)})")
    memory_total = checks.integer(entry["memory_total_mib"], f"{path}.memory_total_mib", 1, UINT_MAX)
    memory_slices = checks.integer(entry["memory_slices"], f"{path}.memory_slices", 1, _MAX_MEMORY_SLICES)
    if not _power_of_two(memory_slices):
        raise checks.error(f"{path}.memory_slices", f"{memory_slices} is not a power of two (1, 2, 4, 8 …): "
                                                    "GPU instance IDs number a binary tree over the slices")
    compute_slices = checks.integer(entry["compute_slices"], f"{path}.compute_slices", 1, memory_slices)
    raw_profiles = checks.sequence(entry["profiles"], f"{path}.profiles")
    if not raw_profiles:
        raise checks.error(f"{path}.profiles", "a MIG model needs at least one GPU instance profile")
    profiles: list[GpuInstanceProfile] = []
    for i, raw_profile in enumerate(raw_profiles):
        profile_path = f"{path}.profiles[{i}]"
        profile = _profile(checks, raw_profile, profile_path, memory_total, memory_slices, compute_slices)
        for field in ("name", "enum", "id"):  # each answers for one profile only
            value = getattr(profile, field)
            other = next((j for j, p in enumerate(profiles) if getattr(p, field) == value), None)
            if other is not None:
                raise checks.error(f"{profile_path}.{field}",
                                   f"{value} is already the {field} of {path}.profiles[{other}]")
        profiles.append(profile)
    return GpuModel(
        key=key, nvml_name=nvml_name, memory_total_mib=memory_total,
        pci_device_ids=(checks.integer(entry["pci_device_id"], f"{path}.pci_device_id", 0, 0xFFFF),),
        memory_slices=memory_slices, compute_slices=compute_slices, architecture=architecture,
        profiles=tuple(profiles),
    )


def _profile(checks: Checks, raw: Any, path: str, memory_total: int, memory_slices: int,
             compute_slices: int) -> GpuInstanceProfile:
    required = tuple(k for k in PROFILE_KEYS if k not in ENGINE_KEYS)
    entry = checks.mapping(raw, path, PROFILE_KEYS, required=required)
    slices = checks.integer(entry["slices"], f"{path}.slices", 1, compute_slices)
    name = checks.string(entry["name"], f"{path}.name")
    match = PROFILE_NAME.match(name)
    if match is None:
        raise checks.error(f"{path}.name", f"{name!r} is not a profile name like 3g.40gb, 1g.10gb+me or "
                                           "1g.24gb+gfx (variants: +me, +me.all, +gfx, -me)")
    if int(match.group("g")) != slices:
        raise checks.error(f"{path}.name",
                           f"{name} names {match.group('g')} compute slices, but slices is {slices}")
    size = checks.integer(entry["placement_size"], f"{path}.placement_size", 1, memory_slices)
    if not _power_of_two(size):
        raise checks.error(f"{path}.placement_size", f"{size} is not a power of two (1, 2, 4, 8 …)")
    starts = _placement_starts(checks, entry["placement_starts"], f"{path}.placement_starts", size,
                               memory_slices)
    return GpuInstanceProfile(
        enum=checks.integer(entry["enum"], f"{path}.enum", 0, pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT - 1),
        id=checks.integer(entry["id"], f"{path}.id", 0, UINT_MAX - 1),
        name=name,
        memory_mib=checks.integer(entry["memory_mib"], f"{path}.memory_mib", 1, memory_total),
        multiprocessors=checks.integer(entry["multiprocessors"], f"{path}.multiprocessors", 1, UINT_MAX),
        max_count=checks.integer(entry["max_count"], f"{path}.max_count", 1, len(starts)),
        slice_count=slices,
        placement_starts=starts,
        placement_size=size,
        **{key: checks.integer(entry.get(key, 0), f"{path}.{key}", 0, UINT_MAX) for key in ENGINE_KEYS},
    )


def _placement_starts(checks: Checks, raw: Any, path: str, size: int, memory_slices: int) -> tuple[int, ...]:
    starts = [checks.integer(s, f"{path}[{i}]", 0, memory_slices - 1)
              for i, s in enumerate(checks.sequence(raw, path))]
    if not starts:
        raise checks.error(path, "a profile needs at least one placement")
    for i, start in enumerate(starts):
        if start % size or start + size > memory_slices:
            last = memory_slices - size
            raise checks.error(f"{path}[{i}]", f"{start} is not a start of {size} memory slices out of "
                                               f"{memory_slices} (a multiple of {size} up to {last})")
        if start in starts[:i]:
            raise checks.error(f"{path}[{i}]", f"{start} is listed twice")
    return tuple(sorted(starts))


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0
