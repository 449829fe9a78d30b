"""Targets from --gpu/--layout and from mig-parted configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from simulated_gpus import capability

from mig_exporter.errors import InputError
from mig_exporter.model import Gpu
from mig_exporter.remediate.layout import layout_targets, mig_parted_targets, select_gpus
from mig_exporter.remediate.plan import make_plan
from mig_exporter.remediate.steps import CreateComputeInstance

from .builders import gpu, snapshot

MIXED = snapshot(gpu(0), gpu(1), gpu(2, model="H100-SXM5-80GB"), gpu(3, model="A30"))


def test_select_gpus_by_index_uuid_and_all() -> None:
    assert select_gpus("all", MIXED) == (0, 1, 2, 3)
    assert select_gpus("1,0", MIXED) == (0, 1)
    assert select_gpus("GPU-2, 0", MIXED) == (0, 2)
    assert select_gpus("gpu-3", MIXED) == (3,)


def test_select_unknown_gpu_names_the_flag_and_the_choices() -> None:
    with pytest.raises(InputError, match=r"--gpu 0,7: no GPU '7' on this host \(indices: 0, 1, 2, 3"):
        select_gpus("0,7", MIXED)


def test_names_resolve_per_model_by_slices_and_memory_class() -> None:
    targets = layout_targets("0,2", "3g", MIXED)
    assert [(t.gpu_index, [p.name for p in t.profiles]) for t in targets] == [
        (0, ["3g.40gb"]),
        (2, ["3g.40gb"]),
    ]
    assert targets[0].profiles[0].memory_mib == 40192 and targets[1].profiles[0].memory_mib == 40448


def test_a_profile_the_model_lacks_is_an_input_error() -> None:
    # A30 has no 3-slice profile: the message lists what it has.
    with pytest.raises(
        InputError, match=r"--layout 3g: unknown profile '3g' for GPU 3 \(NVIDIA A30\): NVML lists 1g.6gb"
    ):
        layout_targets("3", "3g", MIXED)


def test_driver_drift_in_names_still_matches() -> None:
    (target,) = layout_targets("0", "3g.39gb,1g.10gb", MIXED)
    assert [p.name for p in target.profiles] == ["3g.40gb", "1g.10gb"]


def test_unknown_profile_and_compute_profiles_are_refused() -> None:
    with pytest.raises(InputError, match=r"unknown profile '5g.40gb' for GPU 0 \(NVIDIA A100-SXM4-80GB\)"):
        layout_targets("0", "3g.40gb,5g.40gb", MIXED)
    with pytest.raises(InputError, match=r"'4c.3g.40gb': .* compute instances of 1, 2, 3 slices, not 4"):
        layout_targets("0", "4c.3g.40gb", MIXED)
    with pytest.raises(InputError, match="empty profile name"):
        layout_targets("0", "3g,,3g", MIXED)


def test_a_gpu_without_mig_gets_a_target_without_model() -> None:
    no_mig = Gpu(index=0, uuid="GPU-0", name="NVIDIA L4", mig_mode_current=None)
    (target,) = layout_targets("0", "3g", snapshot(no_mig))
    assert target.capability is None and target.profiles == ()


CONFIG = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  a100-balanced:
    - device-filter: ["0x20B210DE", "0x20B510DE"]
      devices: all
      mig-enabled: true
      mig-devices:
        "3g.40gb": 1
        "2g.20gb": 1
        "1g.10gb": 1
  first-two:
    - devices: [0, 1]
      mig-enabled: true
      mig-devices: {"3g.40gb": 2}
  overlapping:
    - devices: [0]
      mig-enabled: false
    - devices: all
      mig-enabled: false
  compute:
    - devices: [0, 2]
      mig-enabled: true
      mig-devices: {"1c.3g.40gb": 1, "3g.40gb": 1}
"""


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return str(path)


def test_mig_parted_device_filter_selects_by_pci_id(config: str) -> None:
    targets = mig_parted_targets(config, "a100-balanced", MIXED)
    assert [t.gpu_index for t in targets] == [0, 1]  # the H100 and the A30 are filtered out
    assert [p.name for p in targets[0].profiles] == ["3g.40gb", "2g.20gb", "1g.10gb"]
    assert targets[0].capability == capability("A100-SXM4-80GB")


