"""The series, from Snapshots built by hand, asserted through ``registry.get_sample_value``."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from mig_exporter.advice import advise
from mig_exporter.exporter.collector import (
    ExporterSettings,
    ExporterTotals,
    SnapshotCollector,
    process_series_dropped,
)
from mig_exporter.model import MIB, GpmMetrics, Gpu, GpuHealth, Snapshot

from .snapshots import INCIDENT_MIB, SPANNING_PIDS, incident, incident_gpu, partitioned_gpu

# Outside Kubernetes the workload labels are present and empty.
NO_POD = {"namespace": "", "pod": "", "container": ""}

SETTINGS = ExporterSettings(interval_seconds=5.0)


def registry_for(
    snapshot: Snapshot | None, totals: ExporterTotals | None = None, settings: ExporterSettings = SETTINGS,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: (snapshot, totals or ExporterTotals()), settings))
    return registry


def gpu_labels(gpu: Gpu) -> dict[str, str]:
    return {"gpu": str(gpu.index), "uuid": gpu.uuid}


def test_incident_shows_spanning_processes_and_unpartitioned_sharing() -> None:
    snapshot = incident()
    registry = registry_for(snapshot)
    assert registry.get_sample_value("nvml_up") == 1
    assert registry.get_sample_value("nvml_processes_spanning_gpus") == 2
    for gpu in snapshot.gpus:
        assert registry.get_sample_value("nvml_gpu_unpartitioned_sharing", gpu_labels(gpu)) == 1
        assert registry.get_sample_value("nvml_gpu_processes", gpu_labels(gpu)) == 2
        assert registry.get_sample_value("nvml_gpu_mig_mode_current", gpu_labels(gpu)) == 0
        assert registry.get_sample_value("nvml_gpu_mig_instances", gpu_labels(gpu)) == 0
        assert registry.get_sample_value("nvml_gpu_persistence_mode", gpu_labels(gpu)) == 0
        assert registry.get_sample_value("nvml_gpu_lost", gpu_labels(gpu)) == 0
    for pid in SPANNING_PIDS:
        labels = {"pid": str(pid), "process_name": "python", **NO_POD}
        assert registry.get_sample_value("nvml_process_gpus", labels) == 4


def test_incident_memory_per_process_is_the_incident_table() -> None:
    registry = registry_for(incident())
    for gpu_index, per_pid in INCIDENT_MIB.items():
        for pid, mib in zip(SPANNING_PIDS, per_pid, strict=True):
            labels = {"gpu": str(gpu_index), "uuid": f"GPU-incident-{gpu_index}", "gpu_instance_id": "",
                      "compute_instance_id": "", "pid": str(pid), "process_name": "python", **NO_POD}
            assert registry.get_sample_value("nvml_process_memory_bytes", labels) == mib * 1048576


def test_identity_is_on_info_series_only() -> None:
    snapshot = incident()
    registry = registry_for(snapshot)
    gpu = snapshot.gpus[2]
    info = {**gpu_labels(gpu), "name": "NVIDIA A100-SXM4-80GB", "pci_bus_id": "00000000:02:00.0",
            "pci_device_id": "0x20B2", "serial": ""}
    assert registry.get_sample_value("nvml_gpu_info", info) == 1
    assert registry.get_sample_value("nvml_gpu_memory_total_bytes", gpu_labels(gpu)) == 81920 * MIB
    assert registry.get_sample_value("nvml_gpu_memory_used_bytes", gpu_labels(gpu)) == 32759 * MIB
    assert registry.get_sample_value("nvml_driver_info", {
        "driver_version": "575.57.08", "cuda_driver_version": "12.9", "nvml_version": ""}) == 1


def test_telemetry_in_base_units() -> None:
    registry = registry_for(incident())
    labels = {"gpu": "0", "uuid": "GPU-incident-0"}
    assert registry.get_sample_value("nvml_gpu_utilization_ratio", labels) == 0.0
    assert registry.get_sample_value("nvml_gpu_temperature_celsius", labels) == 34.0
    assert registry.get_sample_value("nvml_gpu_power_usage_watts", labels) == 61.5
    assert registry.get_sample_value("nvml_gpu_power_limit_watts", labels) == 400.0
    assert registry.get_sample_value("nvml_gpu_clock_sm_hertz", labels) == 1.41e9
    assert registry.get_sample_value("nvml_gpu_ecc_errors_corrected_total", labels) == 0


def test_values_nvml_did_not_give_are_absent_not_zero() -> None:
    registry = registry_for(incident())
    labels = {"gpu": "0", "uuid": "GPU-incident-0"}
    # the incident snapshot has no memory utilization, memory clock or uncorrected ECC figure
    assert registry.get_sample_value("nvml_gpu_memory_utilization_ratio", labels) is None
    assert registry.get_sample_value("nvml_gpu_clock_memory_hertz", labels) is None
    assert registry.get_sample_value("nvml_gpu_ecc_errors_uncorrected_total", labels) is None


def test_the_advised_layout_series_are_the_advice_diagnose_prints() -> None:
    """issue 8, one advice: on the incident diagnose partitions GPU 0 as 3g.40gb,3g.40gb and frees
    GPUs 1-3 (seed/README.md); the exporter says the same, not a layout for every GPU."""
    snapshot = incident()
    registry = registry_for(snapshot)
    advice = advise(snapshot)
    assert advice is not None
    assert [(lay.gpu_index, lay.profiles) for lay in advice.layouts] == [(0, ("3g.40gb", "3g.40gb"))]
    assert advice.freed_gpus == (1, 2, 3)
    layouts = {(s.labels["gpu"], s.labels["layout"]): s.value
               for s in _samples(registry, "mig_exporter_advised_layout_info")}
    assert layouts == {("0", "3g.40gb,3g.40gb"): 1}
    freed = {s.labels["gpu"]: s.labels["uuid"]
             for s in _samples(registry, "mig_exporter_advised_freed_gpu_info")}
    assert freed == {str(i): f"GPU-incident-{i}" for i in (1, 2, 3)}


def test_no_advice_no_advised_series() -> None:
    registry = registry_for(Snapshot(taken_at=1.0, nvml_up=True, gpus=(partitioned_gpu(),)))
    assert _samples(registry, "mig_exporter_advised_layout_info") == []
    assert _samples(registry, "mig_exporter_advised_freed_gpu_info") == []


def _samples(registry: CollectorRegistry, name: str) -> list[Any]:
    return [s for family in registry.collect() for s in family.samples if s.name == name]


def test_partitioned_gpu_series() -> None:
    gpu = partitioned_gpu()
    registry = registry_for(Snapshot(taken_at=1.0, nvml_up=True, gpus=(gpu,)))
    assert registry.get_sample_value("nvml_gpu_mig_mode_current", gpu_labels(gpu)) == 1
    assert registry.get_sample_value("nvml_gpu_mig_mode_pending", gpu_labels(gpu)) == 1
    assert registry.get_sample_value("nvml_gpu_mig_instances", gpu_labels(gpu)) == 2
    assert registry.get_sample_value("nvml_gpu_unpartitioned_sharing", gpu_labels(gpu)) == 0
    assert registry.get_sample_value("nvml_gpu_processes", gpu_labels(gpu)) == 2
    assert registry.get_sample_value("nvml_gpu_instance_info", {
        **gpu_labels(gpu), "gpu_instance_id": "2", "profile": "3g.40gb", "placement_start": "4",
        "placement_size": "4"}) == 1
    mig = {**gpu_labels(gpu), "mig_uuid": "MIG-0-2", "gpu_instance_id": "2", "compute_instance_id": "0"}
    assert registry.get_sample_value("nvml_mig_instance_info", {**mig, "profile": "3g.40gb"}) == 1
    assert registry.get_sample_value("nvml_mig_instance_memory_total_bytes", mig) == 40192 * MIB
    assert registry.get_sample_value("nvml_mig_instance_memory_used_bytes", mig) == (107 + 12000) * MIB
    assert registry.get_sample_value("nvml_mig_instance_multiprocessors", mig) == 42
    assert registry.get_sample_value("nvml_process_memory_bytes", {
        **gpu_labels(gpu), "gpu_instance_id": "2", "compute_instance_id": "0", "pid": "5001",
        "process_name": "server-a", **NO_POD}) == 12000 * MIB
    assert registry.get_sample_value("nvml_processes_spanning_gpus") == 0
    assert registry.get_sample_value(
        "nvml_process_gpus", {"pid": "5001", "process_name": "server-a", **NO_POD}) == 1
    capacity = {**gpu_labels(gpu), "profile": "1g.10gb"}
    assert registry.get_sample_value("nvml_gpu_mig_profile_capacity", capacity) == 0


def test_a_gpu_instance_count_nvml_would_not_give_is_absent_not_zero() -> None:
    gpu = replace(partitioned_gpu(), gpu_instances=(), gpu_instances_complete=False)
    registry = registry_for(Snapshot(taken_at=1.0, nvml_up=True, gpus=(gpu,)))
    assert registry.get_sample_value("nvml_gpu_mig_instances", gpu_labels(gpu)) is None
    assert registry.get_sample_value("nvml_gpu_mig_mode_current", gpu_labels(gpu)) == 1


def test_mig_profile_capacity_per_profile_and_absent_where_not_read() -> None:
    fragmented = replace(partitioned_gpu(), mig_profile_capacity=(("1g.10gb", 5), ("3g.40gb", 0)))
    unread = replace(partitioned_gpu(1), mig_profile_capacity=None)
    registry = registry_for(Snapshot(taken_at=1.0, nvml_up=True, gpus=(fragmented, unread, incident_gpu(2))))
    samples = {(s.labels["gpu"], s.labels["profile"]): s.value for m in registry.collect()
               if m.name == "nvml_gpu_mig_profile_capacity" for s in m.samples}
    assert samples == {("0", "1g.10gb"): 5, ("0", "3g.40gb"): 0}


def test_a_lost_gpu_is_reported_and_the_others_still_exported() -> None:
    snapshot = incident()
    lost = Gpu(index=1, uuid="GPU-incident-1", lost=True)
    snapshot = replace(snapshot, gpus=(snapshot.gpus[0], lost, *snapshot.gpus[2:]))
    registry = registry_for(snapshot)
    assert registry.get_sample_value("nvml_gpu_lost", gpu_labels(lost)) == 1
    assert registry.get_sample_value("nvml_gpu_memory_used_bytes", gpu_labels(lost)) is None
    assert registry.get_sample_value("nvml_gpu_unpartitioned_sharing", gpu_labels(lost)) is None
    for gpu in (snapshot.gpus[0], *snapshot.gpus[2:]):
        assert registry.get_sample_value("nvml_gpu_lost", gpu_labels(gpu)) == 0
        assert registry.get_sample_value("nvml_gpu_memory_used_bytes", gpu_labels(gpu)) == 32759 * MIB
    # Seen on three GPUs, but the lost one was not read: 3 would be a lower bound, not the count.
    assert registry.get_sample_value(
        "nvml_process_gpus", {"pid": "78914", "process_name": "python", **NO_POD}) is None
    assert registry.get_sample_value("nvml_processes_spanning_gpus") is None


def test_counts_over_processes_not_all_read_are_absent_not_zero() -> None:
    # issue 11: a process list NVML refused (NO_PERMISSION) exported 0 processes, 0 sharing and
    # 0 spanning, which resolved the incident's alerts.
    snapshot = incident()
    unread = replace(snapshot.gpus[2], processes=(), processes_complete=False)
    snapshot = replace(snapshot, gpus=(*snapshot.gpus[:2], unread, snapshot.gpus[3]))
    registry = registry_for(snapshot)
    assert registry.get_sample_value("nvml_gpu_processes", gpu_labels(unread)) is None
    assert registry.get_sample_value("nvml_gpu_unpartitioned_sharing", gpu_labels(unread)) is None
    assert registry.get_sample_value("nvml_processes_spanning_gpus") is None
    assert registry.get_sample_value(
        "nvml_process_gpus", {"pid": "78914", "process_name": "python", **NO_POD}) is None
    for gpu in (*snapshot.gpus[:2], snapshot.gpus[3]):  # what was read is still there
        assert registry.get_sample_value("nvml_gpu_processes", gpu_labels(gpu)) == 2
        assert registry.get_sample_value("nvml_gpu_unpartitioned_sharing", gpu_labels(gpu)) == 1
    memory = {"gpu": "0", "uuid": "GPU-incident-0", "gpu_instance_id": "", "compute_instance_id": "",
              "pid": "78914", "process_name": "python", **NO_POD}
    assert registry.get_sample_value("nvml_process_memory_bytes", memory) == INCIDENT_MIB[0][0] * MIB
    assert process_series_dropped(snapshot, 1) == 6 - 1  # no per-pid series to drop


def test_process_series_are_capped_and_the_cap_is_counted() -> None:
    snapshot = incident()  # 8 per-device process series, 2 per-pid series
    assert process_series_dropped(snapshot, 3) == (8 - 3) + 0
    assert process_series_dropped(snapshot, 1) == (8 - 1) + (2 - 1)
    assert process_series_dropped(snapshot, 2000) == 0
    registry = registry_for(snapshot, ExporterTotals(process_series_dropped=5),
                            ExporterSettings(interval_seconds=5.0, max_process_series=3))
    samples = [s for m in registry.collect() if m.name == "nvml_process_memory_bytes" for s in m.samples]
    assert len(samples) == 3
    assert registry.get_sample_value("mig_exporter_process_series_dropped_total") == 5


def test_exporter_series() -> None:
    totals = ExporterTotals(errors_by_call={"nvmlDeviceGetPowerUsage": 3}, timeouts=2)
    registry = registry_for(incident(), totals, ExporterSettings(interval_seconds=2.5))
    assert registry.get_sample_value("mig_exporter_collect_interval_seconds") == 2.5
    assert registry.get_sample_value("mig_exporter_collection_errors_total",
                                     {"call": "nvmlDeviceGetPowerUsage"}) == 3
    assert registry.get_sample_value("mig_exporter_collection_timeouts_total") == 2
    assert registry.get_sample_value("mig_exporter_last_collection_timestamp_seconds") == 1_700_000_000.0
    assert registry.get_sample_value("mig_exporter_collection_duration_seconds") == 0.004
    assert registry.get_sample_value("mig_exporter_collection_nvml_calls") == 57
    build = next(m for m in registry.collect() if m.name == "mig_exporter_build_info")
    assert build.samples[0].value == 1 and set(build.samples[0].labels) == {
        "version", "nvidia_ml_py_version", "python_version"}


def test_before_the_first_collection_only_the_exporter_speaks() -> None:
    registry = registry_for(None)
    names = {m.name for m in registry.collect() if m.samples}
    assert names == {"mig_exporter_build_info", "mig_exporter_collect_interval_seconds",
                     "mig_exporter_collection_timeouts", "mig_exporter_process_series_dropped",
                     "mig_exporter_process_name_lookups_skipped"}


def test_nvml_down_exports_nvml_up_zero_and_nothing_it_could_not_read() -> None:
    """While NVML is unreachable no series claims a value: not even ``nvml_processes_spanning_gpus 0``,
    which a dashboard would show as healthy during the outage."""
    registry = registry_for(Snapshot(taken_at=1.0, nvml_up=False))
    assert registry.get_sample_value("nvml_up") == 0
    nvml_samples = [s.name for m in registry.collect() if m.name.startswith("nvml_") for s in m.samples]
    assert nvml_samples == ["nvml_up"]
    assert registry.get_sample_value("mig_exporter_collect_interval_seconds") is not None


def test_promtool_finds_nothing_to_say() -> None:
    gpus = (*incident().gpus, partitioned_gpu(4), Gpu(index=5, uuid="GPU-5", lost=True))
    exposition = generate_latest(registry_for(replace(incident(), gpus=gpus),
                                              ExporterTotals(errors_by_call={"nvmlInit": 1})))
    result = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True,
                            check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")


def _with_process_utilization(snapshot: Snapshot) -> Snapshot:
    """The incident with GPU 0's first process sampled at 87 % SM / 41 % memory, the rest not."""
    gpu = snapshot.gpus[0]
    sampled = replace(gpu.processes[0], sm_utilization_ratio=0.87, memory_utilization_ratio=0.41)
    return replace(snapshot, gpus=(replace(gpu, processes=(sampled, *gpu.processes[1:])), *snapshot.gpus[1:]))


