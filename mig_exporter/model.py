"""The Snapshot: one immutable reading of NVML that every feature consumes.

The reader (``mig_exporter.nvml.read``) is the only producer. The exporter, ``diagnose`` and
``remediate`` only consume Snapshots, so each of them can be tested with a Snapshot built by hand
and none of them can touch the hardware by accident. A value NVML did not give (not supported,
an error, a lost GPU) is ``None``: absent, never a made-up zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

from mig_exporter.capability import MigCapability
from mig_exporter.units import MIB as MIB  # re-exported: the unit the byte fields below are shown in


@dataclass(frozen=True)
class GpuProcess:
    """A compute process holding memory on one physical GPU, or on one MIG instance of it.

    The same pid appears once per device it holds memory on; a pid present under several
    physical GPUs is a process spanning GPUs.
    """

    pid: int
    name: str | None
    gpu_index: int
    gpu_uuid: str
    used_memory_bytes: int | None
    # None when MIG is off (NVML reports 0xFFFFFFFF there).
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    # NVML's latest per-process utilization sample (GPUs without MIG only); None: not sampled.
    sm_utilization_ratio: float | None = None
    memory_utilization_ratio: float | None = None


@dataclass(frozen=True)
class GpuInstance:
    """A MIG GPU instance: a slice of memory and SMs, with a fixed placement on the GPU."""

    gpu_index: int
    gpu_instance_id: int
    profile_id: int  # the driver's profile ID (``nvidia-smi mig -lgip`` ID column)
    profile: str  # the driver's name, e.g. "3g.40gb"
    placement_start: int
    placement_size: int
    compute_instance_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class GpmMetrics:
    """GPM activity (Hopper and later) of a GPU or GPU instance over ``window_seconds`` ending
    at or before the collection, each a 0-1 share; None where NVML did not give that metric."""

    window_seconds: float
    sm_utilization_ratio: float | None = None
    sm_occupancy_ratio: float | None = None
    tensor_utilization_ratio: float | None = None
    dram_bandwidth_utilization_ratio: float | None = None


@dataclass(frozen=True)
class MigInstance:
    """A MIG device as CUDA sees it: one compute instance inside one GPU instance.

    This is what ``nvidia-smi -L`` lists as ``MIG 3g.40gb Device 0`` and what a workload gets
    through ``CUDA_VISIBLE_DEVICES=MIG-…``.
    """

    gpu_index: int
    gpu_uuid: str
    mig_index: int  # index of the MIG device handle under its parent
    mig_uuid: str
    gpu_instance_id: int
    compute_instance_id: int
    profile: str  # "3g.40gb", or "1c.3g.40gb" for a compute instance smaller than its GPU instance
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    multiprocessors: int | None = None
    gpm: GpmMetrics | None = None  # its GPU instance's (GPM samples GPU instances)
    # compute slices of its compute instance (nvmlDeviceGetAttributes): 1 for 1c.3g.40gb, 3 for
    # 3g.40gb; None when NVML did not give them
    compute_slices: int | None = None


@dataclass(frozen=True)
class GpuHealth:
    """Health telemetry of one GPU; None for each value NVML did not give. Counters count over
    the GPU's life (energy: since the driver loaded). The slow ones (remapped rows, retired pages,
    NVLink, ECC) may be up to the reader's slow interval old."""

    energy_joules_total: float | None = None
    pcie_replays_total: int | None = None
    # (reason, active) for every clock event reason NVML defines, e.g. ("hw_thermal_slowdown", True)
    clock_event_reasons: tuple[tuple[str, bool], ...] | None = None
    remapped_rows_correctable_total: int | None = None
    remapped_rows_uncorrectable_total: int | None = None
    row_remap_pending: bool | None = None
    row_remap_failure: bool | None = None
    retired_pages_single_bit_ecc_total: int | None = None
    retired_pages_double_bit_ecc_total: int | None = None
    retired_pages_pending: bool | None = None
    # (error type, count summed over the links): crc_flit, crc_data, replay, recovery
    nvlink_errors_total: tuple[tuple[str, int], ...] = ()
    ecc_errors_corrected_total: int | None = None
    ecc_errors_uncorrected_total: int | None = None


