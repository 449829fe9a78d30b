"""The planner on hand-built Snapshots: steps in order, additive changes, blockers before anything."""

from __future__ import annotations

from dataclasses import replace

from simulated_gpus import capability

from mig_exporter.model import CollectionError, Gpu, GpuInstance, Snapshot
from mig_exporter.remediate.layout import GpuTarget, layout_targets
from mig_exporter.remediate.plan import BlockerKind, Plan, make_plan
from mig_exporter.remediate.steps import (
    CreateComputeInstance,
    CreateGpuInstance,
    DestroyComputeInstance,
    DestroyGpuInstance,
    SetMigMode,
    SetPersistence,
)

from .builders import gpu, incident, instance, process, snapshot


def plan_for(
    snap: Snapshot, gpus: str, layout: str, *, privileged: bool = True, persistence: bool = True
) -> Plan:
    return make_plan(snap, layout_targets(gpus, layout, snap), privileged=privileged, persistence=persistence)


def test_incident_is_refused_naming_both_processes_and_still_shows_the_steps_after_them() -> None:
    plan = plan_for(incident(), "0,1", "3g.40gb,3g.40gb")
    assert plan.unsafe and not plan.impossible and not plan.nothing_to_do
    # the steps as they will run once the processes have stopped: the same as on the idle incident
    assert plan.steps == plan_for(incident(with_processes=False), "0,1", "3g.40gb,3g.40gb").steps
    assert [(s.gpu_index, s.start) for s in plan.steps if isinstance(s, CreateGpuInstance)] == [
        (0, 4), (0, 0), (1, 4), (1, 0),
    ]
    assert [(b.gpu_index, [p.pid for p in b.processes]) for b in plan.blockers] == [
        (0, [78914, 81007]),
        (1, [78914, 81007]),
    ]
    assert plan.blockers[0].processes[0].used_memory_bytes == 3752 * 1024 * 1024


def test_incident_without_processes_enables_mig_then_persistence_then_creates_explicitly() -> None:
    plan = plan_for(incident(with_processes=False), "0,1", "3g.40gb,3g.40gb")
    assert not plan.blockers
    assert [p.gpu.index for p in plan.gpus] == [0, 1]  # GPUs 2 and 3 are not touched
    assert plan.gpus[0].steps == (
        SetMigMode(0, True, restore=False),
        SetPersistence(0, True),
        CreateGpuInstance(0, "3g.40gb", 2, 4, 4),
        CreateComputeInstance(0, 4, 3),
        CreateGpuInstance(0, "3g.40gb", 2, 0, 4),
        CreateComputeInstance(0, 0, 3),
    )


def test_no_persistence_and_persistence_already_on() -> None:
    plan = plan_for(incident(with_processes=False), "0", "3g", persistence=False)
    assert not any(isinstance(s, SetPersistence) for s in plan.steps)
    plan = plan_for(snapshot(gpu(0, persistence=True)), "0", "3g")
    assert not any(isinstance(s, SetPersistence) for s in plan.steps)


def test_a_gpu_already_in_the_layout_has_nothing_to_do() -> None:
    done = gpu(0, mig=True, persistence=True, instances=[instance(0, "3g", 4), instance(0, "3g", 0)])
    plan = plan_for(snapshot(done), "0", "3g.40gb,3g.40gb")
    assert plan.nothing_to_do and plan.gpus[0].kept == done.gpu_instances


def test_a_busy_instance_is_kept_and_another_added_beside_it() -> None:
    busy = instance(0, "3g", 0)
    snap = snapshot(
        gpu(0, mig=True, persistence=True, instances=[busy], processes=[process(0, 5001, 12000, busy)])
    )
    plan = plan_for(snap, "0", "3g,3g")
    assert not plan.blockers
    assert plan.gpus[0].kept == (busy,)
    assert plan.steps == (CreateGpuInstance(0, "3g.40gb", 2, 4, 4), CreateComputeInstance(0, 4, 3))


def test_a_busy_instance_that_would_have_to_go_is_unsafe() -> None:
    busy = instance(0, "2g", 0)
    snap = snapshot(gpu(0, mig=True, instances=[busy], processes=[process(0, 5001, 12000, busy)]))
    plan = plan_for(snap, "0", "3g,3g")
    (blocker,) = plan.blockers
    assert blocker.kind is BlockerKind.UNSAFE and [p.pid for p in blocker.processes] == [5001]
    assert (
        "GPU instance 3 (2g.20gb at memory slice 0) runs processes and is not in the layout" in blocker.reason
    )
    # once 5001 has stopped, its instance goes and the layout is made
    assert plan.steps[:2] == (
        DestroyComputeInstance(0, 3, 0, 0, 2),
        DestroyGpuInstance(0, 3, "2g.20gb", 1, 0, 2),
    )
    assert [s.start for s in plan.steps if isinstance(s, CreateGpuInstance)] == [4, 0]


