"""Right-sized advice on Snapshots built by hand: vectors per GPU model from the tables of
``shared/reference/mig-facts.md``, the incident's answer, and properties of the placement search.
Each GPU's name, memory and MIG capability are those the reader recorded for its model through the
simulator (``simulated_gpus``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simulated_gpus import MODEL_KEYS, capability, read_gpu

from mig_exporter.advice import (
    DEFAULT_HEADROOM_RATIO,
    Advice,
    advise,
    smallest_profile,
)
from mig_exporter.model import MIB, Gpu, GpuProcess, Snapshot

# seed/README.md: MiB per GPU of PIDs 78914 and 81007
SEED_MIB = {78914: (3752, 5082, 4992, 4234), 81007: (3780, 5082, 5066, 4236)}


def gpu(index: int, model: str, mib_by_pid: dict[int, int | None], *, mig: bool = False) -> Gpu:
    uuid = f"GPU-{index:08d}"
    return Gpu(
        index=index,
        uuid=uuid,
        name=read_gpu(model).name,
        memory_total_bytes=read_gpu(model).memory_total_bytes,
        mig_capability=capability(model),
        mig_mode_current=mig,
        mig_mode_pending=mig,
        processes=tuple(
            GpuProcess(pid, "python", index, uuid, None if mib is None else mib * MIB)
            for pid, mib in mib_by_pid.items()
        ),
    )


def snapshot(*gpus: Gpu) -> Snapshot:
    return Snapshot(taken_at=0.0, nvml_up=True, gpus=gpus)


def seed_incident() -> Snapshot:
    return snapshot(*(
        gpu(i, "A100-SXM4-80GB", {pid: mib[i] for pid, mib in SEED_MIB.items()}) for i in range(4)
    ))


def advice_of(snap: Snapshot) -> Advice:
    """``advise`` on the snapshot, which must give advice (some GPU is shared without MIG)."""
    advice = advise(snap)
    assert advice is not None
    return advice


def layouts(advice: Advice) -> list[tuple[int, tuple[str, ...]]]:
    """(GPU index, profiles) of each advised layout."""
    return [(lay.gpu_index, lay.profiles) for lay in advice.layouts]


def assert_unplaced(advice: Advice, pid: int, reason: str) -> None:
    """Only ``pid`` is left unplaced, for a reason that says ``reason``."""
    assert [u.pid for u in advice.unplaced] == [pid]
    assert reason in advice.unplaced[0].reason


def test_seed_incident_gives_each_process_a_3g_40gb_on_one_gpu_and_frees_the_rest():
    """seed/README.md: both processes go into a 3g.40gb each on GPU 0, GPUs 1-3 are freed, and one
    remediate command (with or without the fleet) does it."""
    advice = advice_of(seed_incident())
    assert layouts(advice) == [(0, ("3g.40gb", "3g.40gb"))]
    assert sorted(i.pid for i in advice.layouts[0].instances) == [78914, 81007]
    assert advice.freed_gpus == (1, 2, 3)
    assert advice.unplaced == ()
    assert [s.command() for s in advice.steps] == ["mig-exporter remediate --gpu 0 --layout 3g.40gb,3g.40gb"]
    assert advice.steps[0].command("seed-incident") == (
        "mig-exporter remediate --fleet seed-incident --gpu 0 --layout 3g.40gb,3g.40gb"
    )


def test_seed_incident_workloads_are_sized_from_their_total_over_all_gpus():
    """Each workload's memory is its sum over the four GPUs, and its need that plus the headroom."""
    advice = advice_of(seed_incident())
    used = {w.pid: w.used_bytes for w in advice.workloads}
    assert used == {pid: sum(mib) * MIB for pid, mib in SEED_MIB.items()}
    assert all(w.gpu_indices == (0, 1, 2, 3) for w in advice.workloads)
    for w in advice.workloads:
        assert w.used_bytes is not None and w.needed_bytes is not None
        assert w.needed_bytes == int(w.used_bytes * (1 + DEFAULT_HEADROOM_RATIO))