@dataclass(frozen=True)
class Gpu:
    """One physical GPU as NVML reports it, with its MIG instances and processes."""

    index: int
    uuid: str
    name: str | None = None
    lost: bool = False  # NVML answered GPU_IS_LOST: the rest of the values are absent
    # Its read did not finish in time (a hung or slow NVML call): the values are its last read's.
    stale: bool = False
    pci_bus_id: str | None = None
    pci_device_id: int | None = None  # e.g. 0x20B2 for A100-SXM4-80GB
    serial: str | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    memory_reserved_bytes: int | None = None
    persistence_mode: bool | None = None
    mig_mode_current: bool | None = None  # None: MIG not supported on this GPU
    mig_mode_pending: bool | None = None
    # What MIG can make of this GPU, as NVML reported it (read once per NVML session); None when
    # MIG is not supported or NVML gave no profile table.
    mig_capability: MigCapability | None = None
    utilization_gpu_ratio: float | None = None
    utilization_memory_ratio: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    clock_sm_hz: float | None = None
    clock_memory_hz: float | None = None
    ecc_errors_corrected_total: int | None = None
    ecc_errors_uncorrected_total: int | None = None
    # Whether NVML delivers the GPU's XID events (None: not known, e.g. not registered yet), and
    # (XID, events seen since the exporter started) for each XID seen; None unless supported.
    xid_events_supported: bool | None = None
    xid_errors: tuple[tuple[int, int], ...] | None = None
    gpm: GpmMetrics | None = None  # None: not a GPM GPU, or no window yet
    health: GpuHealth = field(default_factory=GpuHealth)
    gpu_instances: tuple[GpuInstance, ...] = ()
    # False when NVML would not list every GPU instance (NO_PERMISSION for a reader without root):
    # ``gpu_instances`` may then miss some, and "no GPU instances" cannot be concluded from it.
    gpu_instances_complete: bool = True
    # (GPU instance profile name, how many more instances of it NVML says can be created now),
    # in NVML's profile order; None when MIG is off or not read. A profile whose count NVML did not
    # give is left out.
    mig_profile_capacity: tuple[tuple[str, int], ...] | None = None
    mig_instances: tuple[MigInstance, ...] = ()
    processes: tuple[GpuProcess, ...] = ()
    # False when some call needed to list the processes failed (the process list itself, or the
    # MIG devices they are listed under), or the GPU is lost: ``processes`` may then miss some, so
    # neither their count nor anything derived from it (sharing, spanning) can be concluded.
    processes_complete: bool = True
    # What of this GPU a failed call (not an "absent" answer) kept from this reading, as parts:
    # "gpu" (no handle), "identity", "mig_mode", "persistence", "mig_capability", "gpu_instances",
    # "mig_devices", "processes". remediate plans and verifies only GPUs whose parts it needs are read.
    unread: frozenset[str] = frozenset()

    @property
    def mig_supported(self) -> bool:
        return self.mig_mode_current is not None

    @property
    def mig_enabled(self) -> bool:
        return bool(self.mig_mode_current)

    @property
    def mig_pending_change(self) -> bool:
        """True when a MIG mode change waits for a reset or reboot."""
        return (
            self.mig_mode_current is not None
            and self.mig_mode_pending is not None
            and self.mig_mode_current != self.mig_mode_pending
        )

    @property
    def pids(self) -> frozenset[int]:
        return frozenset(p.pid for p in self.processes)


@dataclass(frozen=True)
class CollectionError:
    """One NVML call that failed during a collection; the rest of the Snapshot is still valid."""

    call: str  # the pynvml function, e.g. "nvmlDeviceGetPowerUsage"
    error: str  # NVML's error string, e.g. "Not Supported"
    gpu_index: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything one collection read. ``nvml_up`` is False when NVML itself could not be reached."""

    taken_at: float  # unix time at the end of the collection
    nvml_up: bool
    duration_seconds: float = 0.0
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # "12.9"
    nvml_version: str | None = None
    gpus: tuple[Gpu, ...] = ()
    errors: tuple[CollectionError, ...] = field(default=())
    nvml_calls: int = 0  # NVML calls made by this collection (for the benchmark and a metric)
    # pids whose name was not looked up: past the process-series cap, the exporter serves none of them
    process_names_skipped: int = 0
    # False when NVML would not count the GPUs: ``gpus`` is then empty, not "no GPU"
    gpus_complete: bool = True

    def gpu(self, index: int) -> Gpu:
        for gpu in self.gpus:
            if gpu.index == index:
                return gpu
        raise KeyError(f"no GPU with index {index}")

    @cached_property
    def processes(self) -> tuple[GpuProcess, ...]:
        """Kept: one exposition asks a dozen times, and 10,000 processes cost a rebuild each."""
        return tuple(p for g in self.gpus for p in g.processes)

    @cached_property
    def gpus_by_pid(self) -> Mapping[int, tuple[int, ...]]:
        """pid → the physical GPU indices it holds memory on (sorted). Several MIG instances of one
        GPU count as one GPU: spanning is about physical GPUs. Kept for the exposition, the advice
        and the spanning count alike."""
        gpus_by_pid: dict[int, set[int]] = defaultdict(set)
        for process in self.processes:
            gpus_by_pid[process.pid].add(process.gpu_index)
        return MappingProxyType({pid: tuple(sorted(gpus)) for pid, gpus in sorted(gpus_by_pid.items())})

    @property
    def processes_complete(self) -> bool:
        """Every GPU's processes were read: only then is a per-process GPU count exact (a process
        seen on one GPU may also hold memory on one that was not read)."""
        return self.gpus_complete and all(g.processes_complete and not g.lost for g in self.gpus)
