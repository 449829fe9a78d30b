"""A GPU whose name is in no table: shaped like a real one as the reader records it, with profile
IDs, sizes and placements unlike any built-in model. remediate plans it and the advice sizes for
it from its MIG capability alone (issue 8: no table lookup by name outside sim/)."""

from __future__ import annotations

from mig_exporter.advice import advise
from mig_exporter.capability import GpuInstanceProfile, MigCapability
from mig_exporter.model import MIB, Gpu, GpuProcess, Snapshot
from mig_exporter.remediate.layout import layout_targets
from mig_exporter.remediate.plan import make_plan
from mig_exporter.remediate.steps import CreateComputeInstance, CreateGpuInstance, SetMigMode, SetPersistence
from mig_exporter.sim.models import MODELS

NAME = "NVIDIA Z900 Engineering Sample"


def gi_profile(name: str, enum: int, profile_id: int, mib: int, slices: int, count: int,
               starts: tuple[int, ...], size: int) -> GpuInstanceProfile:
    return GpuInstanceProfile(enum=enum, id=profile_id, name=name, memory_mib=mib,
                              multiprocessors=24 * slices,
                              slice_count=slices, max_count=count, copy_engines=slices, decoders=slices,
                              encoders=0, jpeg=0, ofa=0, placement_starts=starts, placement_size=size)


# Six memory slices, six compute slices; IDs 41-45 are no built-in model's.
Z900 = MigCapability(profiles=(
    gi_profile("1g.16gb", 0x0, 41, 16000, 1, 6, (0, 1, 2, 3, 4, 5), 1),
    gi_profile("2g.32gb", 0x1, 42, 32256, 2, 3, (0, 2, 4), 2),
    gi_profile("3g.48gb", 0x2, 43, 48384, 3, 2, (0, 3), 3),
    gi_profile("6g.96gb", 0x6, 44, 96768, 6, 1, (0,), 6),
    gi_profile("1g.16gb+me", 0x7, 45, 16000, 1, 1, (0, 1, 2, 3, 4, 5), 1),
), architecture="blackwell")


def z900(index: int, mib_by_pid: dict[int, int], mig: bool = False) -> Gpu:
    uuid = f"GPU-z900-{index}"
    return Gpu(
        index=index, uuid=uuid, name=NAME, pci_device_id=0x2F00, memory_total_bytes=98304 * MIB,
        persistence_mode=False, mig_mode_current=mig, mig_mode_pending=mig, mig_capability=Z900,
        processes=tuple(GpuProcess(pid, "python", index, uuid, mib * MIB) for pid, mib in mib_by_pid.items()),
    )


def snapshot(*gpus: Gpu) -> Snapshot:
    return Snapshot(taken_at=0.0, nvml_up=True, gpus=gpus)


def test_the_name_is_in_no_table() -> None:
    assert NAME not in {model.nvml_name for model in MODELS.values()}


def test_remediate_plans_it_with_the_ids_and_placements_nvml_gave() -> None:
    snap = snapshot(z900(0, {}))
    targets = layout_targets("0", "3g,2g.32gb,1g.15gb", snap)  # 1g.15gb: a drifted name
    plan = make_plan(snap, targets, privileged=True, persistence=True)
    assert not plan.blockers
    creates = [s for s in plan.steps if isinstance(s, CreateGpuInstance)]
    # largest first, each at the highest free start the capability lists: 3g@3, 2g@0, 1g@2
    assert [(s.profile, s.profile_enum, s.start, s.size) for s in creates] == [
        ("3g.48gb", 0x2, 3, 3), ("2g.32gb", 0x1, 0, 2), ("1g.16gb", 0x0, 2, 1)]
    assert plan.steps[:2] == (SetMigMode(0, True, restore=False), SetPersistence(0, True))
    assert [s.slices for s in plan.steps if isinstance(s, CreateComputeInstance)] == [3, 2, 1]
    assert [p.id for p in plan.gpus[0].target.profiles] == [43, 42, 41]


def test_a_layout_that_does_not_fit_it_is_refused_with_its_geometry() -> None:
    snap = snapshot(z900(0, {}))
    plan = make_plan(snap, layout_targets("0", "3g,3g,1g", snap), privileged=True, persistence=True)
    (blocker,) = plan.blockers
    assert "no memory slice left for another 1g.16gb" in blocker.reason
    assert NAME in blocker.reason


def test_the_advice_sizes_its_workloads_with_its_profiles() -> None:
    """25000 MiB x 1.2 = 30000 MiB fits 2g.32gb (32256); 40000 x 1.2 = 48000 fits 3g.48gb (48384);
    both go on GPU 0, and GPU 1, which the workloads also used, is freed."""
    advice = advise(snapshot(z900(0, {1: 20000, 2: 40000}), z900(1, {1: 5000})))
    assert advice is not None
    assert [(lay.gpu_index, lay.model, lay.profiles) for lay in advice.layouts] == [
        (0, NAME, ("3g.48gb", "2g.32gb"))]
    assert advice.freed_gpus == (1,)
    assert [step.command() for step in advice.steps] == [
        "mig-exporter remediate --gpu 0 --layout 3g.48gb,2g.32gb"]
