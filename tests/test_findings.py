"""Findings on hand-built Snapshots: the incident, partitioned GPUs, pending modes, lost GPUs."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from mig_exporter.findings import (
    SEVERITY_ORDER,
    Kind,
    Severity,
    find,
    is_unpartitioned_sharing,
    process_gpus,
    spanning_processes,
)
from mig_exporter.model import MIB, Gpu, GpuInstance, GpuProcess, Snapshot


def process(pid: int, gpu: int, mib: int = 1000, gpu_instance_id: int | None = None) -> GpuProcess:
    return GpuProcess(pid, "python", gpu, f"GPU-{gpu}", mib * MIB, gpu_instance_id,
                      None if gpu_instance_id is None else 0)


def gpu(index: int, *pids: int, mig: bool = False, pending: bool | None = None, persistence: bool = False,
        instances: int = 0) -> Gpu:
    return Gpu(
        index=index, uuid=f"GPU-{index}", mig_mode_current=mig,
        mig_mode_pending=mig if pending is None else pending, persistence_mode=persistence,
        gpu_instances=tuple(GpuInstance(index, 1 + i, 9, "3g.40gb", 4 * i, 4) for i in range(instances)),
        processes=tuple(process(pid, index, gpu_instance_id=1 if mig else None) for pid in pids),
    )


def snapshot(*gpus: Gpu) -> Snapshot:
    return Snapshot(taken_at=0.0, nvml_up=True, gpus=gpus)


INCIDENT = snapshot(*(gpu(i, 78914, 81007) for i in range(4)))


def test_incident_processes_span_all_four_gpus() -> None:
    assert spanning_processes(INCIDENT) == {78914: (0, 1, 2, 3), 81007: (0, 1, 2, 3)}


def test_incident_gpus_are_each_shared_without_mig() -> None:
    assert all(is_unpartitioned_sharing(g) for g in INCIDENT.gpus)
    found = find(INCIDENT)
    sharing = [f for f in found if f.kind is Kind.UNPARTITIONED_SHARING]
    assert [(f.gpu_indices, f.pids, f.severity) for f in sharing] == [
        ((i,), (78914, 81007), Severity.CRITICAL) for i in range(4)]
    spanning = [f for f in found if f.kind is Kind.SPANNING_PROCESS]
    assert [(f.pids, f.gpu_indices) for f in spanning] == [((78914,), (0, 1, 2, 3)), ((81007,), (0, 1, 2, 3))]


def test_several_instances_of_one_gpu_count_as_one_gpu() -> None:
    in_two_instances = (process(7, 0, gpu_instance_id=1), process(7, 0, gpu_instance_id=2))
    one_gpu_twice = snapshot(Gpu(index=0, uuid="GPU-0", mig_mode_current=True, mig_mode_pending=True,
                                 processes=in_two_instances))
    assert process_gpus(one_gpu_twice) == {7: (0,)}
    assert spanning_processes(one_gpu_twice) == {}


def test_mig_gpus_and_single_processes_are_not_unpartitioned_sharing() -> None:
    assert not is_unpartitioned_sharing(gpu(0, 1, 2, mig=True, instances=2))
    assert not is_unpartitioned_sharing(gpu(0, 1))
    lost = Gpu(index=0, uuid="GPU-0", lost=True, processes=(process(1, 0), process(2, 0)))
    assert not is_unpartitioned_sharing(lost)


def test_mig_pending_without_instances_and_persistence_off() -> None:
    found = find(snapshot(gpu(0, pending=True), gpu(1, mig=True, persistence=False),
                          gpu(2, mig=True, persistence=True, instances=1)))
    assert [(f.kind, f.gpu_indices) for f in found] == [
        (Kind.MIG_PENDING, (0,)), (Kind.MIG_WITHOUT_INSTANCES, (1,)), (Kind.PERSISTENCE_OFF, (1,))]


def test_no_instances_is_not_concluded_from_a_listing_nvml_refused() -> None:
    unlisted = replace(gpu(0, mig=True, persistence=True), gpu_instances_complete=False)
    assert [f.kind for f in find(snapshot(unlisted))] == []
    listed_empty = gpu(0, mig=True, persistence=True)
    assert [f.kind for f in find(snapshot(listed_empty))] == [Kind.MIG_WITHOUT_INSTANCES]


def test_a_lost_gpu_is_critical_and_nothing_else_is_said_of_it() -> None:
    lost = Gpu(index=3, uuid="GPU-3", lost=True, mig_mode_current=True)
    found = find(snapshot(gpu(0), lost))
    assert [(f.kind, f.severity, f.gpu_indices) for f in found] == [(Kind.GPU_LOST, Severity.CRITICAL, (3,))]


def test_a_healthy_host_has_no_findings() -> None:
    assert find(snapshot(gpu(0, 1), gpu(1, 2, mig=True, persistence=True, instances=2))) == ()


gpu_strategy = st.builds(
    lambda index, pids, mig, lost: Gpu(index=index, uuid=f"GPU-{index}", lost=lost, mig_mode_current=mig,
                                       mig_mode_pending=mig,
                                       processes=tuple(process(pid, index) for pid in sorted(pids))),
    st.integers(0, 7), st.sets(st.integers(1, 6), max_size=4), st.booleans(), st.booleans(),
)


@given(st.lists(gpu_strategy, max_size=6, unique_by=lambda g: g.index))
def test_findings_are_consistent_on_any_snapshot(gpus: list[Gpu]) -> None:
    snap = snapshot(*gpus)
    spanning = spanning_processes(snap)
    gpus_of = process_gpus(snap)
    assert spanning == {pid: g for pid, g in gpus_of.items() if len(g) > 1}
    found = find(snap)
    assert [SEVERITY_ORDER[f.severity] for f in found] == sorted(SEVERITY_ORDER[f.severity] for f in found)
    assert sum(f.kind is Kind.SPANNING_PROCESS for f in found) == len(spanning)
    assert {f.gpu_indices[0] for f in found if f.kind is Kind.UNPARTITIONED_SHARING} == {
        g.index for g in gpus if not g.lost and not g.mig_mode_current and len(g.pids) >= 2}
