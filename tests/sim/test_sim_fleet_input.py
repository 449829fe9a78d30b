"""Fleet files that are wrong in ways a person does not see: issue 11, item 8 (fleet side).

Each refusal is one line naming the file and the reason (DESIGN.md, "The fleet file": invalid files
"are refused with the file, the path inside it and the reason"), before anything is changed. The
refusals that are only a message are in test_sim_validation.py's table (duplicate-key-*, no-gpus-*,
pci-bus-id-*, more-gpus-than-handles-hold).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pynvml
import pytest

from mig_exporter.cli import main
from mig_exporter.sim import FleetError, SimulatedNvml, dump_fleet, load_fleet, parse_fleet, uninstall
from mig_exporter.sim.fleet import MAX_FLEET_FILE_BYTES
from sim.conftest import StartNvml

# ---- item 8: "duplicate YAML keys in a fleet file resolve last-wins silently" ------------------


def test_a_merge_key_may_still_be_overridden() -> None:
    """YAML's ``<<`` merge is how a person shares settings between GPUs: the GPU's own key wins,
    which is not a duplicate."""
    fleet = parse_fleet(
        "gpus:\n  - &base {model: A100-SXM4-80GB, persistence: true}\n"
        "  - <<: *base\n    persistence: false\n",
        "lab.yaml",
    )
    assert [g.persistence for g in fleet.gpus] == [True, False]


def test_the_duplicate_is_refused_by_the_command_in_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("gpus:\n  - model: A30\ngpus:\n  - model: A30\n  - model: A30\n")
    assert main(["diagnose", "--fleet", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"mig-exporter diagnose: error: {path}: not valid YAML: line 3, column 1: "
        "duplicate key gpus (first on line 1)\n"
    )


# ---- item 8: "more than 32 GPUs gives an error about a pci_bus_id the user never wrote" ----------


def test_generated_pci_bus_ids_are_unique_past_32_gpus(start_nvml: StartNvml) -> None:
    """The default bus IDs wrapped after 32 GPUs (bus 0x07 + 8 × index, modulo 256), so gpus[32]
    was refused as having gpus[0]'s. NVML reports each GPU's own; the 33rd is in the next domain."""
    count = 40
    start_nvml("gpus:\n" + "  - model: A30\n" * count)
    bus_ids = []
    for index in range(count):
        info = pynvml.nvmlDeviceGetPciInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
        bus_ids.append(info.busId)
    assert len(set(bus_ids)) == count
    assert bus_ids[:2] == ["00000000:07:00.0", "00000000:0F:00.0"]  # as before for the first 32
    assert bus_ids[32] == "00000001:07:00.0"
    info = pynvml.nvmlDeviceGetPciInfo(pynvml.nvmlDeviceGetHandleByIndex(32))
    assert (info.domain, info.bus, info.device) == (1, 7, 0)


# ---- item 8: "a file ./seed-incident silently shadows the built-in fleet" -------------------------


def test_a_built_in_name_means_the_built_in_even_beside_a_file_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("seed-incident").write_text("gpus:\n  - model: A30\n")
    with caplog.at_level(logging.WARNING):
        assert len(load_fleet("seed-incident").gpus) == 4  # the incident's four A100s
    assert caplog.messages == [
        "--fleet seed-incident: simulating the built-in fleet seed-incident, not the file seed-incident "
        "here; to simulate the file, give it as ./seed-incident"
    ]
    caplog.clear()
    assert [g.model_key for g in load_fleet("./seed-incident").gpus] == ["A30"]
    assert caplog.messages == []


# ---- item 8: "the fleet file reader has no size/FIFO guard" ----------------------------------------


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fleet.yaml"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: _load_into(str(fifo), outcome), daemon=True)
    reader.start()
    reader.join(60)  # a guard against hanging the suite, not a timing assertion
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert [str(e) for e in outcome] == [
        f"{fifo}: not a regular file; give a fleet file or a built-in fleet's name"
    ]


def test_a_device_is_refused_without_reading_it() -> None:
    with pytest.raises(FleetError, match=r"^/dev/zero: not a regular file; give a fleet file"):
        load_fleet("/dev/zero")


def test_a_file_past_the_cap_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "fleet.yaml"
    with big.open("wb") as file:
        file.truncate(MAX_FLEET_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(FleetError) as refused:
        load_fleet(str(big))
    assert str(refused.value) == (
        f"{big}: larger than {MAX_FLEET_FILE_BYTES // 1024} KiB; is it the right file?; "
        "give a fleet file or a built-in fleet's name"
    )


def test_a_fleet_file_replaced_by_a_fifo_keeps_the_last_good_state(
    start_nvml: StartNvml, caplog: pytest.LogCaptureFixture
) -> None:
    """The simulator re-reads its file when it changes on disk, through the same guard: reading
    the FIFO blocked the simulator (and every NVML call after it) for good."""
    simulator = start_nvml("gpus:\n  - model: A30\n")
    assert simulator.path is not None
    simulator.path.unlink()
    os.mkfifo(simulator.path)
    counts: list[int] = []
    with caplog.at_level(logging.WARNING):
        reader = threading.Thread(target=lambda: counts.append(pynvml.nvmlDeviceGetCount()), daemon=True)
        reader.start()
        reader.join(60)  # a guard against hanging the suite, not a timing assertion
    assert counts == [1]
    assert any("not a regular file" in m for m in caplog.messages)


def _load_into(spec: str, outcome: list[BaseException]) -> None:
    try:
        load_fleet(spec)
    except FleetError as error:
        outcome.append(error)


# ---- item 8: "a process name with a newline" (the simulator's side: carried byte for byte) --------

NAMES = ("python\nserve.py --port 8000", "tab\there", "ünïcode ✓", "trailing newline\n")


def test_a_process_name_with_a_newline_is_reported_as_written(start_nvml: StartNvml) -> None:
    """/proc's comm and cmdline can hold a newline or a tab, so NVML's name can: the simulator
    hands pynvml the name exactly as the fleet file gives it, and a write-back keeps it."""
    processes = "".join(
        f"      - {{pid: {4000 + i}, name: {json.dumps(name)}, used_memory_mib: 100}}\n"
        for i, name in enumerate(NAMES)
    )
    simulator = start_nvml(f"gpus:\n  - model: A100-SXM4-80GB\n    processes:\n{processes}")
    assert [pynvml.nvmlSystemGetProcessName(4000 + i) for i in range(len(NAMES))] == list(NAMES)
    reread = parse_fleet(dump_fleet(simulator.fleet), "dumped.yaml")
    assert [p.name for p in reread.gpus[0].processes] == list(NAMES)


def test_a_process_name_cannot_hold_nul() -> None:
    """NVML's name is a C string: a NUL would cut it short, so the file cannot give one."""
    with pytest.raises(FleetError) as refused:
        parse_fleet('gpus: [{model: A30, processes: [{pid: 7, name: "a\\0b", used_memory_mib: 1}]}]\n',
                    "lab.yaml")
    assert str(refused.value) == (
        "lab.yaml: gpus[0].processes[0].name: NVML returns a C string: a name cannot hold NUL"
    )