def test_of_two_busy_instances_the_one_in_the_way_is_named() -> None:
    """Both 3g.40gb busy, ``4g,3g`` wanted: a 4g fits only at slice 0 (mig-facts.md placements
    {0}:4), so the 3g at slice 4 stays and the plan names the process in the one at slice 0."""
    at_0, at_4 = instance(0, "3g", 0), instance(0, "3g", 4)
    snap = snapshot(gpu(0, mig=True, instances=[at_0, at_4],
                        processes=[process(0, 5001, 12000, at_0), process(0, 5002, 12000, at_4)]))
    plan = plan_for(snap, "0", "4g,3g")
    (blocker,) = plan.blockers
    assert blocker.kind is BlockerKind.UNSAFE and [p.pid for p in blocker.processes] == [5001]
    assert "GPU instance 1 (3g.40gb at memory slice 0)" in blocker.reason
    assert [(s.start, s.profile) for s in plan.steps if isinstance(s, CreateGpuInstance)] == [(0, "4g.40gb")]


def test_a_gpu_that_cannot_take_the_layout_has_no_steps_even_with_processes() -> None:
    plan = plan_for(incident(), "0", "3g.40gb,3g.40gb,1g.10gb")
    assert [b.kind for b in plan.blockers] == [BlockerKind.UNSAFE, BlockerKind.IMPOSSIBLE]
    assert not plan.gpus and not plan.steps


def test_an_idle_instance_not_in_the_layout_is_destroyed_compute_instance_first() -> None:
    idle = instance(0, "2g", 0)
    plan = plan_for(snapshot(gpu(0, mig=True, persistence=True, instances=[idle])), "0", "3g,3g")
    assert plan.steps[:2] == (
        DestroyComputeInstance(0, 3, 0, 0, 2),
        DestroyGpuInstance(0, 3, "2g.20gb", 1, 0, 2),
    )
    assert [s.start for s in plan.steps if isinstance(s, CreateGpuInstance)] == [4, 0]


def test_an_idle_matching_instance_in_the_way_is_moved_rather_than_failing() -> None:
    in_the_way = instance(0, "1g", 0)  # 4g only starts at slice 0
    plan = plan_for(snapshot(gpu(0, mig=True, persistence=True, instances=[in_the_way])), "0", "4g,1g")
    assert not plan.blockers
    assert DestroyGpuInstance(0, 7, "1g.10gb", 0, 0, 1) in plan.steps
    assert sorted((s.profile, s.start) for s in plan.steps if isinstance(s, CreateGpuInstance)) == [
        ("1g.10gb", 6),
        ("4g.40gb", 0),
    ]


def test_a_matching_instance_without_compute_instance_gets_one() -> None:
    bare = instance(0, "3g", 0, compute=())
    plan = plan_for(snapshot(gpu(0, mig=True, persistence=True, instances=[bare])), "0", "3g")
    assert plan.steps == (CreateComputeInstance(0, 0, 3),)


def test_an_instance_split_into_small_compute_instances_is_rebuilt() -> None:
    split = instance(0, "3g", 0, compute=(0, 1))
    snap = snapshot(
        gpu(
            0,
            mig=True,
            persistence=True,
            instances=[split],
            compute_names={(1, 0): "1c.3g.40gb", (1, 1): "1c.3g.40gb"},
        )
    )
    plan = plan_for(snap, "0", "3g")
    assert plan.steps[:2] == (DestroyComputeInstance(0, 1, 0, 0, 1), DestroyComputeInstance(0, 1, 0, 1, 1))
    assert CreateGpuInstance(0, "3g.40gb", 2, 4, 4) in plan.steps


def test_a_layout_that_does_not_fit_says_why() -> None:
    plan = plan_for(incident(with_processes=False), "0", "3g.40gb,3g.40gb,1g.10gb")
    (blocker,) = plan.blockers
    assert blocker.kind is BlockerKind.IMPOSSIBLE and not plan.steps
    assert blocker.reason == (
        "layout 3g.40gb,3g.40gb,1g.10gb does not fit GPU 0 (NVIDIA A100-SXM4-80GB): "
        "no memory slice left for another 1g.10gb (taken: 3g.40gb@4, 3g.40gb@0)"
    )


