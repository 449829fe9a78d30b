"""The GPM activity series (Hopper and later): per GPU and per MIG device, whose values are its
GPU instance's, since GPM samples GPU instances (aggregate with ``max by (gpu_instance_id)``,
never ``sum``, over a GPU instance's compute instances)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from mig_exporter.exporter.families import GPU_LABELS, MIG_LABELS, gauge, mig_labels
from mig_exporter.model import GpmMetrics, Snapshot

# GpmMetrics field → (series name after nvml_gpu_ / nvml_mig_instance_, what it is)
_SERIES = {
    "sm_utilization_ratio": "share of the SMs that were busy",
    "sm_occupancy_ratio": "share of the SMs' warp slots that held active warps",
    "tensor_utilization_ratio": "share of the time the SMs' tensor cores were busy",
    "dram_bandwidth_utilization_ratio": "share of the DRAM bandwidth used",
}


def gpm_families(snapshot: Snapshot) -> Iterator[Metric]:
    gpus = [g for g in snapshot.gpus if not g.lost]
    migs = [m for g in gpus for m in g.mig_instances]
    for field, meaning in _SERIES.items():
        yield gauge(f"nvml_gpu_{field}", f"GPM: {meaning} over the last window, whole GPU (Hopper+).",
                    GPU_LABELS, [([str(g.index), g.uuid], value) for g in gpus
                                 if (value := _metric(g.gpm, field)) is not None])
        yield gauge(f"nvml_mig_instance_{field}",
                    f"GPM: {meaning} over the last window, in the MIG device's GPU instance (Hopper+).",
                    MIG_LABELS, [(mig_labels(m), value) for m in migs
                                 if (value := _metric(m.gpm, field)) is not None])


def _metric(gpm: GpmMetrics | None, field: str) -> float | None:
    return None if gpm is None else getattr(gpm, field)
