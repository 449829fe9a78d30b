"""``diagnose`` advice and ``remediate`` plan, apply and verify on a GPU model the code has never
heard of: X100-TEST, defined in the fleet file with profile IDs (31/42/53/61/71), sizes and
placements unlike any built-in model (issue 8, "Tests that must exist"). The product knows it only
through NVML."""

from __future__ import annotations

import io
import json
import shlex
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import yaml
from sim.fleet_defined_model import X100_FLEET

from mig_exporter.cli import main
from mig_exporter.model import MIB
from mig_exporter.sim import load_fleet

from .fleets import read, remediate


def x100(directory: Path, drop_processes_of: tuple[int, ...] = ()) -> Path:
    document: dict[str, Any] = yaml.safe_load(X100_FLEET)
    for index in drop_processes_of:
        document["gpus"][index].pop("processes")
    path = directory / "x100.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def diagnose_json(fleet: Path) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with redirect_stdout(out):
        status = main(["diagnose", "--fleet", str(fleet), "--format", "json"])
    return status, json.loads(out.getvalue())


def test_diagnose_advises_the_defined_models_own_profiles(tmp_path: Path) -> None:
    """GPU 2 is shared by 20000 and 30000 MiB without MIG. With the advice's 20% headroom they need
    24000 and 36000 MiB: the file's 2g.24gb (23808 MiB) is too small for either, so both get the
    4g.48gb (47872 MiB), and two of those fit (placements 0 and 4)."""
    status, report = diagnose_json(x100(tmp_path))
    assert status == 1
    advice = report["advice"]
    assert [(w["pid"], w["gpu_index"], w["profile"]) for w in advice["workloads"]] == [
        (6001, 2, "4g.48gb"), (6002, 2, "4g.48gb")]
    assert advice["layouts"] == [
        {"gpu_index": 2, "model": "NVIDIA X100 Test", "layout": ["4g.48gb", "4g.48gb"]}]


def test_the_advice_applies_and_verifies_once_the_processes_are_stopped(
        tmp_path: Path, monkeypatch: Any) -> None:
    """The remediate command diagnose prints, run as printed (plus --apply) on the same file."""
    monkeypatch.chdir(tmp_path)
    x100(tmp_path)
    _, report = diagnose_json(Path("x100.yaml"))
    (step,) = report["advice"]["remediate"]
    fleet = x100(tmp_path, drop_processes_of=(2,))
    args = shlex.split(step["command"])[1:]
    assert args == ["remediate", "--fleet", "x100.yaml", "--gpu", "2", "--layout", "4g.48gb,4g.48gb"]
    state = ["--journal", "journal.jsonl", "--lock", "remediate.lock"]
    with redirect_stdout(io.StringIO()) as out:
        assert main([*args, *state, "--apply", "--yes"]) == 0
    assert "Verified by reading NVML again: GPU 2 as planned." in out.getvalue()
    gpu = read(fleet).gpu(2)
    assert gpu.mig_mode_current  # Hopper: enabled without a reset
    # mig-facts.md "GPU instance IDs follow the placement": on 8 slices, 4g@0 → 1 and 4g@4 → 2
    assert [(gi.gpu_instance_id, gi.placement_start, gi.profile) for gi in gpu.gpu_instances] == [
        (1, 0, "4g.48gb"), (2, 4, "4g.48gb")]


def test_remediate_applies_a_mixed_layout_with_the_files_ids_and_placements(
        tmp_path: Path, capsys: Any) -> None:
    fleet = x100(tmp_path)
    layout = ("--gpu", "1", "--layout", "4g.48gb,2g.24gb,1g.12gb,1g+gfx")
    assert remediate(tmp_path, fleet, *layout) == 0  # the plan alone changes nothing
    assert load_fleet(str(fleet)).gpus[1].instances == ()
    assert remediate(tmp_path, fleet, *layout, "--apply", "--yes") == 0
    out = capsys.readouterr().out
    assert "Verified by reading NVML again: GPU 1 as planned." in out
    gpu = read(fleet).gpu(1)
    # IDs by placement on 8 slices: 1g@k → 7+k, 2g@2 → 4, 4g@4 → 2 (mig-facts.md); the profile
    # IDs the driver took are the file's own
    assert [(gi.gpu_instance_id, gi.placement_start, gi.profile) for gi in gpu.gpu_instances] == [
        (2, 4, "4g.48gb"), (4, 2, "2g.24gb"), (7, 0, "1g.12gb+gfx"), (8, 1, "1g.12gb")]
    assert {gi.profile_id for gi in load_fleet(str(fleet)).gpus[1].instances} == {53, 42, 71, 31}
    assert sorted((m.profile, m.memory_total_bytes) for m in gpu.mig_instances) == [
        ("1g.12gb", 11776 * MIB), ("1g.12gb+gfx", 11776 * MIB), ("2g.24gb", 23808 * MIB),
        ("4g.48gb", 47872 * MIB)]
    assert "models:\n  X100-TEST:" in fleet.read_text()  # written back with its model
    assert remediate(tmp_path, fleet, *layout, "--apply", "--yes") == 0
    assert "Nothing to do: the GPUs already have this layout." in capsys.readouterr().out