def test_mig_less_and_lost_gpus_are_impossible() -> None:
    snap = snapshot(
        Gpu(index=0, uuid="GPU-0", name="NVIDIA L4", mig_mode_current=None),
        Gpu(index=1, uuid="GPU-1", lost=True),
    )
    plan = make_plan(
        snap,
        [GpuTarget(0, None, True, ()), GpuTarget(1, capability("A100-SXM4-80GB"), True, ())],
        privileged=True,
        persistence=True,
    )
    assert [(b.kind, b.gpu_index) for b in plan.blockers] == [
        (BlockerKind.IMPOSSIBLE, 0),
        (BlockerKind.IMPOSSIBLE, 1),
    ]
    assert "GPU 0 (NVIDIA L4) does not support MIG" in plan.blockers[0].reason
    disabled = make_plan(snap, [GpuTarget(0, None, False, ())], privileged=True, persistence=True)
    assert disabled.nothing_to_do  # "MIG disabled" on a GPU without MIG: nothing to do


def test_not_root_blocks_only_when_something_would_change() -> None:
    plan = plan_for(incident(with_processes=False), "0", "3g", privileged=False)
    assert [(b.kind, b.gpu_index) for b in plan.blockers] == [(BlockerKind.IMPOSSIBLE, None)]
    done = snapshot(gpu(0, mig=True, persistence=True, instances=[instance(0, "3g", 4)]))
    assert plan_for(done, "0", "3g", privileged=False).nothing_to_do


def test_a_pending_enable_is_requested_again_and_undone_to_pending() -> None:
    plan = plan_for(snapshot(gpu(0, mig=False, pending=True, persistence=True)), "0", "7g")
    assert plan.steps[0] == SetMigMode(0, True, restore=True)


def test_hopper_layouts_use_hopper_profiles() -> None:
    plan = plan_for(snapshot(gpu(0, model="H100-SXM5-80GB", persistence=True)), "0", "3g,2g,1g")
    assert [(s.profile, s.start, s.profile_enum) for s in plan.steps if isinstance(s, CreateGpuInstance)] == [
        ("3g.40gb", 4, 2),
        ("2g.20gb", 2, 1),
        ("1g.10gb", 1, 0),
    ]


def test_mig_disabled_target_destroys_idle_instances_then_disables() -> None:
    gi = instance(0, "7g", 0)
    plan = make_plan(
        snapshot(gpu(0, mig=True, instances=[gi])),
        [GpuTarget(0, capability("A100-SXM4-80GB"), False, ())],
        privileged=True,
        persistence=True,
    )
    assert plan.steps == (
        DestroyComputeInstance(0, 0, 0, 0, 7),
        DestroyGpuInstance(0, 0, "7g.80gb", 4, 0, 8),
        SetMigMode(0, False, restore=True),
    )


def test_an_instance_of_a_profile_nvml_did_not_list_is_not_destroyed() -> None:
    strange = GpuInstance(0, 10, 99, "1g.10gb+gfx", 3, 1, (0,))  # a profile NVML did not list
    plan = plan_for(snapshot(gpu(0, mig=True, instances=[strange])), "0", "3g")
    (blocker,) = plan.blockers
    assert (
        blocker.kind is BlockerKind.IMPOSSIBLE
        and "profile ID 99, which NVML does not list for this GPU" in blocker.reason
    )


def test_cancelling_a_pending_disable_is_safe_with_processes() -> None:
    busy = instance(0, "3g", 0)
    pending_disable = gpu(0, mig=True, pending=False, instances=[busy], processes=[process(0, 1, 10, busy)])
    plan = plan_for(snapshot(pending_disable), "0", "3g")
    # cancelling a pending disable does not take the GPU from anyone
    assert not plan.blockers and plan.steps == (SetMigMode(0, True, restore=False), SetPersistence(0, True))


def test_a_gpu_whose_processes_went_unread_is_not_planned() -> None:
    """issue 8: the plan decides on what the Snapshot says went unread, not on call names."""
    unread = replace(gpu(0, mig=True), unread=frozenset({"processes"}))
    errors = (CollectionError("nvmlDeviceGetComputeRunningProcesses", "Unknown Error", 0),)
    plan = make_plan(replace(snapshot(unread), errors=errors), layout_targets("0", "3g", snapshot(unread)),
                     privileged=True, persistence=True)
    (blocker,) = plan.blockers
    assert blocker.kind is BlockerKind.IMPOSSIBLE and not plan.gpus
    assert "GPU 0 could not be read completely (nvmlDeviceGetComputeRunningProcesses: Unknown Error)" \
        in blocker.reason
    # the same without an error to quote still refuses, naming the part
    plan = plan_for(snapshot(unread), "0", "3g")
    assert "(processes unread)" in plan.blockers[0].reason


def test_a_telemetry_error_does_not_stop_a_plan() -> None:
    errors = (CollectionError("nvmlDeviceGetPowerUsage", "Unknown Error", 0),)
    plan = plan_for(replace(snapshot(gpu(0, mig=True)), errors=errors), "0", "3g")
    assert not plan.blockers and plan.steps
