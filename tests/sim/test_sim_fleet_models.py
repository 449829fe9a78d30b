"""Models a fleet file defines (DESIGN.md, "Models a fleet file defines"): the simulator serves one
like a built-in model, through the real pynvml and the real reader, and refuses a bad definition
with one line naming the file, the path inside it and the reason.

The expected numbers are those X100_MODEL gives; the rules they follow are mig-facts.md's:
"Placements" (a profile fits at its valid starts whose memory slices are free, no more often than
its instance count), "GPU instance IDs follow the placement" (the binary-tree rule of
``sim/placement.py``) and "Compute instances" (C == G, or C < G and 2C <= G + 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from exporter.test_serve_e2e import serve

from mig_exporter.host import nvml_session
from mig_exporter.model import Snapshot
from mig_exporter.nvml.read import read_snapshot
from mig_exporter.sim import FleetError, dump_fleet, parse_fleet

from .fleet_defined_model import X100_FLEET, X100_MODEL


@pytest.fixture
def x100_fleet(tmp_path: Path) -> str:
    path = tmp_path / "x100.yaml"
    path.write_text(X100_FLEET)
    return str(path)


@pytest.fixture
def snapshot(x100_fleet: str) -> Iterator[Snapshot]:
    session = nvml_session(x100_fleet)
    session.open()
    try:
        yield read_snapshot(session)
    finally:
        session.close()


def test_nvml_reports_the_defined_model_as_the_file_gives_it(snapshot: Snapshot) -> None:
    assert not snapshot.errors
    gpu = snapshot.gpus[1]
    assert (gpu.name, gpu.pci_device_id, gpu.memory_total_bytes) == ("NVIDIA X100 Test", 0x2999, 98304 << 20)
    assert gpu.mig_capability is not None and gpu.mig_capability.architecture == "hopper"
    # Only the enums the file gives answer; the others (3_SLICE, 7_SLICE …) are NOT_SUPPORTED.
    rows = {p.name: (p.enum, p.id, p.memory_mib, p.multiprocessors, p.slice_count, p.max_count,
                     p.copy_engines, p.decoders, p.jpeg, p.ofa, p.placement_starts, p.placement_size)
            for p in gpu.mig_capability.profiles}
    assert rows == {
        "1g.12gb": (0, 31, 11776, 20, 1, 8, 1, 0, 0, 0, (0, 1, 2, 3, 4, 5, 6, 7), 1),
        "2g.24gb": (1, 42, 23808, 40, 2, 4, 2, 1, 0, 0, (0, 2, 4, 6), 2),
        "4g.48gb": (3, 53, 47872, 80, 4, 2, 4, 2, 0, 0, (0, 4), 4),
        "8g.96gb": (5, 61, 96000, 160, 8, 1, 8, 4, 2, 1, (0,), 8),
        "1g.12gb+gfx": (10, 71, 11776, 20, 1, 1, 1, 0, 0, 0, (0, 1, 2, 3, 4, 5, 6, 7), 1),
    }


def test_gpu_instance_ids_follow_the_placements_the_file_gives(snapshot: Snapshot) -> None:
    """mig-facts.md "GPU instance IDs follow the placement", on 8 memory slices: the span of
    ``size`` slices at ``start`` is node 8/size - 1 + start/size: 4g@4 → 2, 2g@2 → 4, 1g@0 → 7."""
    instances = {(m.profile, m.gpu_instance_id, m.compute_instance_id, m.multiprocessors,
                  m.memory_total_bytes is not None) for m in snapshot.gpus[0].mig_instances}
    assert instances == {
        ("4g.48gb", 2, 0, 80, True), ("2g.24gb", 4, 0, 40, True), ("1g.12gb", 7, 0, 20, True)}
    assert [(p.pid, p.gpu_index, p.gpu_instance_id, p.used_memory_bytes) for p in snapshot.processes] == [
        (5001, 0, 2, 30000 << 20), (6001, 2, None, 20000 << 20), (6002, 2, None, 30000 << 20)]


def test_compute_profiles_of_a_defined_model_follow_the_compute_instance_rule(snapshot: Snapshot) -> None:
    """mig-facts.md "Compute instances": in a 4g, C = 1, 2, 4; SMs per compute slice are the 1g's
    (20), so 1c.4g has 20 and 2c.4g 40; NVML lists them once a 4g exists (GPU 0 has one)."""
    capability = snapshot.gpus[0].mig_capability
    assert capability is not None
    four_g = capability.profile_by_id(53)
    assert four_g is not None and four_g.compute_profiles is not None
    assert sorted((c.slice_count, c.multiprocessors, c.instance_count) for c in four_g.compute_profiles) == [
        (1, 20, 4), (2, 40, 2), (4, 80, 1)]


def test_capacity_of_a_defined_model_empty_and_fragmented(snapshot: Snapshot) -> None:
    """Empty: each profile fits its instance count. GPU 0 holds slices 0, 2-3 and 4-7: only slice
    1 is free, so one 1g (or the one 1g+gfx) fits and nothing larger, though 2g@0 needs only
    slice 0 and 1 (slice 0 is taken)."""
    assert dict(snapshot.gpus[1].mig_profile_capacity or ()) == {
        "1g.12gb": 8, "2g.24gb": 4, "4g.48gb": 2, "8g.96gb": 1, "1g.12gb+gfx": 1}
    assert dict(snapshot.gpus[0].mig_profile_capacity or ()) == {
        "1g.12gb": 1, "2g.24gb": 0, "4g.48gb": 0, "8g.96gb": 0, "1g.12gb+gfx": 1}


def test_serve_exposes_the_defined_models_instances_and_capacities(x100_fleet: str) -> None:
    with serve(x100_fleet) as served:
        samples = served.samples()
    info = {dict(labels)["gpu"]: dict(labels) for name, labels in samples if name == "nvml_gpu_info"}
    assert {gpu: labels["name"] for gpu, labels in info.items()} == dict.fromkeys("012", "NVIDIA X100 Test")
    instances = sorted((dict(labels)["gpu_instance_id"], dict(labels)["profile"])
                       for name, labels in samples if name == "nvml_mig_instance_info")
    assert instances == [("2", "4g.48gb"), ("4", "2g.24gb"), ("7", "1g.12gb")]

    def capacity(gpu: str, profile: str) -> float:
        return samples[("nvml_gpu_mig_profile_capacity",
                        frozenset({"gpu": gpu, "uuid": info[gpu]["uuid"], "profile": profile}.items()))]

    assert [capacity("1", p) for p in ("1g.12gb", "2g.24gb", "4g.48gb", "8g.96gb")] == [8, 4, 2, 1]
    assert [capacity("0", p) for p in ("1g.12gb", "2g.24gb", "4g.48gb", "8g.96gb")] == [1, 0, 0, 0]


def test_a_defined_model_is_dumped_and_read_back_unchanged() -> None:
    fleet = parse_fleet(X100_FLEET, "x100.yaml")
    assert [m.key for m in fleet.models] == ["X100-TEST"]
    assert parse_fleet(dump_fleet(fleet), "dump.yaml") == fleet


GPU = "gpus:\n  - {model: X100-TEST, mig: enabled}\n"
FIRST = "models.X100-TEST.profiles[0]"


def refusal(text: str) -> str:
    with pytest.raises(FleetError) as refused:
        parse_fleet(text, "lab.yaml")
    assert "\n" not in str(refused.value)
    return str(refused.value)


def changed(old: str, new: str) -> str:
    assert old in X100_MODEL
    return X100_MODEL.replace(old, new, 1) + GPU


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(X100_MODEL.replace("X100-TEST:", "A100-SXM4-80GB:") + GPU,
                 "models.A100-SXM4-80GB: A100-SXM4-80GB is a built-in model: name the one this file defines "
                 "otherwise", id="built-in-key"),
    pytest.param(changed("    pci_device_id: 0x2999\n", ""), "models.X100-TEST: pci_device_id is required",
                 id="missing-key"),
    pytest.param(changed("architecture: hopper", "architecture: volta"),
                 "models.X100-TEST.architecture: 'volta' is not an architecture (ampere, hopper, blackwell)",
                 id="architecture"),
    pytest.param(changed("memory_slices: 8", "memory_slices: 6"),
                 "models.X100-TEST.memory_slices: 6 is not a power of two (1, 2, 4, 8 …): GPU instance IDs "
                 "number a binary tree over the slices", id="slices-not-a-power-of-two"),
    pytest.param(changed("compute_slices: 8", "compute_slices: 9"),
                 "models.X100-TEST.compute_slices: 9 is more than 8", id="more-compute-than-memory-slices"),
    pytest.param(changed("{name: 2g.24gb,", "{name: 3g.24gb,"),
                 "models.X100-TEST.profiles[1].name: 3g.24gb names 3 compute slices, but slices is 2",
                 id="name-and-slices-disagree"),
    pytest.param(changed("{name: 1g.12gb,", "{name: small,"),
                 f"{FIRST}.name: 'small' is not a profile name like 3g.40gb, 1g.10gb+me or 1g.24gb+gfx "
                 "(variants: +me, +me.all, +gfx, -me)", id="name"),
    pytest.param(changed("placement_starts: [0, 2, 4, 6]", "placement_starts: [0, 3, 4, 6]"),
                 "models.X100-TEST.profiles[1].placement_starts[1]: 3 is not a start of 2 memory slices "
                 "out of 8 (a multiple of 2 up to 6)", id="unaligned-placement"),
    pytest.param(changed("placement_starts: [0, 4],", "placement_starts: [4, 4],"),
                 "models.X100-TEST.profiles[2].placement_starts[1]: 4 is listed twice", id="placement-twice"),
    pytest.param(changed("placement_size: 8", "placement_size: 6"),
                 "models.X100-TEST.profiles[3].placement_size: 6 is not a power of two (1, 2, 4, 8 …)",
                 id="placement-size"),
    pytest.param(changed("enum: 3, id: 53", "enum: 3, id: 42"),
                 "models.X100-TEST.profiles[2].id: 42 is already the id of models.X100-TEST.profiles[1]",
                 id="duplicate-id"),
    pytest.param(changed("enum: 3, id: 53", "enum: 1, id: 53"),
                 "models.X100-TEST.profiles[2].enum: 1 is already the enum of models.X100-TEST.profiles[1]",
                 id="duplicate-enum"),
    pytest.param(changed("enum: 10, id: 71", "enum: 18, id: 71"),
                 "models.X100-TEST.profiles[4].enum: 18 is more than 17", id="enum-past-nvml"),
    pytest.param(changed("max_count: 2, slices: 4", "max_count: 3, slices: 4"),
                 "models.X100-TEST.profiles[2].max_count: 3 is more than 2",
                 id="more-instances-than-placements"),
    pytest.param(changed("memory_mib: 96000", "memory_mib: 99000"),
                 "models.X100-TEST.profiles[3].memory_mib: 99000 is more than 98304",
                 id="more-memory-than-gpu"),
    pytest.param(changed("    pci_device_id: 0x2999\n", "    pci_device_id: 0x2999\n    pci_id: 1\n"),
                 "models.X100-TEST.pci_id: unknown key (did you mean pci_device_id?); allowed: nvml_name, "
                 "memory_total_mib, architecture, memory_slices, compute_slices, pci_device_id, profiles",
                 id="unknown-key"),
    pytest.param(X100_MODEL.split("    profiles:")[0] + "    profiles: []\n" + GPU,
                 "models.X100-TEST.profiles: a MIG model needs at least one GPU instance profile",
                 id="no-profiles"),
    pytest.param(X100_MODEL + "gpus:\n  - {model: X200-TEST}\n",
                 "gpus[0].model: unknown model 'X200-TEST' (models: A100-SXM4-40GB, A100-SXM4-80GB, "
                 "A100-PCIE-80GB, A30, H100-SXM5-80GB, H100-NVL, H200, H800, B200, GB200, GH200, "
                 "RTX-PRO-6000-Blackwell, X100-TEST)", id="gpu-names-no-model"),
    pytest.param(X100_MODEL + "gpus:\n  - model: X100-TEST\n    mig: enabled\n"
                 "    instances: [{profile: 4g.48gb, placement: 2}]\n",
                 "gpus[0].instances[0].placement: 2 is not a valid start for 4g.48gb on X100-TEST "
                 "(valid: 0, 4)",
                 id="instance-outside-the-defined-placements"),
    pytest.param(X100_MODEL + "gpus:\n  - model: X100-TEST\n    mig: enabled\n"
                 "    instances: [{profile: 3g}]\n",
                 "gpus[0].instances[0].profile: '3g' is not a GPU instance profile of X100-TEST (1g.12gb, "
                 "2g.24gb, 4g.48gb, 8g.96gb, 1g.12gb+gfx)", id="profile-the-model-lacks"),
])
def test_a_bad_model_definition_is_refused_with_path_and_reason(text: str, expected: str) -> None:
    assert refusal(text) == f"lab.yaml: {expected}"


def test_a_gfx_profile_is_named_with_its_variant_in_a_fleet_file() -> None:
    """The variant picks the profile: ``1g+gfx`` is ID 71, a bare ``1g`` the plain 1g (31); both at
    their start k get GPU instance ID 7 + k (mig-facts.md: 1g@k → 7+k)."""
    instances = "    instances: [{profile: 1g+gfx, placement: 3}, {profile: 1g, placement: 5}]\n"
    fleet = parse_fleet(X100_MODEL + "gpus:\n  - model: X100-TEST\n    mig: enabled\n" + instances, "x.yaml")
    assert [(gi.profile_id, gi.start, gi.id) for gi in fleet.gpus[0].instances] == [(71, 3, 10), (31, 5, 12)]


SEVEN_COMPUTE_SLICES = (X100_MODEL.replace("compute_slices: 8", "compute_slices: 7")
                        .replace("name: 8g.96gb, enum: 5,", "name: 7g.96gb, enum: 4,")
                        .replace("max_count: 1, slices: 8,", "max_count: 1, slices: 7,"))
X100_GPU_WITH = "gpus:\n  - model: X100-TEST\n    mig: enabled\n    instances:\n"


def test_capacity_is_capped_by_the_compute_slices_left(tmp_path: Path) -> None:
    """A model with 8 memory slices but 7 compute slices (an A100's shape, with 1g starts 0..7):
    after seven 1g, memory slice 7 is free but no compute slice is, so NVML can create nothing
    more; on the built-in models this cap never binds (their placements never use more compute
    slices than the GPU has)."""
    ones = "".join(f"      - {{profile: 1g.12gb, placement: {k}}}\n" for k in range(7))
    path = tmp_path / "seven.yaml"
    path.write_text(SEVEN_COMPUTE_SLICES + X100_GPU_WITH + ones)
    session = nvml_session(str(path))
    session.open()
    try:
        capacity = dict(read_snapshot(session).gpus[0].mig_profile_capacity or ())
    finally:
        session.close()
    assert capacity == {"1g.12gb": 0, "2g.24gb": 0, "4g.48gb": 0, "7g.96gb": 0, "1g.12gb+gfx": 0}


def test_an_instance_past_the_compute_slices_is_refused() -> None:
    ones = "".join(f"      - {{profile: 1g.12gb, placement: {k}}}\n" for k in range(8))
    text = SEVEN_COMPUTE_SLICES + X100_GPU_WITH + ones
    assert refusal(text) == ("lab.yaml: gpus[0].instances[7].profile: 1g.12gb needs 1 compute slices; "
                             "0 of 7 are left on X100-TEST")
