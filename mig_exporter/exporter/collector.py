"""Snapshot → Prometheus metric families: every series the exporter serves (docs/metrics.md).

``metric_families`` is a pure function of the last Snapshot and the exporter's running totals, so
the series can be tested from a Snapshot built by hand, and nothing here can reach NVML: the
scheduler reads NVML, the collector only formats. Identity (name, PCI bus, profile) is only on the
``_info`` series; every other GPU series carries just ``gpu`` and ``uuid`` to join on.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from itertools import islice
from typing import TypeVar

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from mig_exporter import __version__
from mig_exporter.advice import Advice, advise
from mig_exporter.exporter.families import GPU_LABELS, MIG_LABELS
from mig_exporter.exporter.families import counter as _counter
from mig_exporter.exporter.families import gauge as _gauge
from mig_exporter.exporter.families import gpu_samples as _gpu_samples
from mig_exporter.exporter.families import mig_labels as _mig_labels
from mig_exporter.exporter.families import mig_samples as _mig_samples
from mig_exporter.exporter.gpm_families import gpm_families
from mig_exporter.exporter.health_families import health_families
from mig_exporter.findings import is_unpartitioned_sharing, process_gpus, sharing_read, spanning_processes
from mig_exporter.kubelet.podresources import DeviceAllocation, process_allocation
from mig_exporter.model import GpuProcess, Snapshot

DEFAULT_MAX_PROCESS_SERIES = 2000

# The pod, namespace and container the kubelet allocated the process's device to; empty when unknown.
WORKLOAD_LABELS = ["namespace", "pod", "container"]
PROCESS_LABELS = ["gpu", "uuid", "gpu_instance_id", "compute_instance_id", "pid", "process_name",
                  *WORKLOAD_LABELS]
PROCESS_UTILIZATION_LABELS = ["gpu", "uuid", "pid", "process_name"]  # MIG off: no instance IDs

T = TypeVar("T")


@dataclass(frozen=True)
class ExporterTotals:
    """What accumulates over collections, and what comes from outside NVML; a Snapshot only knows
    its own collection."""

    errors_by_call: Mapping[str, int] = field(default_factory=dict)
    timeouts: int = 0
    process_series_dropped: int = 0
    process_names_skipped: int = 0
    # device ID (GPU or MIG device UUID) → the container the kubelet allocated it to
    allocations: Mapping[str, DeviceAllocation] = field(default_factory=dict)


@dataclass(frozen=True)
class ExporterSettings:
    interval_seconds: float
    max_process_series: int | None = DEFAULT_MAX_PROCESS_SERIES  # None: no cap


def process_series_dropped(snapshot: Snapshot, max_process_series: int | None) -> int:
    """How many process series the cap leaves out of this Snapshot (every per-process family)."""
    if max_process_series is None:
        return 0
    memory_series = sum(1 for p in snapshot.processes if p.used_memory_bytes is not None)
    pid_series = len(process_gpus(snapshot)) if snapshot.processes_complete else 0
    sm_series = sum(1 for p in snapshot.processes if p.sm_utilization_ratio is not None)
    memory_util_series = sum(1 for p in snapshot.processes if p.memory_utilization_ratio is not None)
    return sum(max(0, series - max_process_series)
               for series in (memory_series, pid_series, sm_series, memory_util_series))


def metric_families(
    snapshot: Snapshot | None, totals: ExporterTotals, settings: ExporterSettings,
    advice: Advice | None = None,
) -> Iterator[Metric]:
    """Every family; before the first collection (``snapshot`` None) only the exporter's own.
    ``advice`` is ``advise(snapshot)``, passed in so that scrapes of one Snapshot share it."""
    yield from _exporter_families(snapshot, totals, settings)
    if snapshot is None:
        return
    yield _gauge("nvml_up", "1 when the last collection reached NVML, else 0.", [], [([], snapshot.nvml_up)])
    if not snapshot.nvml_up:
        # Nothing was read: no series may claim a value (a "0 processes spanning GPUs" during an
        # NVML outage would read as healthy on a dashboard).
        return
    yield _gauge(
        "nvml_driver_info", "The NVIDIA driver, CUDA driver API and NVML versions; value 1.",
        ["driver_version", "cuda_driver_version", "nvml_version"],
        [([snapshot.driver_version or "", snapshot.cuda_driver_version or "",
           snapshot.nvml_version or ""], 1)],
    )
    yield from _gpu_families(snapshot)
    yield from _advice_families(snapshot, advice)
    yield from health_families(snapshot)
    yield from _mig_families(snapshot)
    yield from gpm_families(snapshot)
    yield from _allocation_families(snapshot, totals.allocations)
    yield from _process_families(snapshot, settings.max_process_series, totals.allocations)
    yield from _process_utilization_families(snapshot, settings.max_process_series)


class SnapshotCollector(Collector):
    """A prometheus_client collector over whatever ``current`` returns at collection time."""

    def __init__(
        self, current: Callable[[], tuple[Snapshot | None, ExporterTotals]], settings: ExporterSettings,
    ) -> None:
        self._current = current
        self._settings = settings
        # The advice of the Snapshot last scraped: the Snapshot changes once per collection, the
        # scrapes in between would otherwise each compute it again (150 ms on 1000 processes).
        self._advised: tuple[Snapshot, Advice | None] | None = None

    def collect(self) -> Iterable[Metric]:
        snapshot, totals = self._current()
        return list(metric_families(snapshot, totals, self._settings, self._advice_of(snapshot)))

    def _advice_of(self, snapshot: Snapshot | None) -> Advice | None:
        if snapshot is None or not snapshot.nvml_up:
            return None
        advised = self._advised
        if advised is None or advised[0] is not snapshot:
            advised = (snapshot, advise(snapshot))
            self._advised = advised
        return advised[1]


def _package_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return ""


_BUILD_LABELS = {
    "version": __version__,
    "nvidia_ml_py_version": _package_version("nvidia-ml-py"),
    "python_version": platform.python_version(),
}


def _exporter_families(
    snapshot: Snapshot | None, totals: ExporterTotals, settings: ExporterSettings,
) -> Iterator[Metric]:
    yield _gauge("mig_exporter_build_info", "mig-exporter's version and what it runs on; value 1.",
                 list(_BUILD_LABELS), [(list(_BUILD_LABELS.values()), 1)])
    yield _gauge("mig_exporter_collect_interval_seconds",
                 "The configured --collect.interval, to tell a stale exporter from a slow one.",
                 [], [([], settings.interval_seconds)])
    yield _counter("mig_exporter_collection_errors",
                   "NVML calls that failed, by pynvml function (unsupported values are not errors), "
                   "and failed kubelet pod-resources polls (call pod_resources).",
                   ["call"], [([call], count) for call, count in sorted(totals.errors_by_call.items())])
    yield _counter("mig_exporter_collection_timeouts",
                   "Collections abandoned after --collect.timeout (a hung NVML call).",
                   [], [([], totals.timeouts)])
    yield _counter("mig_exporter_process_series_dropped",
                   "Process series left out by --collect.max-process-series.",
                   [], [([], totals.process_series_dropped)])
    yield _counter("mig_exporter_process_name_lookups_skipped",
                   "Process names not asked of NVML because their processes were past "
                   "--collect.max-process-series (their series are left out anyway).",
                   [], [([], totals.process_names_skipped)])
    if snapshot is None:
        return
    yield _gauge("mig_exporter_last_collection_timestamp_seconds",
                 "Unix time at which the last finished collection ended.", [], [([], snapshot.taken_at)])
    yield _gauge("mig_exporter_collection_duration_seconds",
                 "How long the last finished collection took.", [], [([], snapshot.duration_seconds)])
    yield _gauge("mig_exporter_collection_nvml_calls",
                 "NVML calls made by the last finished collection.", [], [([], snapshot.nvml_calls)])


def _gpu_families(snapshot: Snapshot) -> Iterator[Metric]:
    gpus = snapshot.gpus
    present = [g for g in gpus if not g.lost]
    mig_capable = [g for g in present if g.mig_supported]
    yield _gauge(
        "nvml_gpu_info", "One per physical GPU, with its identity; value 1.",
        ["gpu", "uuid", "name", "pci_bus_id", "pci_device_id", "serial"],
        [([str(g.index), g.uuid, g.name or "", g.pci_bus_id or "",
           "" if g.pci_device_id is None else f"0x{g.pci_device_id:04X}", g.serial or ""], 1) for g in gpus],
    )
    yield _gauge("nvml_gpu_lost", "1 when NVML reports the GPU lost (GPU_IS_LOST), else 0.",
                 GPU_LABELS, _gpu_samples(gpus, lambda g: g.lost))
    yield _gauge("mig_exporter_gpu_stale",
                 "1 when the GPU's read did not finish within the collection's time (a slow or hung NVML "
                 "call): its series are those of its last finished read; else 0.",
                 GPU_LABELS, _gpu_samples(gpus, lambda g: g.stale))
    yield _gauge("nvml_gpu_mig_mode_current", "1 when MIG is enabled now, else 0.",
                 GPU_LABELS, _gpu_samples(mig_capable, lambda g: g.mig_mode_current))
    yield _gauge("nvml_gpu_mig_mode_pending",
                 "MIG mode after the next reset or reboot (1 enabled); differs from current while pending.",
                 GPU_LABELS, _gpu_samples(mig_capable, lambda g: g.mig_mode_pending))
    yield _gauge("nvml_gpu_persistence_mode", "1 when persistence mode is on, else 0.",
                 GPU_LABELS, _gpu_samples(present, lambda g: g.persistence_mode))
    yield _gauge("nvml_gpu_memory_total_bytes", "Memory of the whole GPU.",
                 GPU_LABELS, _gpu_samples(present, lambda g: g.memory_total_bytes))
    yield _gauge("nvml_gpu_memory_used_bytes", "Memory used on the whole GPU (all instances).",
                 GPU_LABELS, _gpu_samples(present, lambda g: g.memory_used_bytes))
    yield _gauge("nvml_gpu_memory_reserved_bytes", "Memory the driver reserves for itself.",
                 GPU_LABELS, _gpu_samples(present, lambda g: g.memory_reserved_bytes))
    yield _gauge("nvml_gpu_mig_instances",
                 "Number of MIG GPU instances (0 with MIG off; absent when NVML would not list them).",
                 GPU_LABELS, _gpu_samples([g for g in mig_capable if g.gpu_instances_complete],
                                          lambda g: len(g.gpu_instances)))
    yield _gauge(
        "nvml_gpu_mig_profile_capacity",
        "GPU instances of the profile that can still be created on the MIG GPU now (NVML's count).",
        ["gpu", "uuid", "profile"],
        [([str(g.index), g.uuid, profile], count)
         for g in present for profile, count in g.mig_profile_capacity or ()],
    )
    processes_read = [g for g in present if g.processes_complete]
    yield _gauge("nvml_gpu_processes",
                 "Compute processes holding memory on the GPU, in any instance (absent when NVML "
                 "would not list them all).",
                 GPU_LABELS, _gpu_samples(processes_read, lambda g: len(g.pids)))
    yield _gauge("nvml_gpu_unpartitioned_sharing",
                 "1 when MIG is off and two or more processes share the GPU with no isolation, else 0.",
                 GPU_LABELS, _gpu_samples([g for g in present if sharing_read(g)], is_unpartitioned_sharing))
    yield _gauge("nvml_gpu_utilization_ratio",
                 "Fraction of the last sample period a kernel ran (absent on MIG GPUs: NVML does not say).",
                 GPU_LABELS, _gpu_samples(present, lambda g: g.utilization_gpu_ratio))
    yield _gauge("nvml_gpu_memory_utilization_ratio",
                 "Fraction of the last sample period device memory was read or written.",
                 GPU_LABELS, _gpu_samples(present, lambda g: g.utilization_memory_ratio))
    yield _gauge("nvml_gpu_temperature_celsius", "GPU core temperature.",
                 GPU_LABELS, _gpu_samples(present, lambda g: g.temperature_celsius))
    yield _gauge("nvml_gpu_power_usage_watts", "Power drawn by the GPU board.",
                 GPU_LABELS, _gpu_samples(present, lambda g: g.power_watts))
    yield _gauge("nvml_gpu_power_limit_watts", "Power limit the driver enforces.",
                 GPU_LABELS, _gpu_samples(present, lambda g: g.power_limit_watts))
    yield _gauge("nvml_gpu_clock_sm_hertz", "Current SM clock.",
                 GPU_LABELS, _gpu_samples(present, lambda g: g.clock_sm_hz))
    yield _gauge("nvml_gpu_clock_memory_hertz", "Current memory clock.",
                 GPU_LABELS, _gpu_samples(present, lambda g: g.clock_memory_hz))
    yield _counter("nvml_gpu_ecc_errors_corrected", "Corrected ECC errors over the GPU's life.",
                   GPU_LABELS, _gpu_samples(present, lambda g: g.ecc_errors_corrected_total))
    yield _counter("nvml_gpu_ecc_errors_uncorrected", "Uncorrected ECC errors over the GPU's life.",
                   GPU_LABELS, _gpu_samples(present, lambda g: g.ecc_errors_uncorrected_total))


def _advice_families(snapshot: Snapshot, advice: Advice | None) -> Iterator[Metric]:
    """The advice ``diagnose`` prints, the same one: the layout per GPU it partitions, and the GPUs
    it frees (on the incident: GPU 0 as 3g.40gb,3g.40gb, GPUs 1-3 freed)."""
    layouts = advice.layouts if advice is not None else ()
    freed = advice.freed_gpus if advice is not None else ()
    yield _gauge(
        "mig_exporter_advised_layout_info",
        "The MIG layout diagnose advises for a GPU, one instance per workload moved onto it; value 1.",
        ["gpu", "uuid", "layout"],
        [([str(layout.gpu_index), snapshot.gpu(layout.gpu_index).uuid, ",".join(layout.profiles)], 1)
         for layout in layouts],
    )
    yield _gauge(
        "mig_exporter_advised_freed_gpu_info",
        "A GPU diagnose's advice frees: its workloads move into MIG instances on other GPUs; value 1.",
        GPU_LABELS, [([str(index), snapshot.gpu(index).uuid], 1) for index in freed],
    )


def _mig_families(snapshot: Snapshot) -> Iterator[Metric]:
    migs = [m for g in snapshot.gpus for m in g.mig_instances]
    yield _gauge(
        "nvml_gpu_instance_info",
        "One per MIG GPU instance, with or without compute instances, with its placement; value 1.",
        ["gpu", "uuid", "gpu_instance_id", "profile", "placement_start", "placement_size"],
        [([str(g.index), g.uuid, str(i.gpu_instance_id), i.profile, str(i.placement_start),
           str(i.placement_size)], 1) for g in snapshot.gpus for i in g.gpu_instances],
    )
    yield _gauge("nvml_mig_instance_info", "One per MIG device (compute instance) with its profile; value 1.",
                 [*MIG_LABELS, "profile"], [([*_mig_labels(m), m.profile], 1) for m in migs])
    yield _gauge("nvml_mig_instance_memory_total_bytes", "Memory of the MIG device's GPU instance.",
                 MIG_LABELS, _mig_samples(migs, lambda m: m.memory_total_bytes))
    yield _gauge("nvml_mig_instance_memory_used_bytes", "Memory used in the MIG device's GPU instance.",
                 MIG_LABELS, _mig_samples(migs, lambda m: m.memory_used_bytes))
    yield _gauge("nvml_mig_instance_multiprocessors", "Streaming multiprocessors of the MIG device.",
                 MIG_LABELS, _mig_samples(migs, lambda m: m.multiprocessors))


def _capped(items: Iterable[T], cap: int | None) -> list[T]:
    """The first ``cap`` items (all for None): a stable order keeps the same series across
    collections."""
    return list(islice(items, cap))


def _allocation_families(snapshot: Snapshot, allocations: Mapping[str, DeviceAllocation]) -> Iterator[Metric]:
    """One series per allocated device NVML also sees; an allocation of a device NVML does not list
    has no GPU to name and is left out."""
    samples = []
    for gpu in snapshot.gpus:
        devices = [("", gpu.uuid)] + [(m.mig_uuid, m.mig_uuid) for m in gpu.mig_instances]
        for mig_uuid, device_id in devices:
            if (allocation := allocations.get(device_id)) is not None:
                samples.append(([str(gpu.index), gpu.uuid, mig_uuid, allocation.resource,
                                 *_workload_labels(allocation)], 1))
    yield _gauge("nvml_gpu_allocation_info",
                 "One per GPU or MIG device the kubelet allocated to a container; value 1.",
                 ["gpu", "uuid", "mig_uuid", "resource", *WORKLOAD_LABELS], samples)


def _workload_labels(allocation: DeviceAllocation | None) -> list[str]:
    if allocation is None:
        return ["", "", ""]
    return [allocation.namespace, allocation.pod, allocation.container]


def _process_labels(process: GpuProcess, allocation: DeviceAllocation | None) -> list[str]:
    def instance_id(value: int | None) -> str:
        return "" if value is None else str(value)

    return [str(process.gpu_index), process.gpu_uuid, instance_id(process.gpu_instance_id),
            instance_id(process.compute_instance_id), str(process.pid), process.name or "",
            *_workload_labels(allocation)]


def _process_families(
    snapshot: Snapshot, max_process_series: int | None, allocations: Mapping[str, DeviceAllocation],
) -> Iterator[Metric]:
    allocation_of = {id(p): process_allocation(snapshot, p, allocations) for p in snapshot.processes}
    with_memory = ((_process_labels(p, allocation_of[id(p)]), used) for p in snapshot.processes
                   if (used := p.used_memory_bytes) is not None)
    yield _gauge(
        "nvml_process_memory_bytes",
        "Memory a process holds on a GPU (MIG off: instance IDs empty) or on one MIG device.",
        PROCESS_LABELS, _capped(with_memory, max_process_series),
    )
    # Counts over GPUs are exact only when every GPU's processes were read: a process seen on one
    # GPU may hold memory on one that was not, and a lower bound is not the count.
    complete = snapshot.processes_complete
    # the first name and the first known pod seen win
    names = {p.pid: p.name or "" for p in reversed(snapshot.processes)}
    pods = {p.pid: a for p in reversed(snapshot.processes) if (a := allocation_of[id(p)]) is not None}
    yield _gauge(
        "nvml_process_gpus", "Physical GPUs the process holds memory on (more than 1: it spans GPUs).",
        ["pid", "process_name", *WORKLOAD_LABELS],
        [([str(pid), names[pid], *_workload_labels(pods.get(pid))], len(gpus))
         for pid, gpus in _capped(process_gpus(snapshot).items(), max_process_series)] if complete else [],
    )
    yield _gauge("nvml_processes_spanning_gpus", "Processes holding memory on more than one physical GPU.",
                 [], [([], len(spanning_processes(snapshot)))] if complete else [])


def _process_utilization_families(snapshot: Snapshot, max_process_series: int | None) -> Iterator[Metric]:
    """NVML's latest per-process sample, on GPUs without MIG; a process NVML did not sample has none."""
    def samples(ratio: Callable[[GpuProcess], float | None]) -> list[tuple[list[str], float]]:
        sampled = (([str(p.gpu_index), p.gpu_uuid, str(p.pid), p.name or ""], value)
                   for p in snapshot.processes if (value := ratio(p)) is not None)
        return _capped(sampled, max_process_series)

    yield _gauge("nvml_process_sm_utilization_ratio",
                 "Share of the sample period the process had kernels running on the SMs (MIG off).",
                 PROCESS_UTILIZATION_LABELS, samples(lambda p: p.sm_utilization_ratio))
    yield _gauge("nvml_process_memory_utilization_ratio",
                 "Share of the sample period the process was reading or writing device memory (MIG off).",
                 PROCESS_UTILIZATION_LABELS, samples(lambda p: p.memory_utilization_ratio))