def test_mig_parted_devices_and_disabled(config: str) -> None:
    assert [(t.gpu_index, len(t.profiles)) for t in mig_parted_targets(config, "first-two", MIXED)] == [
        (0, 2),
        (1, 2),
    ]
    disabled = mig_parted_targets(config, "all-disabled", MIXED)
    assert [(t.gpu_index, t.mig_enabled, t.layout) for t in disabled] == [
        (i, False, "MIG disabled") for i in range(4)
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing", r"no config 'missing' \(configs: all-disabled, a100-balanced"),
        ("overlapping", r"mig-configs.overlapping\[1\]: GPU 0 is already selected by entry 0"),
    ],
)
def test_mig_parted_errors_name_the_file_and_the_place(config: str, name: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as raised:
        mig_parted_targets(config, name, MIXED)
    assert str(raised.value).startswith(config)


def test_compute_instance_profiles_are_accepted_as_mig_parted_accepts_them(config: str) -> None:
    # mig-parted's "1c.3g.40gb": a 3g.40gb GPU instance holding one 1-slice compute instance
    # (mig-facts.md, Compute instances: a 3g takes 1, 2 or 3).
    targets = mig_parted_targets(config, "compute", MIXED)
    assert targets[0].devices == ("1c.3g.40gb", "3g.40gb")
    assert [p.name for p in targets[0].profiles] == ["3g.40gb", "3g.40gb"]
    assert targets[0].compute_slices == (1, 3)
    assert targets[1].devices == ("1c.3g.40gb", "3g.40gb")  # GPU 2, the H100's own 3g.40gb
    assert targets[1].profiles[0].memory_mib == 40448
    plan = make_plan(MIXED, targets[:1], privileged=True, persistence=False)
    computes = [s for s in plan.steps if isinstance(s, CreateComputeInstance)]
    assert sorted(s.slices for s in computes) == [1, 3]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('{devices: all, mig-enabled: true, mig-devices: {"5c.7g.80gb": 1}}',
         r"mig-configs.x\[0\].mig-devices: 5c.7g.80gb: 5 is not a compute instance slice count"),
        ('{devices: all, mig-enabled: true, mig-devices: {"4c.3g.40gb": 1}}',
         r"4c.3g.40gb: a 4-slice compute instance does not fit a 3-slice GPU instance"),
        ('{devices: all, mig-enabled: true, mig-devices: {"3g.40gb+me,me": 1}}', "not a MIG profile name"),
        ('{devices: all, mig-enabled: true, mig-devices: {"3g.40gb": -1}}', "expected a count of 0 or more"),
        ("{devices: all, migenabled: true, mig-enabled: true, mig-devices: {}}",
         r"mig-configs.x\[0\]: unexpected field migenabled"),
        ('{devices: all, mig-enabled: false, mig-devices: {"3g.40gb": 1}}',
         "MIG devices given while mig-enabled is false"),
        ("{devices: all, mig-enabled: true}", "mig-devices: required when mig-enabled is true"),
        ("{mig-enabled: false}", "missing required field devices"),
        ("{devices: first, mig-enabled: false}", "devices: expected all or a list of GPU indices"),
        ('{device-filter: "H100", devices: all, mig-enabled: false}', "'H100' is not a PCI ID"),
    ],
)
def test_what_mig_parted_refuses_is_refused_with_the_place(tmp_path: Path, entry: str, message: str) -> None:
    # the rules of mig-parted's api/spec/v1 (MigConfigSpec.UnmarshalJSON) and pkg/types (ParseMigProfile)
    path = tmp_path / "bad.yaml"
    path.write_text(f"version: v1\nmig-configs:\n  x:\n    - {entry}\n")
    with pytest.raises(InputError, match=message) as raised:
        mig_parted_targets(str(path), "x", MIXED)
    assert str(raised.value).startswith(str(path))


def test_a_file_mig_parted_refuses_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: v1\nmig-configs:\n  good: [{devices: all, mig-enabled: false}]\n  empty: []\n")
    with pytest.raises(InputError, match=r"mig-configs.empty: expected a list of at least one entry"):
        mig_parted_targets(str(path), "good", MIXED)
    path.write_text("version: v2\nmig-configs: {}\n")
    with pytest.raises(InputError, match="version: 'v2' is not v1"):
        mig_parted_targets(str(path), "good", MIXED)


def test_mig_parted_filter_that_selects_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h200.yaml"
    path.write_text(
        'version: v1\nmig-configs:\n  h200:\n    - device-filter: "0x233510DE"\n'
        '      devices: all\n      mig-enabled: true\n      mig-devices: {"3g.71gb": 2}\n'
    )
    with pytest.raises(InputError, match="config 'h200' selects no GPU on this host"):
        mig_parted_targets(str(path), "h200", MIXED)


def test_not_a_mig_parted_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("gpus: []\n")
    with pytest.raises(InputError, match="not a mig-parted config"):
        mig_parted_targets(str(path), "x", MIXED)
    with pytest.raises(InputError, match=r"--mig-parted-config .*missing\.yaml: No such file"):
        mig_parted_targets(str(tmp_path / "missing.yaml"), "x", MIXED)
