"""GPM through the real pynvml on the simulated GPM calls (sim/gpm_calls.py): per-instance values
of a simulated H100 with MIG are the fleet file's, each collection diffs against the previous one,
a GPU instance re-created under the same ID in another shape never diffs against its predecessor
(the simulator refuses such a diff, so it would show as an error), an A100 (Ampere: no GPM) gives
no GPM values and no error, and the window's floor and ceiling hold."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from mig_exporter.model import GpmMetrics, Snapshot
from mig_exporter.nvml.gpm import GpmSamples
from mig_exporter.nvml.read import read_snapshot
from mig_exporter.nvml.session import NvmlSession
from mig_exporter.sim.state import Activity, SimComputeInstance, SimGpuInstance

from .conftest import Opener, collect, simulator
from .test_read import fleet_file

H100_WITH_MIG = """
  - model: H100-SXM5-80GB
    mig: enabled
    instances:
      - profile: 3g.40gb
        placement: 0
        gpm: {sm_util_percent: 80, sm_occupancy_percent: 45.5, tensor_util_percent: 30,
              dram_bw_util_percent: 60}
        compute_instances:
          - {profile: 2c.3g.40gb, placement: 0}
          - {profile: 1c.3g.40gb, placement: 2}
      - profile: 2g.20gb
        placement: 4
        gpm: {sm_util_percent: 10}
      - profile: 1g.10gb
        placement: 6
  - model: H100-SXM5-80GB
    gpm: {sm_util_percent: 95, sm_occupancy_percent: 70, tensor_util_percent: 88, dram_bw_util_percent: 41}
  - model: A100-SXM4-80GB
    mig: enabled
    instances: [{profile: 3g.40gb}]
  - model: A100-SXM4-80GB
