"""MIG semantics through the real pynvml: modes and their pending states, IN_USE on a busy GPU,
what is not supported on MIG, MIG device handles, memory and processes per instance."""

from __future__ import annotations

import re
from typing import Any

import pynvml
import pytest

from mig_exporter.sim import install, uninstall
from sim.conftest import StartNvml
from sim.fleets import fleet, gpu, one_gpu

MIB = 1024 * 1024
INCIDENT_GPU = gpu(
    mig="disabled",
    extra="""    processes:
      - {pid: 78914, name: python, used_memory_mib: 3752}
      - {pid: 81007, name: python, used_memory_mib: 3780}
""",
)
# The incident's GPU after the runbook: two 3g.40gb (placed 4 then 0), a process in the first.
PARTITIONED_GPU = gpu(
    extra="""    instances:
      - profile: 3g.40gb
        processes: [{pid: 5001, name: python, used_memory_mib: 12000}]
      - profile: 3g.40gb
"""
)


def mig_devices(device: Any) -> dict[int, Any]:
    """Slot → MIG device handle, scanning every slot as a reader must."""
    found = {}
    for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(device)):
        try:
            found[slot] = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(device, slot)
        except pynvml.NVMLError_NotFound:
            continue
    return found


def test_enabling_mig_on_an_idle_gpu_takes_effect_at_once(start_nvml: StartNvml) -> None:
    """mig-facts.md: `nvmlDeviceSetMigMode(dev, mode) -> activationStatus`; on an idle GPU the
    activation succeeds (the incident's GPUs after a reboot: "Enabled MIG Mode")."""
    start_nvml(one_gpu(mig="disabled"))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceSetMigMode(device, pynvml.NVML_DEVICE_MIG_ENABLE) == pynvml.NVML_SUCCESS
    assert pynvml.nvmlDeviceGetMigMode(device) == [1, 1]
    assert pynvml.nvmlDeviceGetMaxMigDeviceCount(device) == 7


def test_enabling_mig_on_a_busy_gpu_stays_pending_until_a_reset(start_nvml: StartNvml) -> None:
    """mig-facts.md: "a failed activation comes back as the status value: IN_USE (19) when the GPU is
    not idle … Then the mode is pending until a GPU reset (`nvidia-smi -r -i N`) or reboot" (the
    incident: "MIG mode is in pending enable state … In use by another client")."""
    simulator = start_nvml(fleet(INCIDENT_GPU))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceSetMigMode(device, pynvml.NVML_DEVICE_MIG_ENABLE) == pynvml.NVML_ERROR_IN_USE
    assert pynvml.nvmlDeviceGetMigMode(device) == [0, 1]
    with pytest.raises(pynvml.NVMLError_InUse):
        simulator.reset_gpu(0)  # the processes still hold it
    simulator.fleet = simulator.fleet.without_process(78914).without_process(81007)
    simulator.reset_gpu(0)
    assert pynvml.nvmlDeviceGetMigMode(device) == [1, 1]


def test_another_client_holding_the_gpu_blocks_activation_and_reset(start_nvml: StartNvml) -> None:
    """mig-facts.md: "Persistence mode (and nvidia-persistenced) holds the device open; a GPU reset
    then fails with 'In use by another client'"."""
    simulator = start_nvml(one_gpu(mig="disabled", extra="    held_by: [nvidia-persistenced]\n"))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceSetMigMode(device, pynvml.NVML_DEVICE_MIG_ENABLE) == pynvml.NVML_ERROR_IN_USE
    with pytest.raises(pynvml.NVMLError_InUse) as refused:
        simulator.reset_gpu(0)
    assert str(refused.value) == "In use by another client"
    assert pynvml.nvmlDeviceGetMigMode(device) == [0, 1]


