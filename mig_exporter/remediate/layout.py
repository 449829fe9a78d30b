"""Targets: which GPUs to partition and into what, from ``--gpu``/``--layout`` or a mig-parted config.

Profile names are resolved against each GPU's MIG capability as NVML reported it
(``capability.match_profile``), so ``3g``, ``3g.40gb`` and a drifted ``3g.39gb`` all name the same
profile, and the same name on mixed GPUs resolves to each GPU's own profile (mig-parted #31, #157).
Every mistake is an ``InputError`` naming the flag or the file and the reason, raised before
anything is planned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mig_exporter.capability import GpuInstanceProfile, MigCapability, capability_of, match_profile
from mig_exporter.errors import InputError, read_yaml_file
from mig_exporter.model import Gpu, Snapshot
from mig_exporter.numbers import is_whole_number
from mig_exporter.remediate import migparted

_COMPUTE_PREFIX = re.compile(r"\d+c\.")


@dataclass(frozen=True)
class GpuTarget:
    """What one GPU should become. ``capability`` is None when the GPU cannot do MIG (as NVML says)."""

    gpu_index: int
    capability: MigCapability | None
    mig_enabled: bool
    profiles: tuple[GpuInstanceProfile, ...]  # the GPU instances wanted, each with one compute instance
    # compute slices of each one's compute instance, in the order of ``profiles``; () when all are
    # full size. ``1c.3g.40gb`` is a 3g.40gb GPU instance with a 1-slice compute instance.
    compute_slices: tuple[int, ...] = ()

    @property
    def devices(self) -> tuple[str, ...]:
        """The MIG devices wanted, as mig-parted names them: ``3g.40gb``, ``1c.3g.40gb``."""
        slices = self.compute_slices or tuple(p.slice_count for p in self.profiles)
        return tuple(p.name if c == p.slice_count else f"{c}c.{p.name}"
                     for p, c in zip(self.profiles, slices, strict=True))

    @property
    def layout(self) -> str:
        return ",".join(self.devices) if self.mig_enabled else "MIG disabled"


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


def _target(gpu: Gpu, capability: MigCapability, names: list[str], where: str) -> GpuTarget:
    """GPU instances and their compute instance sizes for MIG device names (``3g``, ``1c.3g.40gb``)."""
    profiles, slices = [], []
    for name in names:
        compute, _, instance = name.rpartition("c.") if _COMPUTE_PREFIX.match(name) else ("", "", name)
        profile = match_profile(capability, instance)
        if profile is None:
            have = ", ".join(p.name for p in capability.profiles)
            raise InputError(f"{where}: unknown profile {name!r} for GPU {gpu.index} "
                             f"({gpu.name or 'unnamed GPU'}): NVML lists {have}")
        c = int(compute) if compute else profile.slice_count
        valid = profile.compute_slice_options()
        if c not in valid:
            raise InputError(f"{where}: {name!r}: a {profile.name} GPU instance takes compute instances "
                             f"of {', '.join(map(str, valid))} slices, not {c}")
        profiles.append(profile)
        slices.append(c)
    full = all(c == p.slice_count for p, c in zip(profiles, slices, strict=True))
    return GpuTarget(gpu.index, capability, True, tuple(profiles), () if full else tuple(slices))


def layout_targets(gpu_spec: str, layout_spec: str, snapshot: Snapshot) -> tuple[GpuTarget, ...]:
    """``--gpu 0,1 --layout 3g.40gb,3g.40gb``: the same layout on every selected GPU."""
    names = [name.strip() for name in layout_spec.split(",")]
    if not all(names):
        raise InputError(f"--layout {layout_spec}: empty profile name; "
                         "give names like 3g.40gb,3g.40gb or 3g,3g")
    targets = []
    for index in select_gpus(gpu_spec, snapshot):
        gpu = snapshot.gpu(index)
        capability = capability_of(gpu)
        targets.append(GpuTarget(index, None, True, ()) if capability is None
                       else _target(gpu, capability, names, f"--layout {layout_spec}"))
    return tuple(targets)


def mig_parted_targets(path: str, config_name: str, snapshot: Snapshot) -> tuple[GpuTarget, ...]:
    """``--mig-parted-config FILE --config NAME``: mig-parted's v1 format (``migparted.py``).

    Each entry of the config selects GPUs by ``devices`` (``all`` or indices) and, optionally, by
    ``device-filter`` (PCI IDs as mig-parted writes them, ``0x20B210DE``: device then vendor).
    """
    document = read_yaml_file(path, unreadable=f"--mig-parted-config {path}")
    configs = migparted.parse_document(document, path)
    if config_name not in configs:
        raise InputError(f"{path}: no config {config_name!r} (configs: {', '.join(configs)})")
    chosen: dict[int, tuple[int, GpuTarget]] = {}
    for number, entry in enumerate(configs[config_name]):
        where = f"{path}: mig-configs.{config_name}[{number}]"
        for gpu in _entry_gpus(entry, snapshot, where):
            if gpu.index in chosen:
                first = chosen[gpu.index][0]
                raise InputError(f"{where}: GPU {gpu.index} is already selected by entry {first}")
            chosen[gpu.index] = (number, _entry_target(entry, gpu, where))
    if not chosen:
        raise InputError(f"{path}: config {config_name!r} selects no GPU on this host")
    return tuple(target for _, (_, target) in sorted(chosen.items()))


def _entry_gpus(entry: migparted.Entry, snapshot: Snapshot, where: str) -> list[Gpu]:
    if isinstance(entry.devices, str):  # "all"
        gpus = list(snapshot.gpus)
    else:
        known = {gpu.index for gpu in snapshot.gpus}
        missing = sorted(set(entry.devices) - known)
        if missing:
            raise InputError(f"{where}.devices: no GPU {missing[0]} on this host")
        gpus = [snapshot.gpu(index) for index in sorted(set(entry.devices))]
    if not entry.device_filter:
        return gpus
    wanted = {_device_id(int(item.split(":")[0], 16)) for item in entry.device_filter}
    selected = []
    for gpu in gpus:
        if gpu.pci_device_id is None:
            raise InputError(f"{where}.device-filter: NVML gave no PCI device ID for GPU {gpu.index}")
        if _device_id(gpu.pci_device_id) in wanted:
            selected.append(gpu)
    return selected


def _device_id(pci_id: int) -> int:
    """The 16-bit device ID from either form: ``0x20B2`` or NVML's/mig-parted's ``0x20B210DE``."""
    return pci_id >> 16 if pci_id > 0xFFFF else pci_id


def _entry_target(entry: migparted.Entry, gpu: Gpu, where: str) -> GpuTarget:
    capability = capability_of(gpu)
    if not entry.mig_enabled:
        return GpuTarget(gpu.index, capability, False, ())
    names = [name for name, count in entry.mig_devices for _ in range(count)]
    if capability is None:
        return GpuTarget(gpu.index, None, True, ())
    return _target(gpu, capability, names, f"{where}.mig-devices")
