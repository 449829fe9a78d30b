"""Snapshots built by hand, for testing the pure parts of remediate without a simulator."""

from __future__ import annotations

from collections.abc import Sequence

from mig_exporter.model import Gpu, GpuInstance, GpuProcess, MigInstance, Snapshot
from mig_exporter.profiles import A100_SXM4_80GB, GpuModel, match_profile

# GPU instance IDs follow the placement (mig-facts.md, observed on A100): (size, start) → ID.
_OBSERVED_IDS = {(8, 0): 0, (4, 0): 1, (4, 4): 2, (2, 0): 3, (2, 2): 4, (2, 4): 5}


def gpu_instance_id(size: int, start: int) -> int:
    return _OBSERVED_IDS.get((size, start), 7 + start)


def instance(
    gpu_index: int, name: str, start: int, *, model: GpuModel = A100_SXM4_80GB, compute: Sequence[int] = (0,)
) -> GpuInstance:
    profile = match_profile(model, name)
    assert profile is not None, name
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
    model: GpuModel = A100_SXM4_80GB,
    mig: bool = False,
    pending: bool | None = None,
    persistence: bool = False,
    instances: Sequence[GpuInstance] = (),
    processes: Sequence[GpuProcess] = (),
    compute_names: dict[tuple[int, int], str] | None = None,
) -> Gpu:
    """A GPU as the reader would give it; ``compute_names`` overrides a MIG device's profile name
    (``1c.3g.40gb``) by (GPU instance ID, compute instance ID)."""
    names = compute_names or {}
    devices = tuple(
        MigInstance(
            index,
            f"GPU-{index}",
            n,
            f"MIG-{index}-{gi.gpu_instance_id}-{ci}",
            gi.gpu_instance_id,
            ci,
            names.get((gi.gpu_instance_id, ci), gi.profile),
        )
        for n, (gi, ci) in enumerate((gi, ci) for gi in instances for ci in gi.compute_instance_ids)
    )
    return Gpu(
        index=index,
        uuid=f"GPU-{index}",
        name=model.nvml_name,
        pci_device_id=model.pci_device_ids[0],
        persistence_mode=persistence,
        mig_mode_current=mig,
        mig_mode_pending=mig if pending is None else pending,
        gpu_instances=tuple(instances),
        mig_instances=devices,
        processes=tuple(processes),
    )


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