# ---- item 8: "MIG UUIDs in the simulator repeat after destroy and re-create" ----------------------

ONE_3G = (
    "gpus:\n  - model: A100-SXM4-80GB\n    mig: enabled\n    instances: [{profile: 3g.40gb, placement: 0}]\n"
)


def _recreate_mig_device() -> tuple[str, str]:
    """Destroy GPU 0's only MIG device (its compute and GPU instance) and create the same shape
    again, at the same placement and so the same IDs; the UUIDs before and after."""
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    before = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(device, 0))
    gi = pynvml.nvmlDeviceGetGpuInstanceById(device, 1)
    pynvml.nvmlComputeInstanceDestroy(pynvml.nvmlGpuInstanceGetComputeInstanceById(gi, 0))
    pynvml.nvmlGpuInstanceDestroy(gi)
    profile = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(device, pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE)
    placement = pynvml.c_nvmlGpuInstancePlacement_t(start=0, size=4)
    gi = pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(device, profile.id, placement)
    ci_profile = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
        gi, pynvml.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
    )
    pynvml.nvmlGpuInstanceCreateComputeInstance(gi, ci_profile.id)
    mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(device, 0)
    assert (pynvml.nvmlDeviceGetGpuInstanceId(mig), pynvml.nvmlDeviceGetComputeInstanceId(mig)) == (1, 0)
    return before, pynvml.nvmlDeviceGetUUID(mig)


def test_a_re_created_mig_device_gets_a_new_uuid(start_nvml: StartNvml, fleet_file) -> None:
    """mig-facts.md: MIG device UUIDs in the R470+ form (`MIG-c7384736-a75d-5afc-…`). A driver gives
    each new MIG device a new UUID; the simulator gave the same shape at the same IDs the old one."""
    simulator = start_nvml(ONE_3G)
    first, second = _recreate_mig_device()
    assert first != second and second.startswith("MIG-")
    assert pynvml.nvmlDeviceGetGpuInstanceId(pynvml.nvmlDeviceGetHandleByUUID(second)) == 1
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetHandleByUUID(first)
    _, third = _recreate_mig_device()
    assert third not in (first, second)

    # Persisted through the write-back: a new simulator over the file reports it, and its own
    # re-creation gives yet another (the creation count is in the file too).
    assert simulator.path is not None
    again = SimulatedNvml.open(str(simulator.path))
    (gi,) = again.fleet.gpus[0].instances
    assert gi.compute_instances[0].uuid == third and again.fleet.gpus[0].mig_devices_created == 2
    pynvml.nvmlShutdown()
    uninstall()
    start_nvml(str(simulator.path))
    assert _recreate_mig_device()[1] not in (first, second, third)

    # Deterministic: the same fleet and the same operations give the same UUIDs.
    pynvml.nvmlShutdown()
    uninstall()
    start_nvml(str(fleet_file(ONE_3G, "replay.yaml")))
    assert _recreate_mig_device() == (first, second)


def test_a_mig_uuid_in_the_file_is_checked() -> None:
    """A MIG device UUID the file gives (as write-back writes it) is unique and looks like one."""
    given = parse_fleet(ONE_3G.replace("placement: 0}", "placement: 0, uuid: MIG-x}"), "lab.yaml")
    assert given.gpus[0].instances[0].compute_instances[0].uuid == "MIG-x"
    twice = ONE_3G.replace(
        "[{profile: 3g.40gb, placement: 0}]",
        "[{profile: 3g.40gb, uuid: MIG-x}, {profile: 3g.40gb, uuid: MIG-x}]",
    )
    with pytest.raises(FleetError) as refused:
        parse_fleet(twice, "lab.yaml")
    assert str(refused.value) == (
        "lab.yaml: gpus[0].instances[1].uuid: MIG-x is already the uuid of gpus[0].instances[0]"
    )
    with pytest.raises(FleetError, match=r"^lab.yaml: gpus\[0\].instances\[0\].uuid: 'GPU-x' does not start"):
        parse_fleet(ONE_3G.replace("placement: 0}", "placement: 0, uuid: GPU-x}"), "lab.yaml")