def one_gpu_layout(snap: Snapshot, headroom_ratio: float = DEFAULT_HEADROOM_RATIO) -> tuple[str, ...] | None:
    """The layout advised for the one GPU that takes every workload; None when the workloads do not
    all fit in instances of one GPU (some go whole or stay unplaced), or there is no advice."""
    advice = advise(snap, headroom_ratio)
    if advice is None or advice.unplaced or advice.whole_gpus or len(advice.layouts) != 1:
        return None
    return advice.layouts[0].profiles


def test_a_20gb_instance_is_too_small_for_the_incident_with_the_default_headroom():
    """With 10 % the smaller process (18060 MiB → 19866 MiB) squeezes into a 19968 MiB 1g.20gb with
    under 2 GiB to grow: the reason the default is 20 %."""
    assert one_gpu_layout(seed_incident(), headroom_ratio=0.10) == ("3g.40gb", "1g.20gb")
    assert one_gpu_layout(seed_incident(), headroom_ratio=0.0) == ("1g.20gb", "1g.20gb")


@pytest.mark.parametrize(
    ("model", "mib_by_pid", "expected"),
    [
        # 8192 MiB × 1.2 = 9830 ≤ 9856 (1g.10gb double memory, 1 compute slice)
        ("A100-SXM4-40GB", {1: 8192, 2: 8192}, ("1g.10gb", "1g.10gb")),
        # 4000 × 1.2 = 4800 ≤ 4864: the plain 1g; 17000 × 1.2 = 20400 > 19968: the 7g is the only fit
        ("A100-SXM4-40GB", {1: 4000, 2: 4000}, ("1g.5gb", "1g.5gb")),
        ("A100-SXM4-40GB", {1: 4000, 2: 17000}, None),
        ("A100-PCIE-80GB", {1: 30000, 2: 2000}, ("3g.40gb", "1g.10gb")),
        # A30: 5000 × 1.2 = 6000 > 5952 → 2g.12gb; two fit at 0 and 2, three do not
        ("A30", {1: 5000, 2: 5000}, ("2g.12gb", "2g.12gb")),
        ("A30", {1: 5000, 2: 5000, 3: 5000}, None),
        ("A30", {1: 4000, 2: 4000, 3: 4000, 4: 4000}, ("1g.6gb",) * 4),
        ("H100-SXM5-80GB", {1: 10240, 2: 10240, 3: 10240}, ("1g.20gb",) * 3),
        ("H100-SXM5-80GB", {1: 8000, 2: 8000, 3: 8000, 4: 8000, 5: 8000, 6: 8000, 7: 8000}, ("1g.10gb",) * 7),
        ("H100-SXM5-80GB", {i: 8000 for i in range(1, 9)}, None),  # 8 × 1g: only 7 starts
        ("H100-NVL", {1: 40000, 2: 1000}, None),  # 48000 > 47488 → 7g.94gb, leaves no room
        ("H100-NVL", {1: 39000, 2: 1000}, ("3g.47gb", "1g.12gb")),
        ("H200", {1: 51200, 2: 51200}, ("3g.71gb", "3g.71gb")),
        ("H200", {1: 100000, 2: 1000}, None),  # 120000 > 71168: the 7g, alone
    ],
)
def test_advised_layout_vectors_per_model(model, mib_by_pid, expected):
    """mig-facts.md's per-model tables: the smallest profiles that hold each process, or None where
    they do not fit together on the GPU."""
    assert one_gpu_layout(snapshot(gpu(0, model, mib_by_pid))) == expected


def test_no_layout_for_a_gpu_that_is_not_shared_without_mig():
    """A GPU with one process, or with MIG on, gets no layout and the host no advice."""
    alone = snapshot(gpu(0, "A100-SXM4-80GB", {1: 1000}))
    on_mig = snapshot(gpu(0, "A100-SXM4-80GB", {1: 1000, 2: 1000}, mig=True))
    assert advise(alone) is None
    assert advise(on_mig) is None


def test_no_layout_when_a_memory_figure_is_missing():
    """A partial sum would size the instance too small; the advice says so instead."""
    snap = snapshot(gpu(0, "A100-SXM4-80GB", {1: 1000, 2: None}))
    assert one_gpu_layout(snap) is None
    assert_unplaced(advice_of(snap), 2, "no memory figure")


