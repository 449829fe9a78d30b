"""``mig-exporter remediate`` end to end: the real CLI, reader, write side and simulator, on fleet
files in tmp dirs (the fleet file is the hardware)."""

from __future__ import annotations

import io
import json
import re
import socket
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from mig_exporter.cli import main
from mig_exporter.model import MIB
from mig_exporter.sim import load_fleet

from .fleets import incident_copy, incident_document, read, remediate, write_fleet


def test_incident_plan_names_the_processes_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = incident_copy(tmp_path)
    before = fleet.read_bytes()
    assert remediate(tmp_path, fleet, "--gpu", "0,1", "--layout", "3g.40gb,3g.40gb") == 0
    out = capsys.readouterr().out
    assert "78914 python 3752 MiB" in out and "81007 python 3780 MiB" in out
    assert "stop them first: kill 78914 81007" in out
    lines = out.splitlines()
    after = lines.index("After the blockers are cleared (until then --apply changes nothing), the steps:")
    assert lines[after + 1 : after + 3] == [
        "  1. GPU 0: enable MIG mode",
        "  2. GPU 0: turn persistence mode on",
    ]
    assert fleet.read_bytes() == before
    assert not (tmp_path / "journal.jsonl").exists()


def test_incident_apply_is_refused_and_the_file_is_byte_for_byte_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = incident_copy(tmp_path)
    before = fleet.read_bytes()
    assert remediate(tmp_path, fleet, "--gpu", "0,1", "--layout", "3g.40gb,3g.40gb", "--apply", "--yes") == 3
    out = capsys.readouterr().out
    assert "78914" in out and "81007" in out and "Refused: nothing was changed." in out
    assert fleet.read_bytes() == before


def test_incident_without_its_processes_is_partitioned_as_by_hand_then_nothing_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0, 1)))
    untouched = load_fleet(str(fleet)).gpus[2:]
    assert remediate(tmp_path, fleet, "--gpu", "0,1", "--layout", "3g.40gb,3g.40gb", "--apply") == 0
    out = capsys.readouterr().out

    after = read(fleet)
    for index in (0, 1):
        gpu = after.gpu(index)
        assert gpu.mig_mode_current and gpu.mig_mode_pending and gpu.persistence_mode
        assert [(gi.gpu_instance_id, gi.placement_start, gi.profile) for gi in gpu.gpu_instances] == [
            (1, 0, "3g.40gb"),
            (2, 4, "3g.40gb"),
        ]
        assert {(m.memory_total_bytes, m.multiprocessors) for m in gpu.mig_instances} == {(40192 * MIB, 42)}
        for mig in gpu.mig_instances:  # every UUID printed with its assignment
            assert f"CUDA_VISIBLE_DEVICES={mig.mig_uuid}" in out
    assert load_fleet(str(fleet)).gpus[2:] == untouched

    # created as the driver did in the incident: ID 2 at placement 4 first, then ID 1 at placement 0
    journal = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    begun = {e["seq"]: e["step"] for e in journal if e["event"] == "begin"}
    created = [
        (begun[e["seq"]]["gpu_index"], begun[e["seq"]]["start"], e["created_id"])
        for e in journal
        if e["event"] == "done" and begun[e["seq"]]["action"] == "CreateGpuInstance"
    ]
    assert created == [(0, 4, 2), (0, 0, 1), (1, 4, 2), (1, 0, 1)]

    once = fleet.read_bytes()
    assert remediate(tmp_path, fleet, "--gpu", "0,1", "--layout", "3g,3g", "--apply") == 0
    assert "Nothing to do" in capsys.readouterr().out
    assert fleet.read_bytes() == once


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("3g.40gb,3g.40gb,1g.10gb", "no memory slice left for another 1g.10gb"),
        ("3g.40gb,5g.40gb", "unknown profile '5g.40gb' for GPU 0 (NVIDIA A100-SXM4-80GB)"),
    ],
)
def test_bad_layouts_exit_2_before_any_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str, message: str
) -> None:
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0,)))
    before = fleet.read_bytes()
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", layout, "--apply", "--yes") == 2
    assert message in capsys.readouterr().err
    assert fleet.read_bytes() == before


