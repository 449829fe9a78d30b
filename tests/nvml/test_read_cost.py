"""What a collection costs in NVML calls once the session knows the GPUs, and that what the
session keeps is read again whenever it can have changed (issue 12).

Counts are of C calls, as the simulator counts them (a list query such as
nvmlDeviceGetComputeRunningProcesses_v3 is two by NVML's INSUFFICIENT_SIZE protocol when it has
something to list). A100s have no GPM, so no count depends on how fast the test runs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pynvml

from mig_exporter.model import Snapshot
from mig_exporter.nvml.mig_read import LAYOUT_REFRESH_COLLECTIONS
from mig_exporter.nvml.read import read_snapshot
from mig_exporter.nvml.session import NvmlSession
from mig_exporter.nvml.write import HardwareWriter
from mig_exporter.sim.state import Fault

from .conftest import Opener

MIG_GPU = """
  - model: A100-SXM4-80GB
    mig: enabled
    instances:
      - profile: 3g.40gb
        placement: 0
        processes: [{pid: 5001, name: server-a, used_memory_mib: 12000}]
      - profile: 2g.20gb
        placement: 4
        processes: [{pid: 5002, name: server-b, used_memory_mib: 9000}]
"""
WHOLE_GPU = """
  - model: A100-SXM4-80GB
    processes:
      - {pid: 78914, name: python, used_memory_mib: 3752}
      - {pid: 81007, name: python, used_memory_mib: 3780}
"""


def fleet_file(tmp_path: Path, gpus: str) -> str:
    path = tmp_path / "fleet.yaml"
    path.write_text(f"gpus:{gpus}")
    return str(path)


def counted(session: NvmlSession) -> tuple[Snapshot, dict[str, int]]:
    """One collection, and its C calls per family."""
    assert session.simulator is not None
    before = session.simulator.call_families()
    snapshot = read_snapshot(session)
    assert snapshot.nvml_up and not snapshot.errors, snapshot.errors
    return snapshot, dict(session.simulator.call_families() - before)


def test_a_steady_collection_asks_only_what_can_change(tmp_path: Path, open_session: Opener) -> None:
    session = open_session(fleet_file(tmp_path, MIG_GPU * 2 + WHOLE_GPU))
    first, first_calls = counted(session)
    second, steady = counted(session)
    # the same values but the energy counter, which grows with time
    assert [replace(g, health=None) for g in second.gpus] == [replace(g, health=None) for g in first.gpus]
    assert sum(first_calls.values()) > 3 * sum(steady.values())
    # system: the GPU count (versions are kept). Telemetry per GPU (x3): memory, persistence,
    # temperature, power, power limit, two clocks = 21; utilization on the GPU without MIG (never
    # supported under MIG: asked once) = 1; memory per MIG device (x4) = 4; health (nvml.health:
    # field values and clock event reasons per GPU, its slow counters once a minute) = 6. MIG: the
    # mode per GPU (x3) and the layout check per MIG GPU (x2, one remaining capacity). Processes:
    # one C call per device (x4 MIG devices, x1 whole GPU: the list in a buffer with room, not
    # pynvml's count-then-list) and the whole GPU's per-process utilization = 6. Names, identity,
    # ECC (once a minute), the MIG layout: none.
    assert steady == {"system": 1, "telemetry": 21 + 1 + 4 + 6, "mig": 3 + 2, "process": 6}


def test_the_layout_is_read_in_full_every_refresh_period(tmp_path: Path, open_session: Opener) -> None:
    """For what no check sees: every LAYOUT_REFRESH_COLLECTIONS collections the layout is read in full."""
    session = open_session(fleet_file(tmp_path, MIG_GPU))
    families = [counted(session)[1] for _ in range(1 + LAYOUT_REFRESH_COLLECTIONS + 1)]
    layout_reads = [i for i, f in enumerate(families) if f["mig"] > families[1]["mig"]]
    assert layout_reads == [0, LAYOUT_REFRESH_COLLECTIONS]


def test_instances_created_behind_the_exporters_back_show_in_the_next_collection(
        tmp_path: Path, open_session: Opener) -> None:
    """Another tool (nvidia-smi, mig-parted) creates a GPU instance with a compute instance, then
    destroys a compute instance: the reader is not told, and sees both at its next collection."""
    session = open_session(fleet_file(tmp_path, MIG_GPU))
    read_snapshot(session)
    assert len(read_snapshot(session).gpus[0].mig_instances) == 2
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    one_g = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(device, pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE)
    created = pynvml.nvmlDeviceCreateGpuInstance(device, one_g.id)
    info = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
        created, pynvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE,
        pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
    pynvml.nvmlGpuInstanceCreateComputeInstance(created, info.id)
    gpu = read_snapshot(session).gpus[0]
    assert sorted(m.profile for m in gpu.mig_instances) == ["1g.10gb", "2g.20gb", "3g.40gb"]
    assert dict(gpu.mig_profile_capacity or ())["1g.10gb"] == 0  # slices 0-3, 4-5 and 6 taken

    two_g = next(gi for gi in gpu.gpu_instances if gi.profile == "2g.20gb")
    simulator = session.simulator
    assert simulator is not None
    fleet = simulator.fleet
    sim_gpu = fleet.gpus[0]
    emptied = tuple(replace(gi, compute_instances=()) if gi.id == two_g.gpu_instance_id else gi
                    for gi in sim_gpu.instances)
    simulator.fleet = fleet.with_gpu(0, replace(sim_gpu, instances=emptied))  # its CI destroyed
    gpu = read_snapshot(session).gpus[0]
    assert sorted(m.profile for m in gpu.mig_instances) == ["1g.10gb", "3g.40gb"]
    assert next(gi for gi in gpu.gpu_instances if gi.profile == "2g.20gb").compute_instance_ids == ()


# A GPU instance a compute instance half fills (2g with 1c) and one without any (1g): another tool
# can create compute instances in both, which changes no GPU instance capacity.
ROOMY_GPU = """
  - model: A100-SXM4-80GB
    mig: enabled
    instances:
      - profile: 3g.40gb
        placement: 0
        processes: [{pid: 5001, name: server-a, used_memory_mib: 12000}]
      - profile: 2g.20gb
        placement: 4
        compute_instances:
          - profile: 1c.2g.20gb
            processes: [{pid: 5002, name: server-b, used_memory_mib: 3000}]
      - profile: 1g.10gb
        placement: 6
        compute_instances: []
