"""NVIDIA mig-parted's v1 config format: read it as strictly as mig-parted does, and write it.

What mig-parted accepts is accepted here, and what it refuses is refused with the place and the
reason (its ``api/spec/v1`` and ``pkg/types`` rules): ``version: v1``; ``mig-configs`` with at least
one config of at least one entry; each entry with ``devices`` (``all`` or indices) and
``mig-enabled``, optionally ``device-filter`` (a PCI ID string or a list) and ``mig-devices``
(required when MIG is enabled, empty when it is not); no other field. Profile names are
``[<C>c.]<G>g.<GB>gb[+attribute…]``: compute-instance profiles (``1c.3g.40gb``) included. Whether a
profile exists on a GPU is the GPU's business (``layout.py`` asks the model), not the format's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from mig_exporter.errors import InputError, shown_key

VERSION = "v1"
# Slice counts mig-parted knows for GPU and compute instances (NVML's *_PROFILE_<N>_SLICE).
SLICE_COUNTS = (1, 2, 3, 4, 6, 7, 8)
# Attributes as go-nvlib spells them after "+" (me, me.all, gfx) and the negative "-me".
_PROFILE = re.compile(
    r"(?:(?P<c>\d+)c\.)?(?P<g>\d+)g\.(?P<gb>\d+)gb(?P<attrs>(?:\+[a-z][a-z0-9]*(?:\.[a-z][a-z0-9]*)*)*)"
    r"(?P<neg>(?:-[a-z][a-z0-9]*)*)", re.ASCII)
_ENTRY_FIELDS = ("device-filter", "devices", "mig-enabled", "mig-devices")


def check_profile(name: str) -> None:
    """``ValueError`` with mig-parted's reason when it would refuse the profile name ``name``."""
    m = _PROFILE.fullmatch(name)
    if m is None:
        raise ValueError("not a MIG profile name like 3g.40gb, 1c.3g.40gb or 1g.10gb+me")
    attrs = m.group("attrs").split("+")[1:]
    if len(set(attrs)) != len(attrs):
        raise ValueError("an attribute is repeated")
    g = int(m.group("g"))
    c = int(m.group("c")) if m.group("c") else g
    for what, slices in (("GPU instance", g), ("compute instance", c)):
        if slices not in SLICE_COUNTS:
            raise ValueError(f"{slices} is not a {what} slice count ({', '.join(map(str, SLICE_COUNTS))})")
    if c > g:
        raise ValueError(f"a {c}-slice compute instance does not fit a {g}-slice GPU instance")
    if int(m.group("gb")) == 0:
        raise ValueError("0gb is not a memory size")


@dataclass(frozen=True)
class Entry:
    """One entry of a config: these GPUs get this MIG mode and these MIG devices."""

    devices: str | tuple[int, ...]  # "all" or GPU indices
    mig_enabled: bool
    mig_devices: tuple[tuple[str, int], ...] = ()  # profile name -> count, in the file's order
    device_filter: tuple[str, ...] = ()  # PCI IDs as mig-parted writes them: 0x20B210DE

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {}
        if self.device_filter:
            document["device-filter"] = list(self.device_filter)
        document["devices"] = self.devices if isinstance(self.devices, str) else list(self.devices)
        document["mig-enabled"] = self.mig_enabled
        if self.mig_enabled:
            document["mig-devices"] = dict(self.mig_devices)
        return document


Configs = dict[str, tuple[Entry, ...]]