def test_without_mig_each_workload_gets_a_whole_gpu_while_there_are_enough():
    """On GPUs without MIG each workload gets a GPU of its own until none is left."""
    def no_mig(index: int) -> Gpu:
        uuid = f"GPU-{index}"
        return Gpu(
            index=index, uuid=uuid, name="NVIDIA GeForce RTX 4090", mig_mode_current=None,
            memory_total_bytes=24564 * MIB,
            processes=tuple(GpuProcess(pid, "a", index, uuid, 1000 * MIB) for pid in (1, 2, 3)),
        )

    advice = advice_of(snapshot(no_mig(0), no_mig(1)))
    assert advice.layouts == ()
    assert [(w.pid, w.gpu_index, w.gpu_uuid) for w in advice.whole_gpus] == [(1, 0, "GPU-0"), (2, 1, "GPU-1")]
    assert_unplaced(advice, 3, "no MIG instance or whole GPU is left")
    assert advice.freed_gpus == ()


def test_a_workload_larger_than_any_instance_gets_its_own_gpu_and_the_rest_share_another():
    """68000 MiB × 1.2 = 81600 MiB: more than a 7g.80gb (80896), less than the GPU (81920)."""
    advice = advice_of(snapshot(
        gpu(0, "A100-SXM4-80GB", {1: 68000, 2: 1000}),
        gpu(1, "A100-SXM4-80GB", {1: 0, 3: 1000}),
    ))
    assert [(w.pid, w.gpu_index) for w in advice.whole_gpus] == [(1, 0)]
    assert layouts(advice) == [(1, ("1g.10gb", "1g.10gb"))]
    assert advice.unplaced == () and advice.freed_gpus == ()


def test_a_workload_larger_than_a_gpu_needs_several():
    """75000 MiB × 1.2 is more than a whole A100 holds: that workload is unplaced, the other placed."""
    advice = advice_of(snapshot(gpu(0, "A100-SXM4-80GB", {1: 75000, 2: 1000})))
    assert_unplaced(advice, 1, "more memory than one whole GPU holds")
    assert layouts(advice) == [(0, ("1g.10gb",))]


def test_workloads_go_to_the_gpu_whose_model_holds_them():
    """20 GiB × 1.2 = 24576 MiB: more than the A30's 4g.24gb (24000), so it goes to the A100."""
    advice = advice_of(snapshot(
        gpu(0, "A30", {1: 20480, 2: 1000}),
        gpu(1, "A100-SXM4-80GB", {1: 10, 3: 1000}),
    ))
    assert layouts(advice) == [
        (0, ("1g.6gb", "1g.6gb")),
        (1, ("3g.40gb",)),
    ]
    assert {i.pid: lay.gpu_index for lay in advice.layouts for i in lay.instances} == {1: 1, 2: 0, 3: 0}
    assert advice.freed_gpus == ()


def test_a_workload_with_no_room_left_is_unplaced_and_keeps_its_gpu():
    """Three 30000 MiB workloads: two 3g.40gb fill the A100, the third finds no instance or GPU."""
    advice = advice_of(
        snapshot(gpu(0, "A100-SXM4-80GB", {1: 30000, 2: 30000, 3: 30000}), gpu(1, "A100-SXM4-80GB", {}))
    )
    assert advice.layouts[0].profiles == ("3g.40gb", "3g.40gb")
    assert_unplaced(advice, 3, "no MIG instance or whole GPU is left")
    assert advice.freed_gpus == ()


def test_gpus_with_the_same_layout_share_one_command():
    """Two pairs of processes, each pair on its own pair of GPUs, too big to share a GPU."""
    advice = advice_of(snapshot(
        gpu(0, "A100-SXM4-80GB", {1: 30000, 2: 30000}),
        gpu(1, "A100-SXM4-80GB", {3: 30000, 4: 30000}),
    ))
    assert [(s.gpu_indices, s.layout) for s in advice.steps] == [((0, 1), ("3g.40gb", "3g.40gb"))]
    assert advice.steps[0].command() == "mig-exporter remediate --gpu 0,1 --layout 3g.40gb,3g.40gb"


