"""Snapshots built by hand for diagnose's tests: the incident, a healthy partitioned GPU, and
each other finding, so the report can be checked without NVML. Their MIG capability is the one
the reader recorded for an A100-SXM4-80GB through the simulator (``simulated_gpus``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from types import SimpleNamespace

from simulated_gpus import capability

from mig_exporter.hostinfo import Attribution, attribute_simulated_process
from mig_exporter.model import MIB, Gpu, GpuInstance, GpuProcess, MigInstance, Snapshot

A100_80 = "NVIDIA A100-SXM4-80GB"
A100_80_MIG = capability("A100-SXM4-80GB")
# seed/README.md: MiB per GPU of PIDs 78914 and 81007
SEED_MIB = {78914: (3752, 5082, 4992, 4234), 81007: (3780, 5082, 5066, 4236)}


def shared_gpu(index: int, mib_by_pid: dict[int, int], name: str = A100_80) -> Gpu:
    uuid = f"GPU-test-{index}"
    return Gpu(
        index=index, uuid=uuid, name=name, memory_total_bytes=81920 * MIB, mig_capability=A100_80_MIG,
        memory_used_bytes=sum(mib_by_pid.values()) * MIB, persistence_mode=False,
        mig_mode_current=False, mig_mode_pending=False,
        processes=tuple(GpuProcess(pid, "python", index, uuid, mib * MIB) for pid, mib in mib_by_pid.items()),
    )


def partitioned_gpu(index: int, pids: tuple[int, int] = (5001, 5002), persistence: bool = True) -> Gpu:
    """An A100-80GB split 3g.40gb + 3g.40gb, one process in each, as after the incident's runbook."""
    uuid = f"GPU-test-{index}"
    return Gpu(
        index=index, uuid=uuid, name=A100_80, mig_capability=A100_80_MIG,
        memory_total_bytes=81920 * MIB, memory_used_bytes=21213 * MIB,
        persistence_mode=persistence, mig_mode_current=True, mig_mode_pending=True,
        gpu_instances=(
            GpuInstance(index, 1, 9, "3g.40gb", 0, 4, (0,)),
            GpuInstance(index, 2, 9, "3g.40gb", 4, 4, (0,)),
        ),
        mig_instances=tuple(
            MigInstance(index, uuid, slot, f"MIG-{index}-{gi}", gi, 0, "3g.40gb",
                        memory_total_bytes=40192 * MIB, memory_used_bytes=(107 + mib) * MIB)
            for slot, (gi, mib) in enumerate(((2, 12000), (1, 9000)))
        ),
        processes=(
            GpuProcess(pids[0], "server-a", index, uuid, 12000 * MIB, gpu_instance_id=2,
                       compute_instance_id=0),
            GpuProcess(pids[1], "server-b", index, uuid, 9000 * MIB, gpu_instance_id=1,
                       compute_instance_id=0),
        ),
    )


def snapshot(*gpus: Gpu) -> Snapshot:
    return Snapshot(taken_at=1_700_000_000.0, nvml_up=True, driver_version="575.57.08",
                    cuda_driver_version="12.9", gpus=gpus)


def incident() -> Snapshot:
    return snapshot(*(shared_gpu(i, {pid: mib[i] for pid, mib in SEED_MIB.items()}) for i in range(4)))


def healthy() -> Snapshot:
    return snapshot(partitioned_gpu(0), partitioned_gpu(1, pids=(6001, 6002)))


def pending_enable() -> Snapshot:
    gpu = replace(shared_gpu(0, {4242: 1000}), mig_mode_pending=True)
    return snapshot(gpu, partitioned_gpu(1))


def empty_mig(index: int = 0) -> Gpu:
    return Gpu(index=index, uuid=f"GPU-test-{index}", name=A100_80, memory_total_bytes=81920 * MIB,
               mig_capability=A100_80_MIG, persistence_mode=True, mig_mode_current=True,
               mig_mode_pending=True)


def lost(index: int) -> Gpu:
    return Gpu(index=index, uuid=f"GPU-test-{index}", lost=True)


def fleet_attributions(snap: Snapshot, cmdline: str = "python serve.py") -> dict[int, Attribution]:
    """What a fleet file would give: a user, a command line and an environment without
    CUDA_VISIBLE_DEVICES, as in the incident."""
    fields = SimpleNamespace(user="ml", cmdline=cmdline, container=None, env={})
    return {pid: attribute_simulated_process(pid, fields) for pid in pids(snap)}


def pids(snap: Snapshot) -> Iterable[int]:
    return sorted({p.pid for p in snap.processes})
