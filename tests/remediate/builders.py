"""Snapshots built by hand, for testing the pure parts of remediate. Each GPU's name, PCI ID and
MIG capability are those the reader recorded for its model through the simulator
(``simulated_gpus``), so the planner sees only what NVML reports."""

from __future__ import annotations

from collections.abc import Sequence

from simulated_gpus import profile as model_profile
from simulated_gpus import read_gpu

from mig_exporter.capability import parse_profile_name
from mig_exporter.model import Gpu, GpuInstance, GpuProcess, MigInstance, Snapshot

A100_80GB = "A100-SXM4-80GB"

# GPU instance IDs follow the placement (mig-facts.md, observed on A100): (size, start) → ID.
_OBSERVED_IDS = {(8, 0): 0, (4, 0): 1, (4, 4): 2, (2, 0): 3, (2, 2): 4, (2, 4): 5}


def gpu_instance_id(size: int, start: int) -> int:
    return _OBSERVED_IDS.get((size, start), 7 + start)


def instance(
    gpu_index: int, name: str, start: int, *, model: str = A100_80GB, compute: Sequence[int] = (0,)
) -> GpuInstance:
    profile = model_profile(model, name)
    return GpuInstance(
        gpu_index,
        gpu_instance_id(profile.placement_size, start),
        profile.id,
        profile.name,
        start,
        profile.placement_size,
        tuple(compute),
    )


def process(gpu_index: int, pid: int, mib: int, gi: GpuInstance | None = None) -> GpuProcess:
    return GpuProcess(
        pid,
        "python",
        gpu_index,
        f"GPU-{gpu_index}",
        mib * 1024 * 1024,
        None if gi is None else gi.gpu_instance_id,
        None if gi is None else 0,
    )


def gpu(
    index: int,
    *,
    model: str = A100_80GB,
    mig: bool = False,
    pending: bool | None = None,
    persistence: bool = False,
    instances: Sequence[GpuInstance] = (),
    processes: Sequence[GpuProcess] = (),
    compute_names: dict[tuple[int, int], str] | None = None,
) -> Gpu:
    """A GPU of ``model`` (a fleet-file key) as the reader would give it; ``compute_names``
    overrides a MIG device's profile name (``1c.3g.40gb``) by (GPU instance ID, compute instance ID)."""
    names = compute_names or {}
    read = read_gpu(model)
    devices = tuple(
        MigInstance(
            index,
            f"GPU-{index}",
            n,
            f"MIG-{index}-{gi.gpu_instance_id}-{ci}",
            gi.gpu_instance_id,
            ci,
            names.get((gi.gpu_instance_id, ci), gi.profile),
            compute_slices=_compute_slices(names.get((gi.gpu_instance_id, ci), gi.profile)),
        )
        for n, (gi, ci) in enumerate((gi, ci) for gi in instances for ci in gi.compute_instance_ids)
    )
    return Gpu(
        index=index,
        uuid=f"GPU-{index}",
        name=read.name,
        pci_device_id=read.pci_device_id,
        mig_capability=read.mig_capability,
        persistence_mode=persistence,
        mig_mode_current=mig,
        mig_mode_pending=mig if pending is None else pending,
        gpu_instances=tuple(instances),
        mig_instances=devices,
        processes=tuple(processes),
    )


def _compute_slices(device_name: str) -> int | None:
    """What nvmlDeviceGetAttributes gives for a MIG device of this name: 1 for ``1c.3g.40gb``."""
    parsed = parse_profile_name(device_name)
    return None if parsed is None else parsed.compute or parsed.slices


def snapshot(*gpus: Gpu) -> Snapshot:
    return Snapshot(taken_at=0.0, nvml_up=True, gpus=gpus)


def incident(with_processes: bool = True) -> Snapshot:
    """seed/README.md: four A100-SXM4-80GB, MIG off, PIDs 78914 and 81007 on every GPU."""
    mib = {0: (3752, 3780), 1: (5082, 5082), 2: (4992, 5066), 3: (4234, 4236)}
    return snapshot(
        *(
            gpu(i, processes=[process(i, 78914, a), process(i, 81007, b)] if with_processes else [])
            for i, (a, b) in mib.items()
        )
    )
