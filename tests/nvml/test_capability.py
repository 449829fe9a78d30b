"""The MIG capability the reader records, through the real pynvml on the simulated library.

Expected values are those of mig-facts.md (the "Per-model tables", "Placements" and "Compute
instances" sections), not the simulator's own tables, so a simulator that drifted from the facts
fails here too.
"""

from __future__ import annotations

from pathlib import Path

from mig_exporter.capability import GpuInstanceProfile, MigCapability
from mig_exporter.nvml.read import read_snapshot

from .conftest import Opener
from .test_read import fleet_file

A100_80GB_MIG_OFF = """
  - model: A100-SXM4-80GB
"""
A100_80GB_WITH_3G = """
  - model: A100-SXM4-80GB
    mig: enabled
    instances:
      - {profile: 3g.40gb, placement: 4}
"""


def rows(capability: MigCapability | None) -> dict[str, tuple[object, ...]]:
    assert capability is not None
    return {p.name: (p.enum, p.id, p.memory_mib, p.multiprocessors, p.copy_engines, p.decoders, p.jpeg,
                     p.ofa, p.max_count, p.slice_count, p.placement_starts, p.placement_size)
            for p in capability.profiles}


def profile(capability: MigCapability | None, name: str) -> GpuInstanceProfile:
    assert capability is not None
    (found,) = [p for p in capability.profiles if p.name == name]
    return found


def test_every_profile_of_an_a100_80gb_is_read_with_mig_off(tmp_path: Path, open_session: Opener) -> None:
    """mig-facts.md: A100-80GB has the IDs, SMs, engines and placements of the 40GB table, with its
    own names and MiB; the enums 5, 6 and 0xA-0x11 are NOT_SUPPORTED there, which is an answer
    ("not on this GPU"), not an error. The profiles are read with MIG off, so diagnose can advise
    a layout before MIG is enabled."""
    snapshot = read_snapshot(open_session(fleet_file(tmp_path, A100_80GB_MIG_OFF)))
    assert not snapshot.errors
    capability = snapshot.gpus[0].mig_capability
    one_to_six = (0, 1, 2, 3, 4, 5, 6)
    # name: enum, ID, MiB, SM, CE, DEC, JPG, OFA, max, slices, starts, size
    assert rows(capability) == {
        "1g.10gb": (0, 19, 9728, 14, 1, 0, 0, 0, 7, 1, one_to_six, 1),
        "2g.20gb": (1, 14, 19968, 28, 2, 1, 0, 0, 3, 2, (0, 2, 4), 2),
        "3g.40gb": (2, 9, 40192, 42, 3, 2, 0, 0, 2, 3, (0, 4), 4),
        "4g.40gb": (3, 5, 40192, 56, 4, 2, 0, 0, 1, 4, (0,), 4),
        "7g.80gb": (4, 0, 80896, 98, 7, 5, 1, 1, 1, 7, (0,), 8),
        "1g.10gb+me": (7, 20, 9728, 14, 1, 1, 1, 1, 1, 1, one_to_six, 1),
        "1g.20gb": (9, 15, 19968, 14, 1, 1, 0, 0, 4, 1, (0, 2, 4, 6), 2),
    }
    assert capability is not None
    assert (capability.architecture, capability.memory_slices, capability.compute_slices) == ("ampere", 8, 7)
    # no GPU instance exists, and the reader never creates one to ask: compute profiles are absent
    assert all(p.compute_profiles is None for p in capability.profiles)