def test_persistence_mode_blocks_a_reset(start_nvml: StartNvml) -> None:
    """mig-facts.md: "Persistence mode … holds the device open; a GPU reset then fails"."""
    simulator = start_nvml(one_gpu(mig="pending-enable", extra="    persistence: true\n"))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_InUse):
        simulator.reset_gpu(0)
    pynvml.nvmlDeviceSetPersistenceMode(device, pynvml.NVML_FEATURE_DISABLED)
    simulator.reset_gpu(0)
    assert pynvml.nvmlDeviceGetMigMode(device) == [1, 1]
    assert pynvml.nvmlDeviceGetPersistenceMode(device) == pynvml.NVML_FEATURE_DISABLED


def test_a_reset_clears_the_instances(start_nvml: StartNvml) -> None:
    """mig-facts.md: "GPU and compute instances never survive a reboot: a MIG-enabled GPU comes back
    empty and runs nothing until instances are created again"."""
    simulator = start_nvml(one_gpu(extra="    instances: [{profile: 3g.40gb}, {profile: 3g.40gb}]\n"))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    simulator.reset_gpu(0)
    assert pynvml.nvmlDeviceGetMigMode(device) == [1, 1]
    assert mig_devices(device) == {}
    assert pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity(device, 9) == 2


def test_disabling_mig_with_instances_left_is_in_use(start_nvml: StartNvml) -> None:
    """The brief's MIG mode semantics: "mode-disable with instances present: IN_USE"; asking for the
    current mode again cancels a pending change."""
    start_nvml(one_gpu(extra="    instances: [{profile: 7g.80gb}]\n"))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_InUse):
        pynvml.nvmlDeviceSetMigMode(device, pynvml.NVML_DEVICE_MIG_DISABLE)
    assert pynvml.nvmlDeviceGetMigMode(device) == [1, 1]


def test_a_pending_change_is_cancelled_by_asking_for_the_current_mode(start_nvml: StartNvml) -> None:
    """mig-facts.md: `nvmlDeviceGetMigMode(dev) -> [current, pending]`: asking for the current mode
    leaves nothing pending."""
    start_nvml(one_gpu(mig="pending-enable"))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceSetMigMode(device, pynvml.NVML_DEVICE_MIG_DISABLE) == pynvml.NVML_SUCCESS
    assert pynvml.nvmlDeviceGetMigMode(device) == [0, 0]


def test_creating_instances_with_mig_disabled_is_not_supported(start_nvml: StartNvml) -> None:
    """mig-facts.md: "Create: … NOT_SUPPORTED when MIG is disabled"."""
    start_nvml(one_gpu(mig="pending-enable"))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceCreateGpuInstance(device, 9)
    assert pynvml.nvmlDeviceGetMaxMigDeviceCount(device) == 0


def test_destroying_in_use_instances_is_refused(start_nvml: StartNvml) -> None:
    """mig-facts.md: "Destroy a GPU instance: IN_USE while it has compute instances or processes, so
    destroy compute instances first; destroying a compute instance with processes: IN_USE"."""
    simulator = start_nvml(fleet(PARTITIONED_GPU))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    busy = pynvml.nvmlDeviceGetGpuInstanceById(device, 2)  # the first 3g.40gb, placed at 4
    compute = pynvml.nvmlGpuInstanceGetComputeInstanceById(busy, 0)
    with pytest.raises(pynvml.NVMLError_InUse):
        pynvml.nvmlComputeInstanceDestroy(compute)
    with pytest.raises(pynvml.NVMLError_InUse):
        pynvml.nvmlGpuInstanceDestroy(busy)
    simulator.fleet = simulator.fleet.without_process(5001)
    pynvml.nvmlComputeInstanceDestroy(compute)
    pynvml.nvmlGpuInstanceDestroy(busy)
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetGpuInstanceById(device, 2)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):  # the old handle dangles
        pynvml.nvmlGpuInstanceGetInfo(busy)