def test_a_gpu_without_mig_exits_2_before_any_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A GPU without MIG (an L4, a T4) answers NOT_SUPPORTED to nvmlDeviceGetMigMode.
    document = incident_document(without_processes_on=(0,))
    document["faults"] = [{"call": "nvmlDeviceGetMigMode", "gpu": 0, "error": "NOT_SUPPORTED"}]
    fleet = write_fleet(tmp_path, document)
    before = fleet.read_bytes()
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "3g", "--apply", "--yes") == 2
    assert "GPU 0 (NVIDIA A100-SXM4-80GB) does not support MIG" in capsys.readouterr().err
    assert fleet.read_bytes() == before


def test_a_partial_reading_is_not_planned_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = incident_document(without_processes_on=(0,))
    document["faults"] = [{"call": "nvmlDeviceGetComputeRunningProcesses_v3", "gpu": 0, "error": "UNKNOWN"}]
    fleet = write_fleet(tmp_path, document)
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "3g", "--apply") == 2
    assert (
        "GPU 0 could not be read completely (nvmlDeviceGetComputeRunningProcesses" in capsys.readouterr().err
    )


def test_a_fault_on_the_second_gpu_instance_rolls_everything_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = incident_document(without_processes_on=(0, 1))
    document["faults"] = [
        {"call": "nvmlDeviceCreateGpuInstanceWithPlacement", "error": "UNKNOWN", "skip": 1, "count": 1}
    ]
    fleet = write_fleet(tmp_path, document)
    before, state = fleet.read_bytes(), load_fleet(str(fleet))
    assert remediate(tmp_path, fleet, "--gpu", "0,1", "--layout", "3g.40gb,3g.40gb", "--apply", "--yes") == 2
    captured = capsys.readouterr()
    assert (
        "GPU 0: create GPU instance 3g.40gb at memory slice 0: nvmlDeviceCreateGpuInstanceWithPlacement: "
        "Unknown Error (UNKNOWN)"
    ) in captured.err
    assert "Every GPU is as it was found (read back from NVML)." in captured.out
    assert load_fleet(str(fleet)) == state
    assert fleet.read_bytes() == before


def test_a_busy_instance_is_kept_when_another_is_added_beside_it(tmp_path: Path) -> None:
    document = incident_document(without_processes_on=(0,))
    document["gpus"][0].update(
        mig="enabled",
        persistence=True,
        instances=[
            {
                "profile": "3g.40gb",
                "placement": 0,
                "processes": [{"pid": 5001, "name": "python", "used_memory_mib": 12000}],
            }
        ],
    )
    fleet = write_fleet(tmp_path, document)
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "3g.40gb,3g.40gb", "--apply") == 0
    gpu = read(fleet).gpu(0)
    assert [(gi.gpu_instance_id, gi.placement_start) for gi in gpu.gpu_instances] == [(1, 0), (2, 4)]
    assert [(p.pid, p.gpu_instance_id) for p in gpu.processes] == [(5001, 1)]


def test_a_gpu_held_by_an_unlisted_client_waits_for_a_reset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = incident_document(without_processes_on=(0,))
    document["gpus"][0]["held_by"] = ["nvidia-persistenced"]
    fleet = write_fleet(tmp_path, document)
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "3g,3g", "--apply") == 4
    out = capsys.readouterr().out
    assert "GPU 0: the MIG mode is pending (In use by another client (IN_USE))" in out
    assert "--apply --reset" in out
    gpu = read(fleet).gpu(0)
    assert (gpu.mig_mode_current, gpu.mig_mode_pending, gpu.gpu_instances) == (False, True, ())

    # while it is held, a reset is refused too, and the mode stays pending
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "3g,3g", "--apply", "--reset") == 4
    assert "the reset was refused" in capsys.readouterr().out

    document = yaml.safe_load(fleet.read_text())
    del document["gpus"][0]["held_by"]
    write_fleet(tmp_path, document)
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "3g,3g", "--apply", "--reset") == 0
    gpu = read(fleet).gpu(0)
    assert gpu.mig_enabled and [gi.placement_start for gi in gpu.gpu_instances] == [0, 4]


