"""Health telemetry through the real pynvml on the simulated health calls (sim/health_calls.py):
values are the fleet file's, a value the GPU lacks is absent (retired pages on A100 and later,
NVLink on a board without it), energy only grows, and the slow counters are read once per slow
interval within the issue 12 budget (health adds at most two calls per GPU and collection)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from mig_exporter.nvml.read import read_snapshot
from mig_exporter.nvml.session import NvmlSession
from mig_exporter.sim.state import RowRemapping

from .conftest import Opener, collect, simulator
from .test_read import fleet_file

GPUS = """
  - model: H100-SXM5-80GB
    power_watts: 300
    ecc_corrected: 12
    health:
      energy_joules: 5000
      pcie_replays: 3
      clock_event_reasons: [sw_power_cap, hw_thermal_slowdown]
      remapped_rows: {correctable: 2, uncorrectable: 1, pending: true}
      nvlink_errors: {crc_flit: 7, replay: 4}
  - model: A100-SXM4-80GB
    mig: enabled
    instances: [{profile: 7g.80gb}]
    health:
      retired_pages: {double_bit_ecc: 2, pending: true}
"""
HEALTH_CALLS = ("nvmlDeviceGetFieldValues", "nvmlDeviceGetCurrentClocksEventReasons",
                "nvmlDeviceGetTotalEccErrors")


def health_calls(session: NvmlSession) -> Counter[str]:
    counts = simulator(session).call_counts
    return Counter({name: counts[name] for name in HEALTH_CALLS})


@pytest.fixture
def session(tmp_path: Path, open_session: Opener) -> NvmlSession:
    return open_session(fleet_file(tmp_path, GPUS))


def test_values_are_the_fleet_files_and_what_a_gpu_lacks_is_absent(session: NvmlSession) -> None:
    h100, a100 = collect(session).gpus
    health = h100.health
    assert dict(health.clock_event_reasons or ()) == {
        "gpu_idle": False, "applications_clocks_setting": False, "sw_power_cap": True, "hw_slowdown": False,
        "sync_boost": False, "sw_thermal_slowdown": False, "hw_thermal_slowdown": True,
        "hw_power_brake_slowdown": False, "display_clock_setting": False}
    assert health.energy_joules_total is not None and health.energy_joules_total >= 5000
    assert (health.pcie_replays_total, health.remapped_rows_correctable_total,
            health.remapped_rows_uncorrectable_total, health.row_remap_pending, health.row_remap_failure) == (
        3, 2, 1, True, False)
    assert health.nvlink_errors_total == (("crc_flit", 7), ("crc_data", 0), ("replay", 4), ("recovery", 0))
    # A100 and later remap rows instead of retiring pages: absent, not 0
    assert (health.retired_pages_single_bit_ecc_total, health.retired_pages_pending) == (None, None)
    assert (h100.ecc_errors_corrected_total, health.ecc_errors_corrected_total) == (12, 12)
    # the MIG GPU's board values come from its parent handle; no NVLink in its fleet entry
    assert (a100.health.retired_pages_single_bit_ecc_total, a100.health.retired_pages_double_bit_ecc_total,
            a100.health.retired_pages_pending) == (0, 2, True)
    assert a100.health.nvlink_errors_total == () and a100.health.remapped_rows_correctable_total == 0


def test_energy_is_a_counter_that_never_goes_back(session: NvmlSession) -> None:
    sim = simulator(session)
    first = collect(session).gpus[0].health.energy_joules_total
    gpu = sim.fleet.gpus[0]
    sim.fleet = sim.fleet.with_gpu(0, replace(gpu, telemetry=replace(gpu.telemetry, power_watts=50.0)))
    second = collect(session).gpus[0].health.energy_joules_total
    assert first is not None and second is not None and second >= first


def test_slow_counters_are_read_once_per_slow_interval(session: NvmlSession) -> None:
    sim = simulator(session)
    collect(session)
    assert health_calls(session) == Counter({"nvmlDeviceGetFieldValues": 2, "nvmlDeviceGetTotalEccErrors": 4,
                                             "nvmlDeviceGetCurrentClocksEventReasons": 2})
    gpu = sim.fleet.gpus[0]
    sim.fleet = sim.fleet.with_gpu(0, replace(gpu, health=replace(
        gpu.health, pcie_replays=9, remapped_rows=RowRemapping(correctable=3, failure=True))))
    before = health_calls(session)
    within = collect(session).gpus[0].health
    # two calls per GPU: the fast fields and the clock event reasons; no ECC
    assert health_calls(session) - before == Counter({"nvmlDeviceGetFieldValues": 2,
                                                      "nvmlDeviceGetCurrentClocksEventReasons": 2})
    assert (within.pcie_replays_total, within.remapped_rows_correctable_total, within.row_remap_failure) == (
        9, 2, False)  # the fast value is new, the slow ones are the kept ones
    session.health.slow_seconds = 0.0
    due = collect(session).gpus[0].health
    assert (due.remapped_rows_correctable_total, due.row_remap_failure) == (3, True)


def test_a_failed_health_call_is_an_error_and_leaves_its_values_absent(
    tmp_path: Path, open_session: Opener,
) -> None:
    faults = "- {call: nvmlDeviceGetCurrentClocksEventReasons, gpu: 0, error: UNKNOWN, count: 1}\n"
    session = open_session(fleet_file(tmp_path, GPUS, faults))
    snapshot = read_snapshot(session)
    assert [(e.call, e.gpu_index) for e in snapshot.errors] == [("nvmlDeviceGetCurrentClocksEventReasons", 0)]
    assert snapshot.gpus[0].health.clock_event_reasons is None
    assert snapshot.gpus[0].health.pcie_replays_total == 3  # the rest of the GPU's health is there
