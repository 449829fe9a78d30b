"""Findings: what is wrong in a Snapshot, as pure functions.

The exporter turns them into series, ``diagnose`` into a report and advice, and the alert rules
re-derive the same conditions from the series. Keeping the decisions here, with no I/O, is what
lets all three agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from mig_exporter.model import Gpu, Snapshot


class Severity(str, Enum):
    """Same words as the alert rules' ``severity`` label."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


SEVERITY_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


class Kind(str, Enum):
    UNPARTITIONED_SHARING = "unpartitioned_sharing"
    SPANNING_PROCESS = "spanning_process"
    GPU_LOST = "gpu_lost"
    MIG_PENDING = "mig_pending"
    MIG_WITHOUT_INSTANCES = "mig_without_instances"
    PERSISTENCE_OFF = "persistence_off"
    NO_GPUS = "no_gpus"


@dataclass(frozen=True)
class Finding:
    kind: Kind
    severity: Severity
    gpu_indices: tuple[int, ...]  # the physical GPUs concerned
    pids: tuple[int, ...] = ()  # the processes concerned


def process_gpus(snapshot: Snapshot) -> Mapping[int, tuple[int, ...]]:
    """pid → the physical GPU indices it holds memory on (sorted); see ``Snapshot.gpus_by_pid``."""
    return snapshot.gpus_by_pid


def spanning_processes(snapshot: Snapshot) -> dict[int, tuple[int, ...]]:
    """Processes holding memory on more than one physical GPU (the incident: PIDs on all four)."""
    return {pid: gpus for pid, gpus in process_gpus(snapshot).items() if len(gpus) > 1}


def is_unpartitioned_sharing(gpu: Gpu) -> bool:
    """MIG is off and two or more distinct processes hold memory on the GPU: no isolation of SMs,
    memory bandwidth or faults between them. Not with the MIG mode unread: MIG may be on."""
    return not gpu.lost and not gpu.mig_enabled and "mig_mode" not in gpu.unread and len(gpu.pids) >= 2


def sharing_read(gpu: Gpu) -> bool:
    """Whether ``is_unpartitioned_sharing`` is known either way: every process listed and the MIG
    mode read (a GPU without MIG answers NOT_SUPPORTED, which is read: MIG is off)."""
    return not gpu.lost and gpu.processes_complete and "mig_mode" not in gpu.unread


def reports_no_gpus(snapshot: Snapshot) -> bool:
    """NVML answers and counts 0 GPUs: nothing here can be watched or partitioned, which is a
    problem of the host (GPUs not passed into the container, not bound to the driver), not health."""
    counted = not any(e.call == "nvmlDeviceGetCount" for e in snapshot.errors)
    return snapshot.nvml_up and counted and not snapshot.gpus


def find(snapshot: Snapshot) -> tuple[Finding, ...]:
    """Every finding, most severe first, then by GPU."""
    if reports_no_gpus(snapshot):
        return (Finding(Kind.NO_GPUS, Severity.CRITICAL, ()),)
    found: list[Finding] = []
    for gpu in snapshot.gpus:
        if gpu.lost:
            found.append(Finding(Kind.GPU_LOST, Severity.CRITICAL, (gpu.index,)))
            continue
        if is_unpartitioned_sharing(gpu):
            found.append(Finding(Kind.UNPARTITIONED_SHARING, Severity.CRITICAL, (gpu.index,),
                                 tuple(sorted(gpu.pids))))
        if gpu.mig_pending_change:
            found.append(Finding(Kind.MIG_PENDING, Severity.WARNING, (gpu.index,)))
        if gpu.mig_enabled and gpu.gpu_instances_complete and not gpu.gpu_instances:
            found.append(Finding(Kind.MIG_WITHOUT_INSTANCES, Severity.WARNING, (gpu.index,)))
        if gpu.mig_enabled and gpu.persistence_mode is False:
            found.append(Finding(Kind.PERSISTENCE_OFF, Severity.INFO, (gpu.index,)))
    for pid, gpus in spanning_processes(snapshot).items():
        found.append(Finding(Kind.SPANNING_PROCESS, Severity.WARNING, gpus, (pid,)))
    return tuple(sorted(found, key=lambda f: (SEVERITY_ORDER[f.severity], f.gpu_indices, f.kind.value)))