def test_a_refused_reset_is_named_and_not_counted_as_applied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = incident_document(without_processes_on=(0,))
    document["gpus"][0].update(held_by=["nvidia-persistenced"], persistence=True)
    fleet = write_fleet(tmp_path, document)
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "3g,3g", "--apply", "--reset") == 4
    lines = capsys.readouterr().out.splitlines()
    # persistence off and back on around the reset took effect; the MIG mode is only pending and
    # the reset failed: neither is counted
    assert "Applied 2 step(s)." in lines
    assert "Asked for, not in effect yet: GPU 0: enable MIG mode" in lines
    (failed,) = [line for line in lines if line.startswith("Failed: ")]
    assert failed.startswith("Failed: GPU 0: reset the GPU to apply the pending MIG mode: ")
    assert failed.endswith("In use by another client (IN_USE)")


def test_built_in_fleets_are_refused_for_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert remediate(tmp_path, Path("seed-incident"), "--gpu", "0", "--layout", "3g", "--apply") == 2
    assert "mig-exporter fleet show seed-incident > fleet.yaml" in capsys.readouterr().err


def test_json_output_and_artifacts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0, 1)))
    out_dir = tmp_path / "out"
    assert (
        remediate(
            tmp_path,
            fleet,
            "--gpu",
            "0,1",
            "--layout",
            "3g,3g",
            "--apply",
            "--format",
            "json",
            "--output-dir",
            str(out_dir),
        )
        == 0
    )
    document = json.loads(capsys.readouterr().out)
    uuids = {m.mig_uuid for g in read(fleet).gpus[:2] for m in g.mig_instances}
    assert {a["mig_uuid"] for a in document["assignments"]} == uuids
    assert all(a["new"] and a["resource"] == "nvidia.com/mig-3g.40gb" for a in document["assignments"])
    assert len(document["plan"]["steps"]) == 12 and document["outcome"]["failure"] is None
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "docker-compose.mig.yml",
        "kubernetes.yaml",
        "mig-devices.txt",
        "mig-parted.yaml",
        "runbook.md",
        "slurm.txt",
    ]
    compose = yaml.safe_load((out_dir / "docker-compose.mig.yml").read_text())
    assert {s["environment"]["CUDA_VISIBLE_DEVICES"] for s in compose["services"].values()} == uuids
    assert {s["runtime"] for s in compose["services"].values()} == {"nvidia"}
    # Slurm: the four 3g.40gb devices as their own GPU type, the two GPUs left whole as plain A100s
    slurm = (out_dir / "slurm.txt").read_text().splitlines()
    assert "AutoDetect=nvml" in slurm
    host = socket.gethostname()
    assert f"NodeName={host} Gres=gpu:a100-sxm4-80gb:2,gpu:a100-sxm4-80gb_3g.40gb:4" in slurm
    steps = [line.split(". ", 1)[1] for line in slurm if re.match(r"#\s+\d\. ", line)]
    assert steps[0] == f'scontrol update NodeName={host} State=DRAIN Reason="MIG repartition"'
    assert "--apply" in steps[2] and steps[4].startswith("sudo systemctl restart slurmd")
    assert steps[5] == f"scontrol update NodeName={host} State=RESUME"


class Terminal(io.StringIO):
    """Standard input as a person at a terminal would give it."""

    def isatty(self) -> bool:
        return True


