"""The property of ``remediate --apply``: on any fleet and layout, it reaches the target exactly, or
leaves the fleet as it was (a MIG mode left pending for a reset aside), and never destroys an
instance that has processes. Random fleets, layouts and faults, through the real CLI and simulator."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from simulated_gpus import capability

from mig_exporter.packing import Slot
from mig_exporter.sim import Fleet, load_fleet

from .fleets import busy_instances, reaches, remediate, without_mig_uuids, write_fleet

MUTATING_CALLS = (
    "nvmlDeviceSetMigMode",
    "nvmlDeviceSetPersistenceMode",
    "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceCreateComputeInstance",
    "nvmlGpuInstanceDestroy",
    "nvmlComputeInstanceDestroy",
)


@st.composite
def gpu_entries(draw: st.DrawFn, model: str, index: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": model, "persistence": draw(st.booleans())}
    pid = 1000 + 100 * index
    if draw(st.booleans()):
        entry["mig"] = "disabled"
        if draw(st.booleans()):
            entry["processes"] = [{"pid": pid, "name": "python", "used_memory_mib": 100}]
    else:
        entry["mig"] = "enabled"
        placed: list[Slot] = []
        for profile, choice in draw(
            st.lists(st.tuples(st.sampled_from(capability(model).profiles), st.integers(0, 7)), max_size=5)
        ):
            slot = Slot.of(profile, profile.placement_starts[choice % len(profile.placement_starts)])
            crowded = sum(s.profile_id == profile.id for s in placed) >= profile.max_count
            if not crowded and not any(slot.overlaps(other) for other in placed):
                placed.append(slot)
        entry["instances"] = []
        for n, slot in enumerate(placed):
            instance: dict[str, Any] = {"profile": slot.profile, "placement": slot.start}
            if draw(st.integers(0, 3)) == 0:
                instance["processes"] = [{"pid": pid + 1 + n, "name": "python", "used_memory_mib": 100}]
            entry["instances"].append(instance)
    if draw(st.integers(0, 3)) == 0:
        entry["held_by"] = ["monitoring-agent"]
    return entry


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], str, list[str], list[str]]:
    model = draw(st.sampled_from(["A100-SXM4-80GB", "H100-SXM5-80GB", "A30"]))
    count = draw(st.integers(1, 2))
    document: dict[str, Any] = {"gpus": [draw(gpu_entries(model, i)) for i in range(count)]}
    if draw(st.booleans()):
        document["faults"] = [
            {
                "call": draw(st.sampled_from(MUTATING_CALLS)),
                "error": "UNKNOWN",
                "skip": draw(st.integers(0, 3)),
                "count": 1,
            }
        ]
    gpus = draw(st.sampled_from(["all", "0"]))
    names = [p.name for p in capability(model).profiles]
    layout = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4))
    options = draw(st.sampled_from([[], ["--reset"], ["--no-persistence"]]))
    return document, gpus, layout, options


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_apply_reaches_the_target_or_changes_nothing(
    case: tuple[dict[str, Any], str, list[str], list[str]],
) -> None:
    document, gpus, layout, options = case
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        fleet = write_fleet(path, document)
        before = load_fleet(str(fleet))
        status = remediate(
            path, fleet, "--gpu", gpus, "--layout", ",".join(layout), "--apply", "--yes", *options
        )
        after: Fleet = load_fleet(str(fleet))

    event(f"exit status {status}")
    assert status in (0, 2, 3, 4)
    for old, new in zip(before.gpus, after.gpus, strict=True):
        assert busy_instances(old) <= busy_instances(new)  # nothing with processes was destroyed
    targets = range(len(before.gpus)) if gpus == "all" else [0]
    if status in (2, 3):  # undone: MIG devices destroyed and made again have new UUIDs
        assert without_mig_uuids(after).gpus == before.gpus
    elif status == 0:
        assert all(reaches(after.gpus[i], layout) for i in targets)
    else:  # 4: a GPU held by a client waits for a reset, with only its MIG mode changed
        for i in targets:
            old, new = before.gpus[i], after.gpus[i]
            waiting = new.held_by and new.mig.pending and not new.mig.current
            assert reaches(new, layout) or (waiting and new.instances == old.instances == ())
    untouched = [i for i in range(len(before.gpus)) if i not in targets]
    assert all(after.gpus[i] == before.gpus[i] for i in untouched)
