"""What the session knows of each GPU between collections: what cannot change while the GPU stays the
same board under the same NVML initialisation, so a collection reads it only once.

Kept per GPU index: the device handle; the identity (UUID, name, PCI, serial); which calls the GPU
never supports; the MIG layout (``mig_read``) and the MIG mode it was read under. The session
forgets a GPU (``NvmlSession.forget_gpu``) when NVML is initialised again, the GPU count changes
(hot-plug), the GPU answers GPU_IS_LOST, its MIG mode changes, or remediate writes to it; the next
collection reads it all again.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mig_exporter.nvml.mig_read import MigLayout


@dataclass(frozen=True)
class Identity:
    uuid: str | None
    name: str | None
    pci_bus_id: str | None
    pci_device_id: int | None  # e.g. 0x20B2 for A100-SXM4-80GB
    serial: str | None


@dataclass
class KnownGpu:
    handle: Any
    identity: Identity | None = None
    unsupported: set[Hashable] = field(default_factory=set)  # calls.Collection's keys
    mig_current: bool | None = None  # the MIG mode seen last
    layout: MigLayout | None = None
    collections_since_layout: int = 0