def test_at_a_terminal_the_operator_confirms_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0,)))
    before = fleet.read_bytes()
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "7g", "--apply") == 1
    captured = capsys.readouterr()
    assert "Apply these 4 steps to GPU 0? [y/N]" in captured.err
    assert "Declined: nothing was changed." in captured.out
    assert fleet.read_bytes() == before
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "7g", "--apply") == 0
    assert read(fleet).gpu(0).gpu_instances[0].profile == "7g.80gb"


def started_while_waiting(
    monkeypatch: pytest.MonkeyPatch, fleet: Path, start: Callable[[dict[str, Any]], None]
) -> list[bytes]:
    """At a terminal, the operator answers yes, but ``start`` (a workload) edits the fleet file,
    the simulated hardware, while the prompt waits. The list receives the file as edited."""
    monkeypatch.setattr("sys.stdin", Terminal(""))
    edited: list[bytes] = []

    def answer_yes_after_a_workload_started(plan: object) -> bool:
        document = yaml.safe_load(fleet.read_text())
        start(document)
        fleet.write_text(yaml.safe_dump(document, sort_keys=False))
        edited.append(fleet.read_bytes())
        return True

    monkeypatch.setattr("mig_exporter.remediate.command._ask", answer_yes_after_a_workload_started)
    return edited


CHANGED = ("Refused: the GPUs changed while waiting for confirmation (new plan above); nothing was "
           "changed. Run the command again.")


def test_a_process_started_on_an_instance_while_the_prompt_waits_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = io.StringIO()
    with redirect_stdout(shown):
        assert main(["fleet", "show", "healthy-mig"]) == 0
    document = yaml.safe_load(shown.getvalue())
    document["gpus"] = document["gpus"][:1]
    (idle,) = [gi for gi in document["gpus"][0]["instances"] if gi["placement"] == 0]
    del idle["processes"]
    fleet = write_fleet(tmp_path, document, "race.yaml")

    def start_on_placement_0(edited: dict[str, Any]) -> None:
        (instance,) = [gi for gi in edited["gpus"][0]["instances"] if gi["placement"] == 0]
        instance["processes"] = [{"pid": 7001, "name": "python", "used_memory_mib": 1000}]

    edited = started_while_waiting(monkeypatch, fleet, start_on_placement_0)
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "4g,3g", "--apply") == 3
    assert [fleet.read_bytes()] == edited  # the workload's edit, and no other change
    captured = capsys.readouterr()
    assert "GPU 0: destroy GPU instance" in captured.out  # the plan confirmed
    assert captured.out.splitlines()[-1] == CHANGED
    assert "runs processes and is not in the layout 4g.40gb,3g.40gb" in captured.out  # the new blocker
    gpu = read(fleet).gpu(0)
    assert [(gi.placement_start, gi.profile) for gi in gpu.gpu_instances] == [(0, "3g.40gb"), (4, "3g.40gb")]
    assert 7001 in {p.pid for p in gpu.processes}
    assert not (tmp_path / "journal.jsonl").exists()


def test_a_process_started_on_a_gpu_without_mig_while_the_prompt_waits_keeps_mig_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0,)))

    def start_on_gpu_0(edited: dict[str, Any]) -> None:
        edited["gpus"][0]["processes"] = [{"pid": 7002, "name": "python", "used_memory_mib": 1000}]

    edited = started_while_waiting(monkeypatch, fleet, start_on_gpu_0)
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "3g,3g", "--apply", "--format", "json") == 3
    assert [fleet.read_bytes()] == edited  # the workload's edit, and no other change
    document = json.loads(capsys.readouterr().out)
    assert document["changed_while_waiting"] is True
    blockers = document["plan_after_confirmation"]["blockers"]
    assert [p["pid"] for b in blockers for p in b["processes"]] == [7002]
    gpu = read(fleet).gpu(0)
    assert (gpu.mig_mode_current, gpu.mig_mode_pending) == (False, False)
    assert [p.pid for p in gpu.processes] == [7002]