def test_process_utilization_only_where_nvml_sampled_it() -> None:
    registry = registry_for(_with_process_utilization(incident()))
    labels = {"gpu": "0", "uuid": "GPU-incident-0", "pid": "78914", "process_name": "python"}
    assert registry.get_sample_value("nvml_process_sm_utilization_ratio", labels) == 0.87
    assert registry.get_sample_value("nvml_process_memory_utilization_ratio", labels) == 0.41
    exposition = generate_latest(registry).decode()
    # one series each: the unsampled processes have none (absent, never a 0)
    assert exposition.count("nvml_process_sm_utilization_ratio{") == 1
    assert exposition.count("nvml_process_memory_utilization_ratio{") == 1


def test_process_utilization_counts_against_the_series_cap() -> None:
    snapshot = _with_process_utilization(incident())
    # 8 memory series, 2 per-pid series, 1 + 1 utilization series; a cap of 0 drops them all
    assert process_series_dropped(snapshot, 0) == 8 + 2 + 1 + 1
    registry = registry_for(snapshot, settings=ExporterSettings(interval_seconds=5.0, max_process_series=0))
    assert "nvml_process_sm_utilization_ratio{" not in generate_latest(registry).decode()


def test_xid_counters_only_for_gpus_whose_events_nvml_delivers() -> None:
    snapshot = incident()
    gpus = (replace(snapshot.gpus[0], xid_events_supported=True, xid_errors=((48, 2), (79, 1))),
            replace(snapshot.gpus[1], xid_events_supported=True, xid_errors=()),
            replace(snapshot.gpus[2], xid_events_supported=False), snapshot.gpus[3])
    registry = registry_for(replace(snapshot, gpus=gpus))
    first = gpu_labels(gpus[0])
    assert registry.get_sample_value("nvml_gpu_xid_errors_total", {**first, "xid": "48"}) == 2
    assert registry.get_sample_value("nvml_gpu_xid_errors_total", {**first, "xid": "79"}) == 1
    assert [registry.get_sample_value("nvml_gpu_xid_events_supported", gpu_labels(g)) for g in gpus] == [
        1, 1, 0, None]
    xid_series = [s for m in registry.collect() if m.name == "nvml_gpu_xid_errors" for s in m.samples
                  if s.name.endswith("_total")]
    assert {s.labels["gpu"] for s in xid_series} == {"0"}  # none on the unsupported or unknown GPU


