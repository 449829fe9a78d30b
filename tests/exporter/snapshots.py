"""Snapshots built by hand for the exporter's tests: the incident of seed/README.md and a
partitioned GPU, so the series can be checked without NVML or the simulator."""

from __future__ import annotations

from simulated_gpus import capability

from mig_exporter.model import MIB, Gpu, GpuInstance, GpuProcess, MigInstance, Snapshot

INCIDENT_MIB = {  # GPU → (PID 78914, PID 81007), seed/README.md
    0: (3752, 3780),
    1: (5082, 5082),
    2: (4992, 5066),
    3: (4234, 4236),
}
SPANNING_PIDS = (78914, 81007)


def incident_gpu(index: int) -> Gpu:
    uuid = f"GPU-incident-{index}"
    processes = tuple(
        GpuProcess(pid=pid, name="python", gpu_index=index, gpu_uuid=uuid, used_memory_bytes=mib * MIB)
        for pid, mib in zip(SPANNING_PIDS, INCIDENT_MIB[index], strict=True)
    )
    return Gpu(
        index=index, uuid=uuid, name="NVIDIA A100-SXM4-80GB", mig_capability=capability("A100-SXM4-80GB"),
        pci_bus_id=f"00000000:0{index}:00.0",
        pci_device_id=0x20B2, memory_total_bytes=81920 * MIB, memory_used_bytes=32759 * MIB,
        persistence_mode=False, mig_mode_current=False, mig_mode_pending=False,
        utilization_gpu_ratio=0.0, temperature_celsius=34.0, power_watts=61.5, power_limit_watts=400.0,
        clock_sm_hz=1410e6, ecc_errors_corrected_total=0, processes=processes,
    )


def incident() -> Snapshot:
    return Snapshot(taken_at=1_700_000_000.0, nvml_up=True, duration_seconds=0.004,
                    driver_version="575.57.08", cuda_driver_version="12.9",
                    gpus=tuple(incident_gpu(i) for i in range(4)), nvml_calls=57)


def partitioned_gpu(index: int = 0) -> Gpu:
    """An A100-80GB split 3g.40gb + 3g.40gb, one process in each, as after the incident's runbook."""
    uuid = f"GPU-partitioned-{index}"
    migs = tuple(
        MigInstance(gpu_index=index, gpu_uuid=uuid, mig_index=slot, mig_uuid=f"MIG-{index}-{gi}",
                    gpu_instance_id=gi, compute_instance_id=0, profile="3g.40gb",
                    memory_total_bytes=40192 * MIB, memory_used_bytes=(107 + mib) * MIB, multiprocessors=42)
        for slot, (gi, mib) in enumerate(((2, 12000), (1, 9000)))
    )
    return Gpu(
        index=index, uuid=uuid, name="NVIDIA A100-SXM4-80GB", mig_capability=capability("A100-SXM4-80GB"),
        memory_total_bytes=81920 * MIB,
        memory_used_bytes=(213 + 21000) * MIB, persistence_mode=True, mig_mode_current=True,
        mig_mode_pending=True,
        gpu_instances=(
            GpuInstance(index, 1, 9, "3g.40gb", 0, 4, (0,)),
            GpuInstance(index, 2, 9, "3g.40gb", 4, 4, (0,)),
        ),
        # mig-facts.md: both 3g.40gb placements {0,4}:4 are taken, so all 8 memory slices are: nothing fits
        mig_profile_capacity=tuple((name, 0) for name in (
            "1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.10gb+me", "1g.20gb")),
        mig_instances=migs,
        processes=(
            GpuProcess(5001, "server-a", index, uuid, 12000 * MIB, gpu_instance_id=2, compute_instance_id=0),
            GpuProcess(5002, "server-b", index, uuid, 9000 * MIB, gpu_instance_id=1, compute_instance_id=0),
        ),
    )
