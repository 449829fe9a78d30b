"""Fleet files as the simulator's storage: the built-in fleets, canonical dump and load, atomic
write-back after mutations, byte-identical restore, and edits picked up from disk."""

from __future__ import annotations

import ctypes
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pynvml
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mig_exporter.sim import (
    SimulatedNvml,
    builtin_names,
    builtin_text,
    dump_fleet,
    install,
    load_fleet,
    parse_fleet,
    uninstall,
)
from mig_exporter.sim import simulator as simulator_module
from mig_exporter.sim.state import MigMode
from sim.conftest import StartNvml
from sim.fleets import fleet, gpu, one_gpu

MIB = 1024 * 1024
SEED_TABLE = {0: (3752, 3780), 1: (5082, 5082), 2: (4992, 5066), 3: (4234, 4236)}


def test_seed_incident_is_the_incident(start_nvml: StartNvml) -> None:
    """seed/README.md: "four NVIDIA A100-SXM4-80GB GPUs (driver 575.57.08, CUDA 12.9)", "the same two
    PIDs on every GPU" with the MiB of its table; "GPU 0 showed 32759 MiB / 81920 MiB used, 0%
    utilization, persistence mode Off, `MIG M.` Disabled"."""
    simulator = start_nvml("seed-incident")
    assert simulator.read_only and simulator.path is None
    assert (pynvml.nvmlSystemGetDriverVersion(), pynvml.nvmlSystemGetCudaDriverVersion()) == (
        "575.57.08",
        12090,
    )
    assert pynvml.nvmlDeviceGetCount() == 4
    for index, (first, second) in SEED_TABLE.items():
        device = pynvml.nvmlDeviceGetHandleByIndex(index)
        assert pynvml.nvmlDeviceGetName(device) == "NVIDIA A100-SXM4-80GB"
        assert pynvml.nvmlDeviceGetMigMode(device) == [0, 0]
        assert pynvml.nvmlDeviceGetPersistenceMode(device) == 0
        assert pynvml.nvmlDeviceGetUtilizationRates(device).gpu == 0
        processes = pynvml.nvmlDeviceGetComputeRunningProcesses(device)
        assert [(p.pid, p.usedGpuMemory) for p in processes] == [(78914, first * MIB), (81007, second * MIB)]
    memory = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
    assert (memory.used, memory.total) == (32759 * MIB, 81920 * MIB)
    assert {pynvml.nvmlSystemGetProcessName(pid) for pid in (78914, 81007)} == {"python"}


@pytest.mark.parametrize("name", builtin_names())
def test_every_built_in_fleet_round_trips(name: str) -> None:
    """The brief: "`dump_fleet` writes canonical YAML that `load_fleet` reads back to the same
    state"; dumping the result again gives the same text."""
    loaded = load_fleet(name)
    dumped = dump_fleet(loaded)
    assert parse_fleet(dumped, "dumped") == loaded
    assert dump_fleet(parse_fleet(dumped, "dumped")) == dumped


def test_the_built_in_fleets_the_design_asks_for() -> None:
    """DESIGN.md / the issue: `seed-incident`, an 8 × H100 host with mixed MIG layouts and processes,
    a host with a MIG-pending GPU and a MIG-enabled GPU with no instances, a healthy partitioned
    fleet, and large fleets for benchmarks (8 GPUs × 7 MIG instances × 4 processes; ~1,000 series)."""
    mixed = load_fleet("h100-mixed")
    assert [g.model_key for g in mixed.gpus] == ["H100-SXM5-80GB"] * 8
    assert {g.mig for g in mixed.gpus} == {MigMode.ENABLED, MigMode.DISABLED}
    assert all(g.persistence for g in mixed.gpus)
    pending = load_fleet("mig-pending")
    assert [g.mig for g in pending.gpus] == [MigMode.PENDING_ENABLE, MigMode.ENABLED, MigMode.ENABLED]
    assert [len(g.instances) for g in pending.gpus] == [0, 0, 2]
    # "pending modes", plural: the way back too, a disable waiting on a busy instance
    disabling = load_fleet("mig-pending-disable")
    assert [g.mig for g in disabling.gpus] == [MigMode.PENDING_DISABLE, MigMode.DISABLED]
    assert [len(gi.processes) for gi in disabling.gpus[0].instances] == [1]
    healthy = load_fleet("healthy-mig")
    for g in healthy.gpus:
        assert g.persistence and g.mig is MigMode.ENABLED
        assert all(len(gi.processes) == 1 for gi in g.instances)
    large = load_fleet("large")
    assert [len(g.instances) for g in large.gpus] == [7] * 8
    assert {len(gi.processes) for g in large.gpus for gi in g.instances} == {4}
    assert sum(len(g.all_processes) for g in load_fleet("large-1000").gpus) == 1000