def parse_document(document: Any, where: str) -> Configs:
    """Every config of a mig-parted v1 document, or ``InputError`` naming ``where`` and the place."""
    if not isinstance(document, dict) or "version" not in document:
        raise InputError(f"{where}: not a mig-parted config (expected version: v1 and mig-configs)")
    if document["version"] != VERSION:
        raise InputError(f"{where}: version: {document['version']!r} is not v1")
    for key in document:
        if key not in ("version", "mig-configs"):
            raise InputError(f"{where}: unexpected field {shown_key(key)} (mig-parted allows version "
                             "and mig-configs)")
    configs = document.get("mig-configs")
    if not isinstance(configs, dict) or not configs:
        raise InputError(f"{where}: mig-configs: expected a mapping of at least one config name")
    parsed: Configs = {}
    for name, entries in configs.items():
        at = f"{where}: mig-configs.{shown_key(name)}"
        if not isinstance(name, str):
            raise InputError(f"{at}: a config name must be a string")
        if not isinstance(entries, list) or not entries:
            raise InputError(f"{at}: expected a list of at least one entry")
        parsed[name] = tuple(_entry(entry, f"{at}[{number}]") for number, entry in enumerate(entries))
    return parsed


def _entry(entry: Any, where: str) -> Entry:
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected a mapping with devices, mig-enabled and mig-devices")
    for key in entry:
        if key not in _ENTRY_FIELDS:
            raise InputError(f"{where}: unexpected field {shown_key(key)} "
                             f"(mig-parted allows {', '.join(_ENTRY_FIELDS)})")
    for key in ("devices", "mig-enabled"):
        if key not in entry:
            raise InputError(f"{where}: missing required field {key}")
    devices = entry["devices"]
    if devices != "all" and not (isinstance(devices, list) and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)):
        raise InputError(f"{where}.devices: expected all or a list of GPU indices, got {devices!r}")
    enabled = entry["mig-enabled"]
    if not isinstance(enabled, bool):
        raise InputError(f"{where}.mig-enabled: expected true or false, got {enabled!r}")
    mig_devices = _mig_devices(entry, enabled, f"{where}.mig-devices")
    return Entry("all" if devices == "all" else tuple(devices), enabled, mig_devices,
                 _device_filter(entry.get("device-filter"), f"{where}.device-filter"))


def _mig_devices(entry: dict[str, Any], enabled: bool, where: str) -> tuple[tuple[str, int], ...]:
    if "mig-devices" not in entry or entry["mig-devices"] is None:
        if enabled:
            raise InputError(f"{where}: required when mig-enabled is true (use {{}} for no MIG devices)")
        return ()
    devices = entry["mig-devices"]
    if not isinstance(devices, dict):
        raise InputError(f"{where}: expected a mapping of profile name to count, like {{3g.40gb: 2}}")
    counts = []
    for name, count in devices.items():
        if not isinstance(name, str):
            raise InputError(f"{where}: {name!r} is not a profile name")
        try:
            check_profile(name)
        except ValueError as error:
            raise InputError(f"{where}: {shown_key(name)}: {error}") from None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise InputError(f"{where}.{shown_key(name)}: expected a count of 0 or more, got {count!r}")
        counts.append((name, count))
    if not enabled and counts:
        raise InputError(f"{where}: MIG devices given while mig-enabled is false")
    return tuple(counts)


def _device_filter(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    for item in values:
        if not isinstance(item, str) or not _is_pci_id(item):
            raise InputError(f"{where}: {item!r} is not a PCI ID like 0x20B210DE")
    return tuple(values)


def _is_pci_id(text: str) -> bool:
    """``0x20B210DE`` (device and vendor), optionally ``:0x…`` for the subsystem, as mig-parted reads it."""
    parts = text.split(":")
    return len(parts) <= 2 and all(re.fullmatch(r"(0[xX])?[0-9A-Fa-f]{1,8}", p) for p in parts)


def to_document(configs: Configs) -> dict[str, Any]:
    return {"version": VERSION, "mig-configs": {
        name: [entry.to_document() for entry in entries] for name, entries in configs.items()}}


def render(configs: Configs) -> str:
    """The configs as a mig-parted v1 YAML file; it parses back to the same configs."""
    return yaml.safe_dump(to_document(configs), sort_keys=False, default_flow_style=None, width=120)