def test_gpm_series_per_gpu_and_per_mig_device_only_where_measured() -> None:
    gpu = partitioned_gpu(0)
    measured = GpmMetrics(window_seconds=5.0, sm_utilization_ratio=0.8, sm_occupancy_ratio=0.4,
                          tensor_utilization_ratio=0.3, dram_bandwidth_utilization_ratio=None)
    gpu = replace(gpu, gpm=measured, mig_instances=(replace(gpu.mig_instances[0], gpm=measured),
                                                    gpu.mig_instances[1]))
    registry = registry_for(Snapshot(taken_at=1.0, nvml_up=True, gpus=(gpu, incident_gpu(1))))
    mig = {"gpu": "0", "uuid": gpu.uuid, "mig_uuid": "MIG-0-2", "gpu_instance_id": "2",
           "compute_instance_id": "0"}
    for name, value in (("sm_utilization_ratio", 0.8), ("sm_occupancy_ratio", 0.4),
                        ("tensor_utilization_ratio", 0.3)):
        assert registry.get_sample_value(f"nvml_gpu_{name}", gpu_labels(gpu)) == value
        assert registry.get_sample_value(f"nvml_mig_instance_{name}", mig) == value
        assert registry.get_sample_value(f"nvml_mig_instance_{name}", {**mig, "mig_uuid": "MIG-0-1",
                                                                       "gpu_instance_id": "1"}) is None
        assert registry.get_sample_value(f"nvml_gpu_{name}", gpu_labels(incident_gpu(1))) is None
    # a metric NVML did not give is absent, not 0
    assert registry.get_sample_value("nvml_gpu_dram_bandwidth_utilization_ratio", gpu_labels(gpu)) is None


