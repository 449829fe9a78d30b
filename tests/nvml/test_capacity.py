"""The remaining MIG capacity per profile, read through the real pynvml on the simulated library.

Expected values follow mig-facts.md: a profile fits once per valid placement ("Placements" table)
whose memory slices are all free, and no more often than its instance count (the "max" column).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pynvml
import pytest

from mig_exporter.model import Gpu
from mig_exporter.nvml.read import read_snapshot

from .conftest import Opener
from .test_read import fleet_file

EMPTY_MIG_GPU = """
  - model: A100-SXM4-80GB
    mig: enabled
"""


def mig_gpu(*instances: str) -> str:
    return EMPTY_MIG_GPU + "    instances:\n" + "".join(f"      - {i}\n" for i in instances)


def capacity(gpu: Gpu) -> dict[str, int]:
    assert gpu.mig_profile_capacity is not None
    return dict(gpu.mig_profile_capacity)


def test_an_empty_mig_gpu_fits_each_profile_its_instance_count(
        tmp_path: Path, open_session: Opener) -> None:
    """mig-facts.md "Per-model tables", max column (A100-80GB: same as 40GB): with every memory
    slice free, each profile fits as many times as its instance count, which is also the number of
    its placements: 1g {0..6}, 1g double memory {0,2,4,6}, 2g {0,2,4}, 3g {0,4}, 4g and 7g {0};
    1g+me has seven placements but an instance count of 1."""
    snapshot = read_snapshot(open_session(fleet_file(tmp_path, EMPTY_MIG_GPU)))
    assert not snapshot.errors
    assert capacity(snapshot.gpus[0]) == {
        "1g.10gb": 7, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1, "1g.10gb+me": 1, "1g.20gb": 4}


@pytest.mark.parametrize("instances", [
    # seed/README.md: after the runbook's two 3g.40gb "a further 1g.10gb instance is impossible"
    ("{profile: 3g.40gb, placement: 0}", "{profile: 3g.40gb, placement: 4}"),
    # mig-facts.md: "a 7g all 8" memory slices
    ("{profile: 7g.80gb}",),
])
def test_a_full_mig_gpu_fits_nothing(
        tmp_path: Path, open_session: Opener, instances: tuple[str, ...]) -> None:
    gpu = read_snapshot(open_session(fleet_file(tmp_path, mig_gpu(*instances)))).gpus[0]
    assert capacity(gpu) == dict.fromkeys(
        ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.10gb+me", "1g.20gb"), 0)


def test_a_fragmented_mig_gpu_fits_no_3g_with_six_slices_free(
        tmp_path: Path, open_session: Opener) -> None:
    """mig-facts.md "Placements": a 1g at 0 and a 1g at 6 leave slices 1–5 and 7 free, yet break
    both 3g placements ({0,4}:4 hold slice 0 and slice 6), the 4g and the 7g (both start at 0);
    the 2g keeps {2,4}, the 1g double memory {2,4}, the 1g five starts (1..5; 7 is no 1g start) and
    the 1g+me its one instance."""
    path = fleet_file(tmp_path, mig_gpu("{profile: 1g.10gb, placement: 6}",
                                        "{profile: 1g.10gb, placement: 0}"))
    gpu = read_snapshot(open_session(path)).gpus[0]
    assert capacity(gpu) == {
        "1g.10gb": 5, "2g.20gb": 2, "3g.40gb": 0, "4g.40gb": 0, "7g.80gb": 0, "1g.10gb+me": 1, "1g.20gb": 2}


def test_capacity_is_absent_where_mig_is_off(tmp_path: Path, open_session: Opener) -> None:
    gpu = read_snapshot(open_session(fleet_file(tmp_path, "\n  - model: A100-SXM4-80GB\n"))).gpus[0]
    assert (gpu.mig_supported, gpu.mig_profile_capacity) == (True, None)


def _counting_capacity_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    asked: Callable[..., int] = pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity

    def counted(handle: object, profile_id: int) -> int:
        calls.append(profile_id)
        return asked(handle, profile_id)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetGpuInstanceRemainingCapacity", counted)
    return calls


def test_capacity_is_asked_again_only_when_the_layout_changed(
        tmp_path: Path, open_session: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a real host each NVML call costs up to milliseconds: an unchanged layout reuses the
    answer, checked with one call, the capacity of the smallest profile (1g.10gb, ID 19), which
    any GPU instance created or destroyed changes (issue 12)."""
    calls = _counting_capacity_calls(monkeypatch)
    session = open_session(fleet_file(tmp_path, EMPTY_MIG_GPU))
    assert capacity(read_snapshot(session).gpus[0])["3g.40gb"] == 2
    assert len(calls) == 7
    calls.clear()
    assert capacity(read_snapshot(session).gpus[0])["3g.40gb"] == 2 and calls == [19]
    calls.clear()
    # mig-facts.md: created without a placement, a 3g goes to slice 4; then slices 0–3 remain
    pynvml.nvmlDeviceCreateGpuInstance(pynvml.nvmlDeviceGetHandleByIndex(0), 9)
    assert capacity(read_snapshot(session).gpus[0]) == {
        "1g.10gb": 4, "2g.20gb": 2, "3g.40gb": 1, "4g.40gb": 1, "7g.80gb": 0, "1g.10gb+me": 1, "1g.20gb": 2}
    assert calls[0] == 19 and len(calls) == 1 + 7


def test_a_capacity_nvml_did_not_give_is_absent_and_asked_again(
        tmp_path: Path, open_session: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    path = fleet_file(tmp_path, EMPTY_MIG_GPU,
                      "- {call: nvmlDeviceGetGpuInstanceRemainingCapacity, error: UNKNOWN, count: 1}\n")
    session = open_session(path)
    failed = read_snapshot(session)
    assert [(e.call, e.error) for e in failed.errors] == [
        ("nvmlDeviceGetGpuInstanceRemainingCapacity", "Unknown Error")]
    assert "1g.10gb" not in capacity(failed.gpus[0]) and capacity(failed.gpus[0])["1g.20gb"] == 4
    calls = _counting_capacity_calls(monkeypatch)
    assert capacity(read_snapshot(session).gpus[0])["1g.10gb"] == 7 and len(calls) == 7