def test_a_change_while_the_prompt_waits_that_leaves_the_plan_as_confirmed_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0,)))

    def start_on_gpu_1(edited: dict[str, Any]) -> None:  # not a target GPU: the plan is the same
        edited["gpus"][1]["processes"].append({"pid": 7003, "name": "python", "used_memory_mib": 1000})

    started_while_waiting(monkeypatch, fleet, start_on_gpu_1)
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "3g,3g", "--apply") == 0
    assert [gi.placement_start for gi in read(fleet).gpu(0).gpu_instances] == [0, 4]


def test_the_mig_parted_config_written_reproduces_the_layout_on_another_host(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    fleet = write_fleet(first, incident_document(without_processes_on=(0, 1)))
    assert (
        remediate(
            first,
            fleet,
            "--gpu",
            "0,1",
            "--layout",
            "4g,2g,1g",
            "--apply",
            "--output-dir",
            str(first / "out"),
        )
        == 0
    )
    other = write_fleet(second, incident_document(without_processes_on=(0, 1)))
    config = str(first / "out" / "mig-parted.yaml")
    assert (
        remediate(
            second,
            other,
            "--mig-parted-config",
            config,
            "--config",
            "custom-1x4g.40gb_1x2g.20gb_1x1g.10gb",
            "--apply",
        )
        == 0
    )
    layouts = [[(gi.profile, gi.placement_start) for gi in g.gpu_instances] for g in read(other).gpus]
    assert layouts == [[(gi.profile, gi.placement_start) for gi in g.gpu_instances] for g in read(fleet).gpus]
    assert layouts[0] == [("4g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)]


def test_no_gpu_listed_is_an_error_not_nothing_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = incident_document(without_processes_on=(0,))
    document["faults"] = [{"call": "nvmlDeviceGetCount_v2", "error": "UNKNOWN"}]
    fleet = write_fleet(tmp_path, document)
    assert remediate(tmp_path, fleet, "--gpu", "all", "--layout", "3g", "--apply", "--yes") == 2
    captured = capsys.readouterr()
    assert "NVML lists no GPU on this host (nvmlDeviceGetCount: Unknown Error)" in captured.err
    assert "Nothing to do" not in captured.out


@pytest.mark.parametrize("call", ["nvmlDeviceGetCount_v2", "nvmlSystemGetNVMLVersion"])
def test_gpu_is_lost_from_a_system_call_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], call: str
) -> None:
    # issue 11: it escaped as a traceback and exit 1 (which means "declined").
    document = incident_document(without_processes_on=(0,))
    document["faults"] = [{"call": call, "error": "GPU_IS_LOST"}]
    fleet = write_fleet(tmp_path, document)
    before = fleet.read_bytes()
    assert remediate(tmp_path, fleet, "--gpu", "0", "--layout", "7g", "--apply", "--yes") == 2
    err = capsys.readouterr().err
    assert f"NVML could not be read ({call.removesuffix('_v2')}: GPU is lost)" in err
    assert len(err.splitlines()) == 1 and fleet.read_bytes() == before


@pytest.mark.parametrize("output_dir", ["a-file/sub", "/proc/no-such-dir"])
def test_an_unusable_output_dir_is_refused_before_any_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output_dir: str
) -> None:
    (tmp_path / "a-file").write_text("")
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0,)))
    before = fleet.read_bytes()
    directory = str(tmp_path / output_dir)  # an absolute output_dir stays as it is
    status = remediate(tmp_path, fleet, "--gpu", "0", "--layout", "7g", "--apply", "--output-dir", directory)
    assert status == 2
    assert f"--output-dir {directory}: " in capsys.readouterr().err
    assert fleet.read_bytes() == before


def test_a_fleet_file_keeps_its_journal_and_lock_beside_it(tmp_path: Path) -> None:
    """A drill on a simulated fleet never writes the real host's journal or takes its lock: without
    --journal and --lock, both default to files beside the fleet file."""
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0,)))
    assert main(["remediate", "--fleet", str(fleet), "--gpu", "0", "--layout", "3g,3g", "--apply"]) == 0
    journal = tmp_path / "fleet.yaml.journal.jsonl"
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert entries[0]["event"] == "run-start" and entries[-1]["event"] == "run-end"
    from mig_exporter.remediate.command import default_lock
    assert default_lock(str(fleet)) == (tmp_path / "fleet.yaml.lock").resolve()
    assert not (tmp_path / "fleet.yaml.lock").exists()  # removed on release (lock.py says why)