def test_built_in_fleets_are_never_written(start_nvml: StartNvml) -> None:
    """The brief: "built-in fleets are never written … mutations on a built-in fleet work in memory
    only; `read_only` tells remediate to refuse"."""
    before = builtin_text("mig-pending")
    simulator = start_nvml("mig-pending")
    pynvml.nvmlDeviceCreateGpuInstance(pynvml.nvmlDeviceGetHandleByIndex(1), 0)
    assert len(simulator.fleet.gpus[1].instances) == 1
    assert builtin_text("mig-pending") == before
    assert load_fleet("mig-pending").gpus[1].instances == ()


def create(device: object, profile_id: int) -> None:
    pynvml.nvmlGpuInstanceCreateComputeInstance(
        pynvml.nvmlDeviceCreateGpuInstance(device, profile_id), pynvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE
    )


def test_mutations_are_written_back_atomically(
    start_nvml: StartNvml, fleet_file: Callable[..., Path]
) -> None:
    """The brief: "A fleet-file-backed simulator writes the state back to the file atomically after
    every successful mutating call" (temp file + os.replace: no temporary file is left, the file
    keeps its permissions)."""
    path = fleet_file(one_gpu())
    path.chmod(0o640)
    simulator = start_nvml(str(path))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    create(device, 9)
    assert load_fleet(str(path)) == simulator.fleet
    assert len(simulator.fleet.gpus[0].instances) == 1
    pynvml.nvmlDeviceSetPersistenceMode(device, pynvml.NVML_FEATURE_ENABLED)
    assert load_fleet(str(path)).gpus[0].persistence
    assert sorted(os.listdir(path.parent)) == ["fleet.yaml"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_fleet_file_behind_a_symbolic_link_is_written_through_it(
    start_nvml: StartNvml, fleet_file: Callable[..., Path]
) -> None:
    """Atomic write-back replaces the file the link points to, not the link: a fleet kept in a
    shared folder and linked into place stays one file."""
    real = fleet_file(one_gpu(), name="real.yaml")
    link = real.with_name("lab.yaml")
    link.symlink_to(real)
    simulator = start_nvml(str(link))
    pynvml.nvmlDeviceCreateGpuInstance(pynvml.nvmlDeviceGetHandleByIndex(0), 9)
    assert link.is_symlink()
    assert load_fleet(str(real)) == simulator.fleet


def test_undoing_a_run_restores_the_file_byte_for_byte(
    start_nvml: StartNvml, fleet_file: Callable[..., Path]
) -> None:
    """The brief: "restores the file's original bytes when the state equals the state as loaded, so
    a rolled-back run leaves the file byte-identical" (comments and layout included)."""
    original = "# my lab host\n" + one_gpu(extra="    persistence: true   # keep it on\n")
    path = fleet_file(original)
    start_nvml(str(path))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    gpu_instance = pynvml.nvmlDeviceCreateGpuInstance(device, 9)
    compute_instance = pynvml.nvmlGpuInstanceCreateComputeInstance(gpu_instance, 2)
    assert path.read_text() != original
    pynvml.nvmlComputeInstanceDestroy(compute_instance)
    pynvml.nvmlGpuInstanceDestroy(gpu_instance)
    assert path.read_text() == original


def test_a_state_that_cannot_be_written_back_is_not_taken(
    start_nvml: StartNvml, fleet_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The brief: the state is written back "after every successful mutating call"; when the file
    cannot be written, the call fails (NO_PERMISSION, as NVML answers a caller not allowed to
    change the GPU) and nothing changes, so the file and NVML never disagree."""
    path = fleet_file(one_gpu(mig="pending-enable"))
    before = path.read_bytes()
    simulator = start_nvml(str(path))
    state = simulator.fleet

    def refuse(target: Path, data: bytes) -> None:
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(simulator_module, "write_atomically", refuse)
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        pynvml.nvmlDeviceSetPersistenceMode(device, pynvml.NVML_FEATURE_ENABLED)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        simulator.reset_gpu(0)
    assert simulator.fleet == state and pynvml.nvmlDeviceGetPersistenceMode(device) == 0
    assert pynvml.nvmlDeviceGetMigMode(device) == [0, 1]
    assert path.read_bytes() == before


def test_an_edit_on_disk_shows_up_at_the_next_device_count(
    start_nvml: StartNvml, fleet_file: Callable[..., Path]
) -> None:
    """The issue: "The simulator re-reads a fleet file when it changes on disk, so an edited file
    shows up in the next collection" (checked at each `nvmlDeviceGetCount`)."""
    path = fleet_file(one_gpu(mig="disabled"))
    start_nvml(str(path))
    assert pynvml.nvmlDeviceGetCount() == 1
    path.write_text(
        fleet(
            gpu(mig="disabled", extra="    processes: [{pid: 9, name: edited, used_memory_mib: 5}]\n"), gpu()
        )
    )
    assert pynvml.nvmlDeviceGetCount() == 2
    assert pynvml.nvmlSystemGetProcessName(9) == "edited"


def test_a_broken_edit_keeps_the_last_good_state(
    start_nvml: StartNvml, fleet_file: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A half-saved or mistyped fleet file must not take the simulated host down: the last good
    state stays and the reason is logged."""
    path = fleet_file(one_gpu(mig="disabled"))
    start_nvml(str(path))
    path.write_text("gpus:\n  - model: A100-SXM4-81GB\n")
    with caplog.at_level(logging.WARNING):
        assert pynvml.nvmlDeviceGetCount() == 1
    assert "gpus[0].model: unknown model 'A100-SXM4-81GB'" in caplog.text


def test_assigning_a_fleet_changes_the_world_and_the_file(fleet_file: Callable[..., Path]) -> None:
    """`.fleet` is the current state; assigning one (a process ended) is written back like a
    mutation, and ``attribution`` answers from the fleet file's fields."""
    path = fleet_file(
        one_gpu(
            mig="disabled",
            extra="    processes:\n"
            "      - {pid: 7, name: python, used_memory_mib: 10, user: ann, env: {A: '1'}}\n"
            "      - {pid: 8, name: python, used_memory_mib: 10}\n",
        )
    )
    simulator = SimulatedNvml.open(str(path))
    attribution = simulator.attribution(7)
    assert attribution is not None and (attribution.user, attribution.env) == ("ann", {"A": "1"})
    assert simulator.attribution(8) is None
    simulator.fleet = simulator.fleet.without_process(7)
    assert [p.pid for p in load_fleet(str(path)).gpus[0].processes] == [8]


# Operations a remediation performs, as (operation, profile or slot) pairs for hypothesis.
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["create", "create_ci", "destroy"]), st.sampled_from([0, 5, 9, 14, 15, 19, 20])
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_any_sequence_of_mutations_round_trips_through_the_file(
    tmp_path_factory: pytest.TempPathFactory, operations: list[tuple[str, int]]
) -> None:
    """Whatever a remediation did, the file written back loads to the simulator's state, so a second
    process (``serve`` beside ``remediate --apply``) sees exactly what NVML reports."""
    path = tmp_path_factory.mktemp("fleet") / "fleet.yaml"
    path.write_text(one_gpu(model="H100-SXM5-80GB"))
    simulator = install(str(path))
    pynvml.nvmlInit()
    try:
        device = pynvml.nvmlDeviceGetHandleByIndex(0)
        for operation, profile_id in operations:
            try:
                if operation == "create":
                    pynvml.nvmlDeviceCreateGpuInstance(device, profile_id)
                elif operation == "create_ci":
                    create(device, profile_id)
                else:
                    destroy_any(device)
            except pynvml.NVMLError:
                continue  # a refused step changes nothing, which the round trip also checks
        assert load_fleet(str(path)) == simulator.fleet
    finally:
        pynvml.nvmlShutdown()
        uninstall()


def destroy_any(device: object) -> None:
    """Destroy the first GPU instance found, its compute instances first."""
    for profile_id in (0, 5, 9, 14, 15, 19, 20):
        found = (pynvml.c_nvmlGpuInstance_t * 7)()
        count = ctypes.c_uint()
        pynvml.nvmlDeviceGetGpuInstances(device, profile_id, found, ctypes.byref(count))
        if count.value:
            gpu_instance = found[0]
            for ci_profile in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
                compute = (pynvml.c_nvmlComputeInstance_t * 8)()
                ci_count = ctypes.c_uint()
                try:
                    pynvml.nvmlGpuInstanceGetComputeInstances(
                        gpu_instance, ci_profile, compute, ctypes.byref(ci_count)
                    )
                except pynvml.NVMLError:
                    continue
                for ci in compute[: ci_count.value]:
                    pynvml.nvmlComputeInstanceDestroy(ci)
            pynvml.nvmlGpuInstanceDestroy(gpu_instance)
            return
