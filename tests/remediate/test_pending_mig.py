"""Issue 11 item 8: diagnose and remediate disagreed on what a Hopper pending-enable needs. Both now
ask ``pending_mig.pending_mig_change`` and print its clause; mig-facts.md: on Ampere a reset (or a
reboot) applies a pending enable, on Hopper and later enabling MIG again on the idle GPU does, with
no reset, and a reboot ends with MIG off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mig_exporter.cli import main

from .fleets import read, remediate, write_fleet

AMPERE = "a GPU reset or a reboot applies it"
HOPPER = ("on Hopper and later, enabling MIG again once the GPU is idle applies it with no reset; a reboot "
          "would end with MIG off")
LAYOUT = ("--gpu", "0", "--layout", "3g,3g")


def pending_fleet(directory: Path, model: str) -> Path:
    """A GPU whose MIG enable stayed pending because nvidia-persistenced held it."""
    return write_fleet(directory, {"gpus": [{"model": model, "mig": "pending-enable",
                                             "held_by": ["nvidia-persistenced"]}]})


def diagnosed(fleet: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["diagnose", "--fleet", str(fleet), "--format", "json"]) == 1
    (finding,) = [f for f in json.loads(capsys.readouterr().out)["findings"] if f["kind"] == "mig_pending"]
    return finding


def release(fleet: Path) -> None:
    """nvidia-persistenced stopped: nothing holds the GPU any more."""
    document = yaml.safe_load(fleet.read_text())
    del document["gpus"][0]["held_by"]
    fleet.write_text(yaml.safe_dump(document))


@pytest.mark.parametrize(("model", "clause", "last_command", "rerun"), [
    ("A100-SXM4-80GB", AMPERE, "sudo nvidia-smi -r -i 0",
     "--apply --reset; or reboot and run the same command."),
    ("H100-SXM5-80GB", HOPPER, "sudo nvidia-smi -i 0 -mig 1", "then run the same command again: "),
])
def test_diagnose_and_remediate_say_the_same_of_a_pending_enable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    model: str, clause: str, last_command: str, rerun: str,
) -> None:
    fleet = pending_fleet(tmp_path, model)
    finding = diagnosed(fleet, capsys)
    assert finding["meaning"].endswith(f"for now: {clause}.")
    assert finding["next_steps"][-1]["command"] == last_command
    assert remediate(tmp_path, fleet, *LAYOUT, "--apply") == 4
    (advice,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("To finish GPU 0")]
    assert advice.startswith(f"To finish GPU 0 ({clause}): stop what holds it")
    assert rerun in advice
    assert ("--reset" in advice) == (model == "A100-SXM4-80GB")


def test_on_hopper_the_same_command_without_a_reset_finishes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """What both commands promise on Hopper holds: once idle, the same command, without --reset,
    enables MIG and creates the layout."""
    fleet = pending_fleet(tmp_path, "H100-SXM5-80GB")
    assert remediate(tmp_path, fleet, *LAYOUT, "--apply") == 4
    release(fleet)
    assert remediate(tmp_path, fleet, *LAYOUT, "--apply") == 0
    assert "Verified by reading NVML again: GPU 0 as planned." in capsys.readouterr().out
    gpu = read(fleet).gpu(0)
    assert gpu.mig_enabled and [gi.profile for gi in gpu.gpu_instances] == ["3g.40gb", "3g.40gb"]


def test_on_ampere_the_advised_reset_finishes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = pending_fleet(tmp_path, "A100-SXM4-80GB")
    assert remediate(tmp_path, fleet, *LAYOUT, "--apply") == 4
    release(fleet)
    assert remediate(tmp_path, fleet, *LAYOUT, "--apply", "--reset") == 0
    gpu = read(fleet).gpu(0)
    assert gpu.mig_enabled and [gi.profile for gi in gpu.gpu_instances] == ["3g.40gb", "3g.40gb"]