"""


def create_compute_instance(gpu_instance_id: int) -> None:
    """What nvidia-smi mig -cci does: a 1-slice compute instance, the reader not told."""
    gpu_instance = pynvml.nvmlDeviceGetGpuInstanceById(pynvml.nvmlDeviceGetHandleByIndex(0), gpu_instance_id)
    info = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
        gpu_instance, pynvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE,
        pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
    pynvml.nvmlGpuInstanceCreateComputeInstance(gpu_instance, info.id)


def test_a_compute_instance_created_in_a_gpu_instance_shows_in_the_next_collection(
        tmp_path: Path, open_session: Opener) -> None:
    """Issue 12: it used to go unseen until the periodic full read (60 collections)."""
    session = open_session(fleet_file(tmp_path, ROOMY_GPU))
    first = read_snapshot(session).gpus[0]
    assert sorted(m.profile for m in first.mig_instances) == ["1c.2g.20gb", "3g.40gb"]
    by_profile = {gi.profile: gi.gpu_instance_id for gi in first.gpu_instances}
    read_snapshot(session)

    create_compute_instance(by_profile["2g.20gb"])
    gpu = read_snapshot(session).gpus[0]
    assert sorted(m.profile for m in gpu.mig_instances) == ["1c.2g.20gb", "1c.2g.20gb", "3g.40gb"]
    create_compute_instance(by_profile["1g.10gb"])
    gpu = read_snapshot(session).gpus[0]
    assert sorted(m.profile for m in gpu.mig_instances) == ["1c.2g.20gb", "1c.2g.20gb", "1g.10gb", "3g.40gb"]
    assert all(gi.compute_instance_ids for gi in gpu.gpu_instances)


def test_each_gpu_instance_with_room_costs_one_call_a_full_one_none(
        tmp_path: Path, open_session: Opener) -> None:
    """MIG calls of a steady collection: the mode and the GPU's layout check (2), and one check per
    GPU instance with room for a compute instance: the 2g and the 1g (2), not the full 3g. Filled
    by another tool, the 2g is read again and checked no more."""
    session = open_session(fleet_file(tmp_path, ROOMY_GPU))
    first, _ = counted(session)
    assert counted(session)[1]["mig"] == 2 + 2
    create_compute_instance(next(gi.gpu_instance_id for gi in first.gpus[0].gpu_instances
                                 if gi.profile == "2g.20gb"))
    assert counted(session)[1]["mig"] > 2 + 2  # read again in full
    assert counted(session)[1]["mig"] == 2 + 1


def test_what_remediate_writes_shows_in_the_next_collection(tmp_path: Path, open_session: Opener) -> None:
    session = open_session(fleet_file(tmp_path, MIG_GPU))
    read_snapshot(session)
    assert 0 in session.known_gpus
    writer = HardwareWriter(session)
    gpu_instance_id = writer.create_gpu_instance(0, pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE, 6, 1)
    assert 0 not in session.known_gpus  # forgotten by the write, before the verify reads
    gpu = read_snapshot(session).gpus[0]
    assert gpu_instance_id in {gi.gpu_instance_id for gi in gpu.gpu_instances}


def test_a_gpu_lost_and_back_as_another_board_is_read_again(tmp_path: Path, open_session: Opener) -> None:
    session = open_session(fleet_file(tmp_path, WHOLE_GPU * 2))
    simulator = session.simulator
    assert simulator is not None
    before = read_snapshot(session).gpus[1]
    fleet = simulator.fleet
    simulator.fleet = fleet.with_gpu(1, replace(fleet.gpus[1], lost=True))
    lost = read_snapshot(session).gpus[1]
    assert (lost.lost, lost.uuid, lost.name) == (True, before.uuid, None)
    replaced = replace(fleet.gpus[1], uuid="GPU-00000000-0000-0000-0000-00000000beef", serial="1650000000999")
    simulator.fleet = fleet.with_gpu(1, replaced)
    back = read_snapshot(session).gpus[1]
    assert (back.lost, back.uuid, back.serial) == (False, replaced.uuid, "1650000000999")


def test_a_pid_reused_by_another_process_shows_its_new_name(tmp_path: Path, open_session: Opener) -> None:
    session = open_session(fleet_file(tmp_path, WHOLE_GPU))
    simulator = session.simulator
    assert simulator is not None
    assert name_of(read_snapshot(session), 78914) == "python"
    names_before = simulator.call_counts["nvmlSystemGetProcessName"]
    assert name_of(read_snapshot(session), 78914) == "python"
    assert simulator.call_counts["nvmlSystemGetProcessName"] == names_before  # kept
    gpu = simulator.fleet.gpus[0]
    renamed = tuple(replace(p, name="vllm") if p.pid == 78914 else p for p in gpu.processes)
    simulator.fleet = simulator.fleet.with_gpu(0, replace(gpu, processes=renamed))
    assert name_of(read_snapshot(session), 78914) == "vllm"
    assert simulator.call_counts["nvmlSystemGetProcessName"] == names_before + 1  # that pid only


def test_nvml_initialised_again_reads_every_gpu_again(tmp_path: Path, open_session: Opener) -> None:
    """A driver reload can bring other boards at the same indexes: nothing kept survives it."""
    session = open_session(fleet_file(tmp_path, WHOLE_GPU))
    simulator = session.simulator
    assert simulator is not None
    read_snapshot(session)
    fleet = simulator.fleet
    swapped = replace(fleet.gpus[0], uuid="GPU-00000000-0000-0000-0000-00000000cafe")
    simulator.fleet = replace(fleet.with_gpu(0, swapped), faults=(
        Fault(call="nvmlDeviceGetCount_v2", error=pynvml.NVML_ERROR_UNINITIALIZED, count=1),))
    assert not read_snapshot(session).nvml_up
    again = read_snapshot(session)
    assert again.nvml_up and again.gpus[0].uuid == swapped.uuid


def test_a_gpu_plugged_in_makes_every_gpu_read_again(tmp_path: Path, open_session: Opener) -> None:
    session = open_session(fleet_file(tmp_path, WHOLE_GPU))
    simulator = session.simulator
    assert simulator is not None
    read_snapshot(session)
    fleet = simulator.fleet
    plugged = replace(fleet.gpus[0], uuid="GPU-00000000-0000-0000-0000-0000000000aa", processes=(),
                      pci_bus_id="00000000:AA:00.0")
    simulator.fleet = replace(fleet, gpus=(plugged, *fleet.gpus))  # the new board took index 0
    uuids_before = simulator.call_counts["nvmlDeviceGetUUID"]
    snapshot = read_snapshot(session)
    assert [g.uuid for g in snapshot.gpus] == [plugged.uuid, fleet.gpus[0].uuid]
    assert simulator.call_counts["nvmlDeviceGetUUID"] == uuids_before + 2


def name_of(snapshot: Snapshot, pid: int) -> str | None:
    (process,) = [p for p in snapshot.processes if p.pid == pid]
    return process.name


def test_past_the_series_cap_process_names_are_not_asked(tmp_path: Path, open_session: Opener) -> None:
    """Issue 12: the cap bounds the work, not only the bytes. Names are asked for the pids of the
    first processes listed; the others stay absent, counted as skipped."""
    many = "".join(f"      - {{pid: {300 + n}, name: worker-{n}, used_memory_mib: 100}}\n" for n in range(5))
    session = open_session(fleet_file(tmp_path, f"\n  - model: A100-SXM4-80GB\n    processes:\n{many}"))
    simulator = session.simulator
    assert simulator is not None
    snapshot = read_snapshot(session, max_process_series=2)
    assert [p.name for p in snapshot.processes] == ["worker-0", "worker-1", None, None, None]
    assert snapshot.process_names_skipped == 3
    assert simulator.call_counts["nvmlSystemGetProcessName"] == 2
    assert [p.used_memory_bytes for p in snapshot.processes] == [100 * 1024 * 1024] * 5  # still read


def test_a_call_the_gpu_never_supports_is_asked_once(tmp_path: Path, open_session: Opener) -> None:
    """Issue 12: utilization is NOT_SUPPORTED on a MIG-enabled GPU (mig-facts.md): asked at the first
    collection only, and asked again once the GPU's MIG mode changed."""
    session = open_session(fleet_file(tmp_path, MIG_GPU))
    simulator = session.simulator
    assert simulator is not None
    for _ in range(3):
        assert read_snapshot(session).gpus[0].utilization_gpu_ratio is None
    assert simulator.call_counts["nvmlDeviceGetUtilizationRates"] == 1
    gpu = simulator.fleet.gpus[0]
    simulator.fleet = simulator.fleet.with_gpu(0, replace(gpu, mig=type(gpu.mig).DISABLED, instances=()))
    assert read_snapshot(session).gpus[0].utilization_gpu_ratio is not None
    assert simulator.call_counts["nvmlDeviceGetUtilizationRates"] == 2


def test_a_device_with_more_processes_than_one_call_has_room_for(
        tmp_path: Path, open_session: Opener) -> None:
    """Past the buffer's room the list takes pynvml's count-then-list calls, and is complete."""
    many = "".join(f"      - {{pid: {1000 + n}, name: w, used_memory_mib: 10}}\n" for n in range(100))
    session = open_session(fleet_file(tmp_path, f"\n  - model: A100-SXM4-80GB\n    processes:\n{many}"))
    simulator = session.simulator
    assert simulator is not None
    snapshot = read_snapshot(session)
    assert sorted(snapshot.gpus[0].pids) == list(range(1000, 1100)) and snapshot.gpus[0].processes_complete
    assert simulator.call_counts["nvmlDeviceGetComputeRunningProcesses_v3"] == 1 + 2