def test_health_series_in_base_units_and_absent_where_nvml_did_not_give_them() -> None:
    health = GpuHealth(energy_joules_total=5000.5, pcie_replays_total=3,
                       clock_event_reasons=(("hw_thermal_slowdown", True), ("sw_power_cap", False)),
                       remapped_rows_correctable_total=2, remapped_rows_uncorrectable_total=1,
                       row_remap_pending=True, row_remap_failure=False, nvlink_errors_total=(("replay", 4),))
    gpus = (replace(incident_gpu(0), health=health), incident_gpu(1))
    registry = registry_for(replace(incident(), gpus=gpus))
    labels = gpu_labels(gpus[0])
    assert registry.get_sample_value("nvml_gpu_energy_joules_total", labels) == 5000.5
    assert registry.get_sample_value("nvml_gpu_pcie_replays_total", labels) == 3
    thermal = {**labels, "reason": "hw_thermal_slowdown"}
    assert registry.get_sample_value("nvml_gpu_clock_event_reason", thermal) == 1
    assert registry.get_sample_value("nvml_gpu_clock_event_reason", {**labels, "reason": "sw_power_cap"}) == 0
    uncorrectable = {**labels, "cause": "uncorrectable"}
    assert registry.get_sample_value("nvml_gpu_remapped_rows_total", uncorrectable) == 1
    assert registry.get_sample_value("nvml_gpu_row_remap_pending", labels) == 1
    assert registry.get_sample_value("nvml_gpu_row_remap_failure", labels) == 0
    assert registry.get_sample_value("nvml_gpu_nvlink_errors_total", {**labels, "type": "replay"}) == 4
    for name in ("nvml_gpu_retired_pages_pending", "nvml_gpu_energy_joules_total"):  # not given
        assert registry.get_sample_value(name, gpu_labels(gpus[1]) if "energy" in name else labels) is None
    single_bit = {**labels, "cause": "single_bit_ecc"}
    assert registry.get_sample_value("nvml_gpu_retired_pages_total", single_bit) is None