@pytest.mark.parametrize("model_key", MODEL_KEYS)
@given(needed_mib=st.integers(min_value=0, max_value=160_000))
def test_smallest_profile_holds_the_need_and_nothing_smaller_does(model_key, needed_mib):
    """The profile chosen for a need holds it, and no profile (but +me) that holds it is smaller."""
    model = capability(model_key)
    chosen = smallest_profile(model, needed_mib * MIB)
    candidates = [p for p in model.profiles if not p.name.endswith("+me")]
    holding = [p for p in candidates if p.memory_mib >= needed_mib]
    if chosen is None:
        assert holding == []
    else:
        assert chosen.memory_mib >= needed_mib
        assert all(p.memory_mib >= chosen.memory_mib for p in holding)


def test_a_mig_gpu_a_workload_leaves_is_not_freed_while_others_run_on_it():
    """PID 1 also runs in a MIG instance of GPU 1, beside PID 9: moving PID 1 does not free GPU 1."""
    partitioned = gpu(1, "A100-SXM4-80GB", {1: 1000, 9: 1000}, mig=True)
    alone = gpu(2, "A100-SXM4-80GB", {1: 1000}, mig=True)
    advice = advice_of(snapshot(gpu(0, "A100-SXM4-80GB", {1: 1000, 2: 1000}), partitioned, alone))
    assert layouts(advice) == [(0, ("1g.10gb", "1g.10gb"))]
    assert advice.freed_gpus == (2,)


def computing(base: Gpu, sm_by_pid: dict[int, float]) -> Gpu:
    """``base`` with NVML's per-process SM samples (GPUs without MIG only)."""
    return replace(base, processes=tuple(replace(p, sm_utilization_ratio=sm_by_pid.get(p.pid))
                                         for p in base.processes))


def test_workloads_that_compute_are_sized_for_their_compute_too() -> None:
    """The issue's example: three workloads of 15000 MiB fit 1g.20gb by memory (20096 MiB, 1 slice),
    but each computing on a fifth of the GPU needs 0.2 x 1.2 of 7 slices, so 2: 3 x 2g.20gb."""
    three = gpu(0, "A100-SXM4-80GB", {101: 15000, 102: 15000, 103: 15000})
    by_memory = advise(Snapshot(taken_at=0, nvml_up=True, gpus=(three,)))
    assert by_memory is not None and by_memory.layouts[0].profiles == ("1g.20gb",) * 3
    assert {w.sizing_rule for w in by_memory.workloads} == {"memory"}
    by_compute = advise(Snapshot(taken_at=0, nvml_up=True,
                                 gpus=(computing(three, {101: 0.2, 102: 0.2, 103: 0.2}),)))
    assert by_compute is not None and by_compute.layouts[0].profiles == ("2g.20gb",) * 3
    assert [(w.sizing_rule, w.needed_compute_ratio) for w in by_compute.workloads] == [
        ("memory and compute", pytest.approx(0.24))] * 3


def test_a_workload_computing_on_most_of_a_gpu_gets_all_of_one() -> None:
    """The incident's pair on two GPUs, 78914 computing on 45 % of each (90 % of a GPU, plus 20 %:
    more than one) and 81007 idle: 78914 gets a 7g instance, so the two no longer share compute."""
    sm = {78914: 0.45, 81007: 0.01}
    gpus = tuple(computing(gpu(i, "A100-SXM4-80GB", {pid: SEED_MIB[pid][i] for pid in sm}), sm)
                 for i in range(2))
    advice = advise(Snapshot(taken_at=0, nvml_up=True, gpus=gpus))
    assert advice is not None
    placed = {i.pid: (layout.gpu_index, i.profile) for layout in advice.layouts for i in layout.instances}
    assert placed == {81007: (0, "1g.20gb"), 78914: (1, "7g.80gb")}
    assert {w.pid: w.sizing_rule for w in advice.workloads} == {78914: "memory and compute",
                                                                81007: "memory and compute"}
