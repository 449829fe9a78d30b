"""The placement search, against mig-facts.md's vectors and an exhaustive oracle."""

from __future__ import annotations

from itertools import product

from hypothesis import given, settings
from hypothesis import strategies as st
from simulated_gpus import MODEL_KEYS, capability

from mig_exporter.capability import GpuInstanceProfile, MigCapability, match_profile
from mig_exporter.packing import Slot, misfit_reason, pack

# Capabilities as the reader records them through the simulator (mig-facts.md tables).
A100_SXM4_80GB = capability("A100-SXM4-80GB")
A30 = capability("A30")


def profiles(model: MigCapability, *names: str) -> list[GpuInstanceProfile]:
    found = [match_profile(model, name) for name in names]
    assert all(found)
    return [p for p in found if p is not None]


def test_two_3g_on_an_empty_a100_go_to_4_then_0_as_in_the_incident() -> None:
    placed = pack(A100_SXM4_80GB, [], profiles(A100_SXM4_80GB, "3g.40gb", "3g.40gb"))
    assert placed is not None
    assert [(s.profile, s.start, s.size) for s in placed] == [("3g.40gb", 4, 4), ("3g.40gb", 0, 4)]


def test_an_order_that_fails_for_the_driver_is_placed() -> None:
    # mig-facts.md: creating 19,19,14,9 without placements fails; a fit exists.
    placed = pack(A100_SXM4_80GB, [], profiles(A100_SXM4_80GB, "1g", "1g", "2g", "3g"))
    assert placed is not None
    # largest first, each at the highest free start
    assert [(s.profile, s.start) for s in placed] == [
        ("3g.40gb", 4),
        ("2g.20gb", 2),
        ("1g.10gb", 1),
        ("1g.10gb", 0),
    ]


def test_the_driver_observed_mixed_placement() -> None:
    placed = pack(A100_SXM4_80GB, [], profiles(A100_SXM4_80GB, "1g", "2g", "4g"))
    assert placed is not None
    assert {(s.profile, s.start) for s in placed} == {("4g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)}


def test_no_memory_slice_left_is_said_as_such() -> None:
    wanted = profiles(A100_SXM4_80GB, "3g.40gb", "3g.40gb", "1g.10gb")
    assert pack(A100_SXM4_80GB, [], wanted) is None
    assert misfit_reason(A100_SXM4_80GB, [], wanted) == (
        "no memory slice left for another 1g.10gb (taken: 3g.40gb@4, 3g.40gb@0)"
    )


def test_a_busy_instance_in_the_only_place_is_said_as_such() -> None:
    busy = Slot(9, "3g.40gb", 0, 4)
    wanted = profiles(A100_SXM4_80GB, "4g")
    assert pack(A100_SXM4_80GB, [busy], wanted) is None
    assert misfit_reason(A100_SXM4_80GB, [busy], wanted) == (
        "no free place for another 4g.40gb: it needs 4 memory slice(s) starting at 0 (taken: 3g.40gb@0)"
    )


def test_instance_counts_are_limited() -> None:
    assert misfit_reason(A100_SXM4_80GB, [], profiles(A100_SXM4_80GB, *["1g"] * 8)) == (
        "at most 7 1g.10gb fit on this GPU (NVML's instance count)"
    )
    assert misfit_reason(A30, [], profiles(A30, "1g+me", "1g.6gb+me")) == (
        "at most 1 1g.6gb+me fit on this GPU (NVML's instance count)")


def brute_force_fits(model: MigCapability, wanted: list[GpuInstanceProfile]) -> bool:
    """Try every combination of starts: the oracle the search must agree with."""
    for starts in product(*(p.placement_starts for p in wanted)):
        slots = [Slot.of(p, s) for p, s in zip(wanted, starts, strict=True)]
        no_overlap = all(not a.overlaps(b) for i, a in enumerate(slots) for b in slots[i + 1 :])
        counts_ok = all(sum(q.id == p.id for q in wanted) <= p.max_count for p in wanted)
        if no_overlap and counts_ok:
            return True
    return False


@st.composite
def model_and_layout(draw: st.DrawFn) -> tuple[MigCapability, list[GpuInstanceProfile]]:
    model = draw(st.sampled_from([capability(key) for key in MODEL_KEYS]))
    return model, draw(st.lists(st.sampled_from(model.profiles), min_size=1, max_size=5))


@settings(max_examples=200, deadline=None)
@given(model_and_layout())
def test_search_finds_a_fit_exactly_when_one_exists(
        case: tuple[MigCapability, list[GpuInstanceProfile]]) -> None:
    model, wanted = case
    placed = pack(model, [], wanted)
    assert (placed is not None) == brute_force_fits(model, wanted)
    if placed is not None:
        assert sorted(s.profile_id for s in placed) == sorted(p.id for p in wanted)
        starts = {p.id: p.placement_starts for p in model.profiles}
        assert all(s.start in starts[s.profile_id] for s in placed)
        assert all(not a.overlaps(b) for i, a in enumerate(placed) for b in placed[i + 1 :])
    else:
        assert misfit_reason(model, [], wanted)