def test_utilization_is_not_supported_on_mig(start_nvml: StartNvml) -> None:
    """mig-facts.md: "On a MIG-enabled GPU: utilization rates, encoder/decoder and per-process
    utilization return NOT_SUPPORTED (parent and instance)"."""
    start_nvml(fleet(PARTITIONED_GPU, gpu(mig="disabled", extra="    utilization_gpu_percent: 37\n")))
    parent, whole = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
    for device in (parent, *mig_devices(parent).values()):
        with pytest.raises(pynvml.NVMLError_NotSupported):
            pynvml.nvmlDeviceGetUtilizationRates(device)
        with pytest.raises(pynvml.NVMLError_NotSupported):
            pynvml.nvmlDeviceGetEncoderUtilization(device)
        with pytest.raises(pynvml.NVMLError_NotSupported):
            pynvml.nvmlDeviceGetDecoderUtilization(device)
    assert pynvml.nvmlDeviceGetUtilizationRates(whole).gpu == 37


def test_mig_device_slots_are_not_contiguous(start_nvml: StartNvml) -> None:
    """mig-facts.md: "`nvmlDeviceGetMaxMigDeviceCount` is 0 with MIG off; `nvmlDeviceGetMigDevice
    HandleByIndex` returns NOT_FOUND for empty slots (slots need not be contiguous: keep scanning)"."""
    start_nvml(fleet(PARTITIONED_GPU, gpu(mig="disabled")))
    parent, mig_off = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
    found = mig_devices(parent)
    assert sorted(found) == [0, 4]
    assert {slot: pynvml.nvmlDeviceGetGpuInstanceId(h) for slot, h in found.items()} == {0: 1, 4: 2}
    assert pynvml.nvmlDeviceGetMaxMigDeviceCount(mig_off) == 0


def test_mig_device_handles_lead_back_to_their_parent_and_instances(start_nvml: StartNvml) -> None:
    """mig-facts.md: "MIG device UUIDs look like `MIG-c7384736-a75d-5afc-978f-d2f1294409fd`";
    "`nvmlDeviceGetHandleByUUID` accepts MIG UUIDs"; "`nvmlDeviceIsMigDeviceHandle` returns a
    ctypes `c_uint`, not an int"."""
    start_nvml(fleet(PARTITIONED_GPU))
    parent = pynvml.nvmlDeviceGetHandleByIndex(0)
    mig = mig_devices(parent)[4]
    mig_uuid = pynvml.nvmlDeviceGetUUID(mig)
    assert re.fullmatch(r"MIG-[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", mig_uuid)
    by_uuid = pynvml.nvmlDeviceGetHandleByUUID(mig_uuid)
    assert (pynvml.nvmlDeviceGetGpuInstanceId(by_uuid), pynvml.nvmlDeviceGetComputeInstanceId(by_uuid)) == (
        2,
        0,
    )
    is_mig = pynvml.nvmlDeviceIsMigDeviceHandle(by_uuid)
    assert isinstance(is_mig, pynvml.c_uint) and is_mig.value == 1
    assert pynvml.nvmlDeviceIsMigDeviceHandle(parent).value == 0
    back = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
    assert pynvml.nvmlDeviceGetUUID(back) == pynvml.nvmlDeviceGetUUID(parent)
    assert pynvml.nvmlDeviceGetName(mig) == "NVIDIA A100-SXM4-80GB MIG 3g.40gb"
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetGpuInstanceId(parent)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # a board-level query on a MIG device
        pynvml.nvmlDeviceGetTemperature(mig, pynvml.NVML_TEMPERATURE_GPU)


def test_mig_uuids_are_stable_across_simulators(fleet_file: Any) -> None:
    """mig-facts.md: MIG device UUIDs in the R470+ form; derived, so the same instance keeps its
    UUID when the fleet is loaded again (a workload pinned with CUDA_VISIBLE_DEVICES still finds it)."""
    path = str(fleet_file(fleet(PARTITIONED_GPU)))
    seen = []
    for _ in range(2):
        install(path)
        pynvml.nvmlInit()
        seen.append(
            sorted(
                pynvml.nvmlDeviceGetUUID(h)
                for h in mig_devices(pynvml.nvmlDeviceGetHandleByIndex(0)).values()
            )
        )
        pynvml.nvmlShutdown()
        uninstall()
    assert seen[0] == seen[1] and len(set(seen[0])) == 2