"""
GPM_CALLS = ("nvmlGpmSampleGet", "nvmlGpmMigSampleGet", "nvmlGpmMetricsGet", "nvmlGpmSampleAlloc",
             "nvmlGpmSampleFree", "nvmlGpmQueryDeviceSupport")


def ratios(gpm: GpmMetrics | None) -> tuple[float | None, ...] | None:
    if gpm is None:
        return None
    return (gpm.sm_utilization_ratio, gpm.sm_occupancy_ratio, gpm.tensor_utilization_ratio,
            gpm.dram_bandwidth_utilization_ratio)


def gpm_calls(session: NvmlSession) -> Counter[str]:
    counts = simulator(session).call_counts
    return Counter({name: counts[name] for name in GPM_CALLS})


@pytest.fixture
def session(tmp_path: Path, open_session: Opener) -> NvmlSession:
    opened = open_session(fleet_file(tmp_path, H100_WITH_MIG))
    opened.gpm_samples.floor_seconds = 0.0  # back-to-back collections each make a window
    return opened


def by_instance(snapshot: Snapshot, gpu: int) -> dict[tuple[int, int], tuple[float | None, ...] | None]:
    return {(m.gpu_instance_id, m.compute_instance_id): ratios(m.gpm)
            for m in snapshot.gpu(gpu).mig_instances}


def test_h100_mig_instances_have_the_fleet_files_values_and_a100_none(session: NvmlSession) -> None:
    first = collect(session)
    assert [g.gpm for g in first.gpus] == [None] * 4  # one sample each: no window yet
    second = collect(session)
    approx = pytest.approx
    # each compute instance carries its GPU instance's values: GPM samples GPU instances
    three_g = approx((0.80, 0.455, 0.30, 0.60))
    assert by_instance(second, 0) == {(1, 0): three_g, (1, 2): three_g, (5, 0): approx((0.10, 0.0, 0.0, 0.0)),
                                      (13, 0): approx((0.0, 0.0, 0.0, 0.0))}
    # the whole GPU: instances weighted by compute slices (3/7, 2/7), DRAM by memory slices (4/8)
    assert ratios(second.gpu(0).gpm) == approx(
        (0.80 * 3 / 7 + 0.10 * 2 / 7, 0.455 * 3 / 7, 0.30 * 3 / 7, 0.30))
    assert ratios(second.gpu(1).gpm) == approx((0.95, 0.70, 0.88, 0.41))
    assert second.gpu(1).gpm is not None and second.gpu(1).gpm.window_seconds > 0
    # Ampere: no GPM values, no error (collect() asserts none), and after the one support query
    # per GPU no GPM call for them at all
    assert [second.gpu(i).gpm for i in (2, 3)] == [None, None]
    assert [m.gpm for m in second.gpu(2).mig_instances] == [None]
    assert gpm_calls(session)["nvmlGpmQueryDeviceSupport"] == 4
    before = gpm_calls(session)
    collect(session)
    # two calls per GPM-sampled GPU and GPU instance: 2 GPUs + 3 instances
    assert gpm_calls(session) - before == Counter(
        {"nvmlGpmSampleGet": 2, "nvmlGpmMigSampleGet": 3, "nvmlGpmMetricsGet": 5})


def test_each_collection_diffs_against_the_previous_sample(session: NvmlSession) -> None:
    sim = simulator(session)
    collect(session)
    assert ratios(collect(session).gpu(1).gpm) == pytest.approx((0.95, 0.70, 0.88, 0.41))
    gpu = sim.fleet.gpus[1]
    sim.fleet = sim.fleet.with_gpu(1, replace(gpu, activity=Activity(sm_util_percent=20)))
    # the window since the previous collection ran at 20 %; a diff against an older sample would mix in 95 %
    assert ratios(collect(session).gpu(1).gpm) == pytest.approx((0.20, 0.0, 0.0, 0.0))


def test_a_gpu_instance_recreated_under_the_same_id_in_another_shape_starts_a_new_window(
    session: NvmlSession,
) -> None:
    """3g.40gb at 0 and 4g.40gb at 0 are both GPU instance 1 on H100 (mig-facts.md IDs)."""
    sim = simulator(session)
    collect(session)
    assert by_instance(collect(session), 0)[1, 0] == pytest.approx((0.80, 0.455, 0.30, 0.60))
    gpu = sim.fleet.gpus[0]
    four_g = SimGpuInstance(1, 5, 0, (SimComputeInstance(0, 4),), Activity(sm_util_percent=25))
    sim.fleet = sim.fleet.with_gpu(0, gpu.with_instances((four_g, *gpu.instances[1:])))
    # no diff across the shapes: the simulator would refuse it, and collect() asserts no errors
    recreated = collect(session)
    assert by_instance(recreated, 0)[1, 0] is None
    assert by_instance(recreated, 0)[5, 0] == pytest.approx((0.10, 0.0, 0.0, 0.0))  # the others go on
    assert by_instance(collect(session), 0)[1, 0] == pytest.approx((0.25, 0.0, 0.0, 0.0))


def test_the_window_floor_repeats_the_last_window_and_the_ceiling_restarts_it(session: NvmlSession) -> None:
    collect(session)
    expected = ratios(collect(session).gpu(1).gpm)
    session.gpm_samples.floor_seconds = 3600.0
    before = gpm_calls(session)
    assert ratios(collect(session).gpu(1).gpm) == expected  # the kept window, no new sample
    assert gpm_calls(session) == before
    session.gpm_samples.floor_seconds, session.gpm_samples.ceiling_seconds = 0.0, 0.0
    before = gpm_calls(session)
    assert collect(session).gpu(1).gpm is None  # every kept sample is too old to diff
    assert gpm_calls(session)["nvmlGpmMetricsGet"] == before["nvmlGpmMetricsGet"]


def test_an_unsupported_gpm_query_is_no_gpm_and_no_error(tmp_path: Path, open_session: Opener) -> None:
    """A driver without GPM answers NOT_SUPPORTED (or lacks the symbol): the same as Ampere."""
    gpus = "\n  - model: H100-SXM5-80GB\n    gpm: {sm_util_percent: 50}\n"
    faults = "- {call: nvmlGpmQueryDeviceSupport, error: NOT_SUPPORTED}\n"
    session = open_session(fleet_file(tmp_path, gpus, faults))
    session.gpm_samples.floor_seconds = 0.0
    assert [collect(session).gpu(0).gpm for _ in range(2)] == [None, None]
    assert gpm_calls(session) == Counter({"nvmlGpmQueryDeviceSupport": 1})


def test_a_failed_sample_is_an_error_and_the_next_collections_recover(
    tmp_path: Path, open_session: Opener,
) -> None:
    gpus = "\n  - model: H100-SXM5-80GB\n    gpm: {sm_util_percent: 50}\n"
    faults = "- {call: nvmlGpmSampleGet, error: UNKNOWN, skip: 1, count: 1}\n"
    session = open_session(fleet_file(tmp_path, gpus, faults))
    session.gpm_samples.floor_seconds = 0.0
    collect(session)
    failed = read_snapshot(session)
    assert [e.call for e in failed.errors] == ["nvmlGpmSampleGet"] and failed.gpu(0).gpm is None
    assert ratios(collect(session).gpu(0).gpm) == pytest.approx((0.50, 0.0, 0.0, 0.0))


def test_nvml_reinitialised_drops_the_kept_samples() -> None:
    samples = GpmSamples()
    samples._supported["GPU-x"] = True
    samples.clear()
    assert samples._supported == {} and samples._kept == {}