def test_compute_instance_profiles_from_mig_parted_are_created_verified_and_idempotent(
    tmp_path: Path,
) -> None:
    # mig-parted's "1c.3g.40gb": a 3g.40gb GPU instance with a 1-slice compute instance inside
    # (mig-facts.md, Compute instances: a 3g takes 1, 2 or 3 slices).
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0, 1)))
    config = tmp_path / "config.yaml"
    config.write_text('version: v1\nmig-configs:\n  split:\n    - devices: [0]\n      mig-enabled: true\n'
                      '      mig-devices: {"1c.3g.40gb": 1, "3g.40gb": 1}\n')
    args = ("--mig-parted-config", str(config), "--config", "split", "--apply")
    assert remediate(tmp_path, fleet, *args) == 0
    devices = sorted(m.profile for m in read(fleet).gpus[0].mig_instances)
    assert devices == ["1c.3g.40gb", "3g.40gb"]
    journal, before = tmp_path / "journal.jsonl", fleet.read_bytes()
    journaled = journal.read_text()
    assert remediate(tmp_path, fleet, *args) == 0  # the same config again changes nothing
    assert journal.read_text() == journaled and fleet.read_bytes() == before


@pytest.mark.parametrize("flag", ["--output-dir", "--journal", "--lock"])
def test_an_empty_path_is_refused_not_taken_as_the_current_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, flag: str,
) -> None:
    """Issue 11 item 7: ``--output-dir ""`` (an unset shell variable) wrote the artifacts into the
    current directory; an empty --journal or --lock is the same slip."""
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0,)))
    before = fleet.read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    status = main(["remediate", "--fleet", str(fleet), "--gpu", "0", "--layout", "7g", "--apply", "--yes",
                   flag, ""])
    assert status == 2
    err = capsys.readouterr().err
    assert err == f"mig-exporter remediate: error: {flag}: empty; give a path (. is the current directory)\n"
    assert fleet.read_bytes() == before and list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.yaml", "work"]


@pytest.mark.parametrize(("given", "does"), [
    (["--output-dir", "out"], "--output-dir writes the artifacts of an applied layout (its MIG UUIDs exist "
                              "only after the apply)"),
    (["--yes"], "--yes confirms the changes of --apply"),
    (["--reset"], "--reset resets GPUs as a step of --apply"),
    (["--journal", "j.jsonl"], "--journal records the changes of --apply"),
    (["--lock", "l.lock"], "--lock is the lock --apply takes"),
    (["--kubernetes.mig-strategy", "single"], "--kubernetes.mig-strategy names the resources in the "
                                              "artifacts of --apply"),
])
def test_an_apply_only_flag_without_apply_is_refused_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    given: list[str], does: str,
) -> None:
    """Issue 11 item 7: ``--output-dir`` without ``--apply`` was silently ignored, so the operator
    waited for files that never came (and could not come: the MIG UUIDs they name exist only after
    the apply). Every flag that only shapes what --apply does is refused alike, in one line."""
    monkeypatch.chdir(tmp_path)
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0,)))
    before = fleet.read_bytes()
    status = main(["remediate", "--fleet", str(fleet), "--gpu", "0", "--layout", "7g", *given])
    assert status == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"mig-exporter remediate: error: {does}; it needs --apply (without it remediate only " \
                  "prints the plan)\n"
    assert fleet.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["fleet.yaml"]
    # with --apply the same flag is taken
    assert main(["remediate", "--fleet", str(fleet), "--gpu", "0", "--layout", "7g", "--apply", *given,
                 *([] if "--yes" in given else ["--yes"])]) == 0
