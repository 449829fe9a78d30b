"""Targets: which GPUs to partition and into what, from ``--gpu``/``--layout`` or a mig-parted config.

Profile names are resolved per GPU model with ``profiles.match_profile``, so ``3g``, ``3g.40gb`` and
a drifted ``3g.39gb`` all name the same profile, and the same name on mixed GPUs resolves to each
model's own profile (mig-parted #31, #157). Every mistake is an ``InputError`` naming the flag or
the file and the reason, raised before anything is planned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mig_exporter.errors import InputError, read_yaml_file
from mig_exporter.model import Gpu, Snapshot
from mig_exporter.numbers import is_whole_number
from mig_exporter.profiles import GpuInstanceProfile, GpuModel, match_profile, mig_model


@dataclass(frozen=True)
class GpuTarget:
    """What one GPU should become. ``model`` is None when the GPU is not a MIG-capable model."""

    gpu_index: int
    model: GpuModel | None
    mig_enabled: bool
    profiles: tuple[GpuInstanceProfile, ...]  # the GPU instances wanted, each with one full compute instance

    @property
    def layout(self) -> str:
        return ",".join(p.name for p in self.profiles) if self.mig_enabled else "MIG disabled"


def select_gpus(spec: str, snapshot: Snapshot) -> tuple[int, ...]:
    """``--gpu``: ``all``, or a comma-separated list of indices and GPU UUIDs, in index order."""
    known = {gpu.index for gpu in snapshot.gpus}
    by_uuid = {gpu.uuid.lower(): gpu.index for gpu in snapshot.gpus}
    tokens = [token.strip() for token in spec.split(",")]
    if tokens == ["all"]:
        return tuple(sorted(known))
    selected: set[int] = set()
    for token in tokens:
        if is_whole_number(token) and int(token) in known:
            selected.add(int(token))
        elif token.lower() in by_uuid:
            selected.add(by_uuid[token.lower()])
        else:
            indices = ", ".join(str(i) for i in sorted(known)) or "none"
            raise InputError(f"--gpu {spec}: no GPU {token!r} on this host "
                             f"(indices: {indices}, or a GPU UUID, or all)")
    return tuple(sorted(selected))


def resolve_profiles(
    names: list[str], gpu: Gpu, model: GpuModel, where: str,
) -> tuple[GpuInstanceProfile, ...]:
    """Each name as this model's profile, or an ``InputError`` that lists the model's profiles."""
    resolved = []
    for name in names:
        profile = match_profile(model, name)
        if profile is None:
            why = ("compute-instance profiles are not supported, give GPU instance profiles"
                   if "c." in name else f"{model.key} has {', '.join(p.name for p in model.profiles)}")
            raise InputError(f"{where}: unknown profile {name!r} for GPU {gpu.index} ({model.key}): {why}")
        resolved.append(profile)
    return tuple(resolved)


def layout_targets(gpu_spec: str, layout_spec: str, snapshot: Snapshot) -> tuple[GpuTarget, ...]:
    """``--gpu 0,1 --layout 3g.40gb,3g.40gb``: the same layout on every selected GPU."""
    names = [name.strip() for name in layout_spec.split(",")]
    if not all(names):
        raise InputError(f"--layout {layout_spec}: empty profile name; "
                         "give names like 3g.40gb,3g.40gb or 3g,3g")
    targets = []
    for index in select_gpus(gpu_spec, snapshot):
        gpu = snapshot.gpu(index)
        model = mig_model(gpu)
        profiles = () if model is None else resolve_profiles(names, gpu, model, f"--layout {layout_spec}")
        targets.append(GpuTarget(index, model, True, profiles))
    return tuple(targets)


def mig_parted_targets(path: str, config_name: str, snapshot: Snapshot) -> tuple[GpuTarget, ...]:
    """``--mig-parted-config FILE --config NAME``: mig-parted's v1 format, ``device-filter`` included.

    Each entry of the config selects GPUs by ``devices`` (``all`` or indices) and, optionally, by
    ``device-filter`` (PCI IDs as mig-parted writes them, ``0x20B210DE``: device then vendor).
    """
    entries = _config_entries(path, config_name)
    chosen: dict[int, tuple[int, GpuTarget]] = {}
    for number, entry in enumerate(entries):
        where = f"{path}: mig-configs.{config_name}[{number}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected a mapping with devices, mig-enabled and mig-devices")
        for gpu in _entry_gpus(entry, snapshot, where):
            if gpu.index in chosen:
                first = chosen[gpu.index][0]
                raise InputError(f"{where}: GPU {gpu.index} is already selected by entry {first}")
            chosen[gpu.index] = (number, _entry_target(entry, gpu, where))
    if not chosen:
        raise InputError(f"{path}: config {config_name!r} selects no GPU on this host")
    return tuple(target for _, (_, target) in sorted(chosen.items()))


def _config_entries(path: str, config_name: str) -> list[Any]:
    document = read_yaml_file(path, unreadable=f"--mig-parted-config {path}")
    if not isinstance(document, dict) or document.get("version") != "v1":
        raise InputError(f"{path}: not a mig-parted config (expected version: v1 and mig-configs)")
    configs = document.get("mig-configs")
    if not isinstance(configs, dict):
        raise InputError(f"{path}: mig-configs: expected a mapping of config names")
    if config_name not in configs:
        raise InputError(f"{path}: no config {config_name!r} (configs: {', '.join(map(str, configs))})")
    entries = configs[config_name]
    if not isinstance(entries, list):
        raise InputError(f"{path}: mig-configs.{config_name}: expected a list of entries")
    return entries


def _entry_gpus(entry: dict[str, Any], snapshot: Snapshot, where: str) -> list[Gpu]:
    devices = entry.get("devices")
    if devices == "all":
        gpus = list(snapshot.gpus)
    elif isinstance(devices, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in devices):
        known = {gpu.index for gpu in snapshot.gpus}
        missing = sorted(set(devices) - known)
        if missing:
            raise InputError(f"{where}.devices: no GPU {missing[0]} on this host")
        gpus = [snapshot.gpu(index) for index in sorted(set(devices))]
    else:
        raise InputError(f"{where}.devices: expected all or a list of GPU indices, got {devices!r}")
    if "device-filter" not in entry:
        return gpus
    wanted = _device_ids(entry["device-filter"], f"{where}.device-filter")
    selected = []
    for gpu in gpus:
        if gpu.pci_device_id is None:
            raise InputError(f"{where}.device-filter: NVML gave no PCI device ID for GPU {gpu.index}")
        if _device_id(gpu.pci_device_id) in wanted:
            selected.append(gpu)
    return selected


def _device_ids(value: Any, where: str) -> set[int]:
    values = value if isinstance(value, list) else [value]
    ids = set()
    for item in values:
        try:
            ids.add(_device_id(int(str(item), 16)))
        except ValueError as error:
            raise InputError(f"{where}: {item!r} is not a PCI ID like 0x20B210DE") from error
    return ids


def _device_id(pci_id: int) -> int:
    """The 16-bit device ID from either form: ``0x20B2`` or NVML's/mig-parted's ``0x20B210DE``."""
    return pci_id >> 16 if pci_id > 0xFFFF else pci_id


def _entry_target(entry: dict[str, Any], gpu: Gpu, where: str) -> GpuTarget:
    enabled = entry.get("mig-enabled")
    if not isinstance(enabled, bool):
        raise InputError(f"{where}.mig-enabled: expected true or false, got {enabled!r}")
    model = mig_model(gpu)
    if not enabled:
        return GpuTarget(gpu.index, model, False, ())
    devices = entry.get("mig-devices") or {}
    if not isinstance(devices, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in devices.values()):
        raise InputError(f"{where}.mig-devices: expected a mapping of profile name to count, "
                         "like {3g.40gb: 2}")
    names = [str(name) for name, count in devices.items() for _ in range(count)]
    profiles = () if model is None else resolve_profiles(names, gpu, model, f"{where}.mig-devices")
    return GpuTarget(gpu.index, model, True, profiles)
