"""What the NVML fault matrix found, one case each, so each stays fixed by name: values made up
from a failed (or NOT_SUPPORTED) read, and a plan that would destroy instances whose processes
NVML never listed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from exporter.snapshots import incident

from mig_exporter.advice import advise

from .matrix import PARTITIONED_GPU, Fault, write_fleet
from .paths import DIAGNOSE, REMEDIATE_PLAN, Samples, run_command, run_serve


def series(scrape: Samples, name: str) -> dict[str, float]:
    """GPU label (or "" without one) → value of ``name``."""
    return {dict(labels).get("gpu", ""): value for (n, labels), value in scrape.items() if n == name}


def labels(scrape: Samples, name: str, label: str) -> list[str]:
    return sorted(dict(key_labels)[label] for (n, key_labels) in scrape if n == name)


def test_gpus_not_counted_are_not_zero_processes_spanning(tmp_path: Path) -> None:
    """nvmlDeviceGetCount_v2 UNKNOWN: no GPU was listed, so no process count over them is known
    (it was exported as 0 processes spanning GPUs)."""
    fleet = write_fleet(tmp_path, Fault("nvmlDeviceGetCount_v2", "UNKNOWN", "always"))
    scrape = run_serve(fleet, 1).scrapes[0]
    assert series(scrape, "nvml_up") == {"": 1}
    assert series(scrape, "nvml_processes_spanning_gpus") == {}
    assert series(scrape, "mig_exporter_collection_errors_total") == {"": 1}


def test_a_mig_mode_not_read_is_not_sharing_without_mig(tmp_path: Path) -> None:
    """nvmlDeviceGetMigMode NO_PERMISSION on the partitioned GPU: MIG may be on, so its two
    processes are no "shared without MIG" (it paged as such); the others still are."""
    fleet = write_fleet(tmp_path, Fault("nvmlDeviceGetMigMode", "NO_PERMISSION", f"gpu {PARTITIONED_GPU}"))
    scrape = run_serve(fleet, 1).scrapes[0]
    assert series(scrape, "nvml_gpu_unpartitioned_sharing") == {"0": 1, "1": 1}
    report = json.loads(run_command(fleet, DIAGNOSE).out)
    assert {gpu for f in report["findings"] if f["kind"] == "unpartitioned_sharing"
            for gpu in f["gpu_indices"]} == {0, 1}
    assert not report["verified"]


def test_a_profile_not_read_is_no_profile(tmp_path: Path) -> None:
    """nvmlDeviceGetGpuInstanceProfileInfoV NO_PERMISSION: the MIG devices' profiles are unknown
    (the compute instance was labelled "1c.", diagnose printed " (GI 2, CI 0)")."""
    fleet = write_fleet(tmp_path, Fault("nvmlDeviceGetGpuInstanceProfileInfoV", "NO_PERMISSION", "always"))
    assert labels(run_serve(fleet, 1).scrapes[0], "nvml_mig_instance_info", "profile") == ["", ""]
    report = json.loads(run_command(fleet, DIAGNOSE).out)
    assert sorted(p["mig_device"] for p in report["gpus"][PARTITIONED_GPU]["processes"]) == [
        "GI 2, CI 0", "GI 3, CI 0"]


def test_attributes_not_read_are_no_profile(tmp_path: Path) -> None:
    """nvmlDeviceGetAttributes_v2 UNKNOWN: whether a MIG device is its whole GPU instance is
    unknown (the 1c.2g.20gb device was labelled 2g.20gb)."""
    fleet = write_fleet(tmp_path, Fault("nvmlDeviceGetAttributes_v2", "UNKNOWN", "always"))
    assert labels(run_serve(fleet, 1).scrapes[0], "nvml_mig_instance_info", "profile") == ["", ""]


def test_mig_on_without_profiles_has_no_instance_count(tmp_path: Path) -> None:
    """nvmlDeviceGetGpuInstanceProfileInfoV NOT_SUPPORTED on a GPU with MIG on: no instance can be
    listed without a profile (it exported 0 instances, and diagnose found "MIG without instances")."""
    fleet = write_fleet(tmp_path, Fault("nvmlDeviceGetGpuInstanceProfileInfoV", "NOT_SUPPORTED", "always"))
    assert series(run_serve(fleet, 1).scrapes[0], "nvml_gpu_mig_instances") == {"0": 0, "1": 0}  # MIG off
    report = json.loads(run_command(fleet, DIAGNOSE).out)
    assert "mig_without_instances" not in {f["kind"] for f in report["findings"]}
    assert report["gpus"][PARTITIONED_GPU]["gpu_instances"] is None and not report["verified"]


def test_a_lost_gpu_has_no_instance_count(tmp_path: Path) -> None:
    """GPU_IS_LOST: diagnose said the lost GPU has 0 GPU instances; it has null."""
    lost = Fault("nvmlDeviceGetMemoryInfo_v2", "GPU_IS_LOST", f"gpu {PARTITIONED_GPU}")
    fleet = write_fleet(tmp_path, lost)
    gpu = json.loads(run_command(fleet, DIAGNOSE).out)["gpus"][PARTITIONED_GPU]
    assert (gpu["lost"], gpu["gpu_instances"]) == (True, None)


def test_processes_nvml_does_not_list_block_the_plan(tmp_path: Path) -> None:
    """nvmlDeviceGetComputeRunningProcesses_v3 NOT_SUPPORTED: NVML listed no process, which is not
    "no process": diagnose said healthy (exit 0), and remediate planned to destroy the GPU instance
    that runs PID 5002, with no blocker."""
    fleet = write_fleet(tmp_path, Fault("nvmlDeviceGetComputeRunningProcesses_v3", "NOT_SUPPORTED", "always"))
    diagnose = run_command(fleet, DIAGNOSE)
    assert (diagnose.status, json.loads(diagnose.out)["verified"]) == (1, False)
    plan = json.loads(run_command(fleet, REMEDIATE_PLAN).out)["plan"]
    assert plan["steps"] == []
    assert [(b["gpu"], "processes not listed by NVML" in b["reason"]) for b in plan["blockers"]] == [
        (0, True), (PARTITIONED_GPU, True)]


def test_no_advice_while_a_gpus_processes_are_unread() -> None:
    """A GPU hung in NVML (stale, never read) or whose listing failed: the workloads' memory on it
    is unknown, so no instance can be sized (the advice moved to GPU 1 while GPU 0 hung)."""
    snapshot = incident()
    assert advise(snapshot) is not None
    unread = replace(snapshot.gpus[0], processes=(), processes_complete=False, stale=True)
    assert advise(replace(snapshot, gpus=(unread, *snapshot.gpus[1:]))) is None
    lost = replace(snapshot.gpus[3], processes=(), processes_complete=False, lost=True)
    assert advise(replace(snapshot, gpus=(*snapshot.gpus[:3], lost))) is not None  # they died with it


def test_a_mig_device_slot_nvml_does_not_support_blocks_the_plan(tmp_path: Path) -> None:
    """nvmlDeviceGetMigDeviceHandleByIndex NOT_SUPPORTED on the partitioned GPU was taken for empty
    slots (NOT_FOUND): no MIG device, no process, and a plan destroying the instance of PID 5002."""
    unsupported = Fault("nvmlDeviceGetMigDeviceHandleByIndex", "NOT_SUPPORTED", f"gpu {PARTITIONED_GPU}")
    plan = json.loads(run_command(write_fleet(tmp_path, unsupported), REMEDIATE_PLAN).out)["plan"]
    assert {b["gpu"] for b in plan["blockers"]} == {0, PARTITIONED_GPU}
    assert not [s for s in plan["steps"] if s["gpu_index"] == PARTITIONED_GPU]


@pytest.mark.parametrize(("call", "sharing"), [
    ("nvmlDeviceGetMigMode", {"1": 1, "2": 0}),
    ("nvmlDeviceGetGpuInstanceProfileInfoV", {"0": 1, "1": 1, "2": 0}),
    ("nvmlDeviceGetGpuInstancePossiblePlacements_v2", {"0": 1, "1": 1, "2": 0}),
])
def test_no_advice_while_a_gpus_mig_mode_or_profiles_are_unread(
    tmp_path: Path, call: str, sharing: dict[str, float],
) -> None:
    """A failed read of GPU 0's MIG mode (it may be shared without MIG too) or of its profiles (it
    may be the GPU to partition): the advice, which freed GPU 0 and partitioned GPU 1, is absent."""
    scrape = run_serve(write_fleet(tmp_path, Fault(call, "TIMEOUT", "gpu 0")), 1).scrapes[0]
    assert series(scrape, "mig_exporter_advised_layout_info") == {}
    assert series(scrape, "mig_exporter_advised_freed_gpu_info") == {}
    assert series(scrape, "nvml_gpu_unpartitioned_sharing") == sharing


def test_a_failed_serial_read_keeps_the_identity_read_beside_it(tmp_path: Path) -> None:
    """nvmlDeviceGetSerial NO_PERMISSION: the UUID, name and PCI bus read beside it are kept for
    the collection (diagnose printed every GPU's UUID as ""), and the serial is asked again at the
    next collection, as an identity not read in full is."""
    clean_uuids = [g["uuid"] for g in json.loads(run_command(write_fleet(tmp_path), DIAGNOSE).out)["gpus"]]
    fleet = write_fleet(tmp_path, Fault("nvmlDeviceGetSerial", "NO_PERMISSION", "always"))
    gpus = json.loads(run_command(fleet, DIAGNOSE).out)["gpus"]
    assert [g["uuid"] for g in gpus] == clean_uuids and all(u.startswith("GPU-") for u in clean_uuids)
    assert all(g["name"] == "NVIDIA A100-SXM4-80GB" for g in gpus)
    run = run_serve(fleet, 2)
    assert labels(run.scrapes[0], "nvml_gpu_info", "uuid") == sorted(clean_uuids)
    assert run.calls["nvmlDeviceGetSerial"] == 3 * 2  # every GPU, every collection until it reads