def test_an_a30_has_four_memory_slices_and_two_plus_me_profiles(tmp_path: Path, open_session: Opener) -> None:
    """mig-facts.md A30-24GB table: 1g (14/21) {0,1,2,3}:1, 2g (5/6) {0,2}:2, 4g (0) {0}:4."""
    snapshot = read_snapshot(open_session(fleet_file(tmp_path, "\n  - model: A30\n")))
    capability = snapshot.gpus[0].mig_capability
    assert {name: row[1:2] + row[8:] for name, row in rows(capability).items()} == {
        "1g.6gb": (14, 4, 1, (0, 1, 2, 3), 1), "1g.6gb+me": (21, 1, 1, (0, 1, 2, 3), 1),
        "2g.12gb": (5, 2, 2, (0, 2), 2), "2g.12gb+me": (6, 1, 2, (0, 2), 2), "4g.24gb": (0, 1, 4, (0,), 4)}
    assert capability is not None and capability.memory_slices == 4


def test_compute_profiles_come_from_an_existing_gpu_instance(tmp_path: Path, open_session: Opener) -> None:
    """mig-facts.md "Compute instances": a 3g instance takes 1, 2 or 3-slice compute instances, the
    CI profile ID equals its enum, names <C>c.<G>g.<N>gb when C < G. Only the 3g profile has an
    instance, so only its compute profiles can be asked; H100's architecture is Hopper."""
    snapshot = read_snapshot(open_session(fleet_file(tmp_path, A100_80GB_WITH_3G)))
    assert not snapshot.errors
    capability = snapshot.gpus[0].mig_capability
    three = profile(capability, "3g.40gb")
    assert three.compute_profiles is not None
    assert [(c.id, c.slice_count, c.instance_count, c.name) for c in three.compute_profiles] == [
        (0, 1, 3, "1c.3g.40gb"), (1, 2, 1, "2c.3g.40gb"), (2, 3, 1, "3g.40gb")]
    assert three.compute_slice_options() == (1, 2, 3)
    assert profile(capability, "7g.80gb").compute_profiles is None
    # the rule stands in where NVML could not be asked yet: 7g -> 1, 2, 3, 4, 7
    assert profile(capability, "7g.80gb").compute_slice_options() == (1, 2, 3, 4, 7)


def test_a_driver_older_than_an_enum_answers_invalid_argument(tmp_path: Path, open_session: Opener) -> None:
    """mig-facts.md: past the last enum the driver knows, INVALID_ARGUMENT: "not on this GPU" like
    NOT_SUPPORTED, so it is not counted as an error."""
    fault = "- {call: nvmlDeviceGetGpuInstanceProfileInfoV, error: INVALID_ARGUMENT, skip: 4, count: 1}\n"
    snapshot = read_snapshot(open_session(fleet_file(tmp_path, A100_80GB_MIG_OFF, fault)))
    assert not snapshot.errors
    assert "7g.80gb" not in rows(snapshot.gpus[0].mig_capability)  # enum 4, the fifth asked
    assert "3g.40gb" in rows(snapshot.gpus[0].mig_capability)


def test_a_failed_read_is_asked_again_next_collection(tmp_path: Path, open_session: Opener) -> None:
    """A placement list NVML would not give leaves that profile out and is counted as an error; the
    table is not kept, so the next collection reads it whole."""
    fault = "- {call: nvmlDeviceGetGpuInstancePossiblePlacements_v2, error: UNKNOWN, count: 1}\n"
    session = open_session(fleet_file(tmp_path, A100_80GB_MIG_OFF, fault))
    first = read_snapshot(session)
    assert [e.call for e in first.errors] == ["nvmlDeviceGetGpuInstancePossiblePlacements"]
    assert "1g.10gb" not in rows(first.gpus[0].mig_capability)
    second = read_snapshot(session)
    assert not second.errors and len(rows(second.gpus[0].mig_capability)) == 7


def test_hopper_is_read_as_hopper(tmp_path: Path, open_session: Opener) -> None:
    snapshot = read_snapshot(open_session(fleet_file(tmp_path, "\n  - model: H100-SXM5-80GB\n")))
    capability = snapshot.gpus[0].mig_capability
    assert capability is not None and capability.architecture == "hopper"
    # mig-facts.md H100 table: 3g.40gb ID 9, 40448 MiB, 60 SM
    assert rows(capability)["3g.40gb"][1:4] == (9, 40448, 60)