def test_memory_per_instance_and_on_the_parent(start_nvml: StartNvml) -> None:
    """mig-facts.md: "memory info and running processes on a MIG handle are per instance; on the
    parent handle they are the aggregate". The incident: "213 MiB used per partitioned GPU, and each
    MIG device with 107 MiB / 40192 MiB used"."""
    start_nvml(fleet(gpu(extra="    instances: [{profile: 3g.40gb}, {profile: 3g.40gb}]\n"), PARTITIONED_GPU))
    idle, busy = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
    assert pynvml.nvmlDeviceGetMemoryInfo(idle).used == 213 * MIB
    for mig in mig_devices(idle).values():
        memory = pynvml.nvmlDeviceGetMemoryInfo(mig, version=pynvml.nvmlMemory_v2)
        assert (memory.used, memory.total) == (107 * MIB, 40192 * MIB)
        assert pynvml.nvmlDeviceGetAttributes(mig).multiprocessorCount == 42
    used = {slot: pynvml.nvmlDeviceGetMemoryInfo(h).used for slot, h in mig_devices(busy).items()}
    assert used == {4: (107 + 12000) * MIB, 0: 107 * MIB}
    assert pynvml.nvmlDeviceGetMemoryInfo(busy).used == (213 + 12000) * MIB


def test_processes_per_instance_and_in_aggregate(start_nvml: StartNvml) -> None:
    """mig-facts.md: "`nvmlProcessInfo_t` has pid, usedGpuMemory …, gpuInstanceId,
    computeInstanceId (0xFFFFFFFF when MIG is off)"; per instance on a MIG handle, aggregate on
    the parent."""
    start_nvml(fleet(PARTITIONED_GPU, INCIDENT_GPU))
    partitioned, mig_off = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))

    def listed(device: Any) -> list[tuple[int, int, int, int]]:
        return [
            (p.pid, p.usedGpuMemory, p.gpuInstanceId, p.computeInstanceId)
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(device)
        ]

    assert listed(partitioned) == [(5001, 12000 * MIB, 2, 0)]
    assert {slot: listed(h) for slot, h in mig_devices(partitioned).items()} == {
        0: [],
        4: [(5001, 12000 * MIB, 2, 0)],
    }
    assert listed(mig_off) == [
        (78914, 3752 * MIB, 0xFFFFFFFF, 0xFFFFFFFF),
        (81007, 3780 * MIB, 0xFFFFFFFF, 0xFFFFFFFF),
    ]
    assert pynvml.nvmlSystemGetProcessName(78914) == "python"


def test_an_instance_of_another_shape_under_a_freed_id_gets_a_new_uuid(start_nvml: StartNvml) -> None:
    """mig-facts.md: "GPU instance IDs follow the placement": 3g@0 and 4g@0 are both GPU instance 1.
    A real driver gives every new MIG device a new UUID, so a 4g.40gb created where a 3g.40gb was
    destroyed must not inherit its UUID (a workload pinned to it would land on another size)."""
    start_nvml(one_gpu(extra="    instances:\n      - profile: 3g.40gb\n        placement: 0\n"))
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    old_uuid = pynvml.nvmlDeviceGetUUID(mig_devices(device)[0])
    three_g = pynvml.nvmlDeviceGetGpuInstanceById(device, 1)
    pynvml.nvmlComputeInstanceDestroy(pynvml.nvmlGpuInstanceGetComputeInstanceById(three_g, 0))
    pynvml.nvmlGpuInstanceDestroy(three_g)
    four_g_info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(device, pynvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE)
    four_g = pynvml.nvmlDeviceCreateGpuInstance(device, four_g_info.id)
    assert pynvml.nvmlGpuInstanceGetInfo(four_g).id == 1
    compute_info = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
        four_g,
        pynvml.NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE,
        pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
    )
    pynvml.nvmlGpuInstanceCreateComputeInstance(four_g, compute_info.id)
    new_uuid = pynvml.nvmlDeviceGetUUID(mig_devices(device)[0])
    assert new_uuid != old_uuid
    assert pynvml.nvmlDeviceGetGpuInstanceId(pynvml.nvmlDeviceGetHandleByUUID(new_uuid)) == 1