def test_a_stale_gpu_keeps_its_last_series_and_says_so() -> None:
    """Issue 12: a GPU whose read did not finish in time is served from its last read."""
    snapshot = incident()
    stale = replace(snapshot.gpus[1], stale=True)
    registry = registry_for(replace(snapshot, gpus=(snapshot.gpus[0], stale, *snapshot.gpus[2:])))
    assert registry.get_sample_value("mig_exporter_gpu_stale", gpu_labels(stale)) == 1
    assert registry.get_sample_value("nvml_gpu_memory_used_bytes", gpu_labels(stale)) == 32759 * MIB
    assert registry.get_sample_value("mig_exporter_gpu_stale", gpu_labels(snapshot.gpus[0])) == 0


def test_scrapes_of_one_snapshot_share_its_advice(monkeypatch: Any) -> None:
    """The advice is computed once per Snapshot, not once per scrape; a new Snapshot gets its own."""
    from mig_exporter.exporter import collector

    advised: list[Snapshot] = []

    def counting(snapshot: Snapshot) -> Any:
        advised.append(snapshot)
        return advise(snapshot)

    monkeypatch.setattr(collector, "advise", counting)
    current = [incident()]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: (current[0], ExporterTotals()), SETTINGS))
    labels = {"gpu": "0", "uuid": "GPU-incident-0", "layout": "3g.40gb,3g.40gb"}
    for _ in range(3):
        assert registry.get_sample_value("mig_exporter_advised_layout_info", labels) == 1
    assert advised == [current[0]]
    current[0] = incident()
    assert registry.get_sample_value("mig_exporter_advised_layout_info", labels) == 1
    assert len(advised) == 2 and advised[1] is current[0]
