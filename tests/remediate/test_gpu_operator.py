"""remediate where the NVIDIA GPU Operator owns MIG: detection, the merged ConfigMap, the labels,
and never a MIG change. Real CLI, reader and simulator; the ConfigMap as kubectl prints it."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from mig_exporter.cli import main
from mig_exporter.remediate import migparted
from mig_exporter.remediate.layout import mig_parted_targets
from mig_exporter.remediate.operator import detect, mig_manager_pids

from .fleets import incident_document, read, write_fleet

# The GPU Operator's default ConfigMap, as `kubectl get configmap -o yaml` prints it (abridged):
# its own configs must all survive the merge.
OPERATOR_CONFIG_MAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: default-mig-parted-config
  namespace: gpu-operator
  resourceVersion: "4711"
  uid: 0b1c2d3e
data:
  config.yaml: |
    version: v1
    mig-configs:
      all-disabled:
        - devices: all
          mig-enabled: false
      all-enabled:
        - devices: all
          mig-enabled: true
          mig-devices: {}
      all-1g.10gb:
        - devices: all
          mig-enabled: true
          mig-devices:
            "1g.10gb": 7
      all-balanced:
        - device-filter: ["0x20B010DE", "0x20B110DE", "0x20F110DE", "0x20F610DE"]
          devices: all
          mig-enabled: true
          mig-devices:
            "1g.5gb": 2
            "2g.10gb": 1
            "3g.20gb": 1
"""
OPERATOR_CONFIGS = {"all-disabled", "all-enabled", "all-1g.10gb", "all-balanced"}


def run_cli(*arguments: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        status = main(list(arguments))
    return status, out.getvalue()


def refused(capsys: pytest.CaptureFixture[str], *arguments: str) -> str:
    """The one-line error of a refused command (exit 2)."""
    capsys.readouterr()
    assert run_cli(*arguments)[0] == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    return error


def diagnose_json(directory: Path, name: str, document: dict[str, Any]) -> Path:
    fleet = write_fleet(directory, document, name=f"{name}.yaml")
    status, out = run_cli("diagnose", "--fleet", str(fleet), "--format", "json")
    assert status == 1  # the incident: problems found
    path = directory / f"{name}.json"
    path.write_text(out)
    return path


def smaller_processes() -> dict[str, Any]:
    """The incident with processes a quarter of the size: diagnose advises another layout."""
    document = incident_document()
    for gpu in document["gpus"]:
        for process in gpu.get("processes", []):
            process["used_memory_mib"] //= 4
        gpu.pop("memory_used_mib", None)
    return document


def merged_configs(out_dir: Path) -> dict[str, Any]:
    config_map = yaml.safe_load((out_dir / "mig-parted-configmap.yaml").read_text())
    assert config_map["kind"] == "ConfigMap" and config_map["metadata"]["namespace"] == "gpu-operator"
    return yaml.safe_load(config_map["data"]["config.yaml"])


def test_three_nodes_two_layouts_are_two_configs_merged_with_the_operators(tmp_path: Path) -> None:
    operator_config = tmp_path / "cm.yaml"
    operator_config.write_text(OPERATOR_CONFIG_MAP)
    nodes = {"gpu-node-1": diagnose_json(tmp_path, "one", incident_document()),
             "gpu-node-2": diagnose_json(tmp_path, "two", incident_document()),
             "gpu-node-3": diagnose_json(tmp_path, "three", smaller_processes())}
    advised = {node: json.loads(path.read_text())["advice"]["layouts"][0]["layout"]
               for node, path in nodes.items()}
    assert advised["gpu-node-1"] == advised["gpu-node-2"] != advised["gpu-node-3"]
    out_dir = tmp_path / "out"
    status, out = run_cli("remediate", "--from-diagnose", *(f"{n}={p}" for n, p in nodes.items()),
                          "--gpu-operator.config", str(operator_config), "--output-dir", str(out_dir),
                          "--format", "json")
    assert status == 0
    document = json.loads(out)["gpu_operator"]
    assert document["changed"] is False
    document_configs = merged_configs(out_dir)
    # every config that was there, and exactly one more per distinct layout
    added = set(document_configs["mig-configs"]) - OPERATOR_CONFIGS
    assert set(document_configs["mig-configs"]) >= OPERATOR_CONFIGS and len(added) == 2
    # each one valid by mig-parted's v1 rules, and each added one makes sense on the nodes' GPUs
    parsed = migparted.parse_document(document_configs, "merged")
    original = yaml.safe_load(yaml.safe_load(OPERATOR_CONFIG_MAP)["data"]["config.yaml"])
    assert parsed["all-balanced"] == migparted.parse_document(original, "original")["all-balanced"]
    config_of = {node["node"]: node["config"] for node in document["nodes"]}
    assert config_of["gpu-node-1"] == config_of["gpu-node-2"] != config_of["gpu-node-3"]
    assert set(config_of.values()) == added
    snapshot_file = write_fleet(tmp_path, incident_document(), name="hardware.yaml")  # the nodes' GPUs
    config_path = tmp_path / "merged.yaml"
    config_path.write_text(yaml.safe_dump(document_configs))
    for node, name in config_of.items():
        targets = mig_parted_targets(str(config_path), name, read(snapshot_file))
        by_gpu = {t.gpu_index: t for t in targets}
        assert sorted(by_gpu[0].devices) == sorted(advised[node])
        assert [by_gpu[i].mig_enabled for i in (1, 2, 3)] == [False, False, False]
    # the label commands: one per config, naming the right nodes
    labels = [c for c in document["commands"] if c.startswith("kubectl label node")]
    assert sorted(labels) == sorted([
        "kubectl label node gpu-node-1 gpu-node-2 "
        f"nvidia.com/mig.config={config_of['gpu-node-1']} --overwrite",
        f"kubectl label node gpu-node-3 nvidia.com/mig.config={config_of['gpu-node-3']} --overwrite",
    ])
    assert document["commands"][-1] == ("kubectl get node gpu-node-1 gpu-node-2 gpu-node-3 "
                                        "-L nvidia.com/mig.config "
                                        "-L nvidia.com/mig.config.state --watch")
    # the Operator's own ConfigMap is not edited (it reconciles it): a ConfigMap of ours, pointed at once
    assert document["commands"][0] == f"kubectl apply -f {out_dir / 'mig-parted-configmap.yaml'}"
    patch = document["commands"][1]
    assert patch.startswith("kubectl patch clusterpolicies")
    assert '"name":"mig-exporter-mig-parted-config"' in patch
    assert {b["node"] for b in document["busy"]} == set(nodes)  # the incident's PIDs are in the way


def test_a_second_run_merges_into_the_config_map_it_wrote(tmp_path: Path) -> None:
    operator_config = tmp_path / "cm.yaml"
    operator_config.write_text(OPERATOR_CONFIG_MAP)
    first = diagnose_json(tmp_path, "one", incident_document())
    status, _ = run_cli("remediate", "--from-diagnose", f"gpu-node-1={first}", "--gpu-operator.config",
                        str(operator_config), "--output-dir", str(tmp_path / "a"))
    assert status == 0
    ours = tmp_path / "a" / "mig-parted-configmap.yaml"
    third = diagnose_json(tmp_path, "three", smaller_processes())
    status, out = run_cli("remediate", "--from-diagnose", f"gpu-node-3={third}", "--gpu-operator.config",
                          str(ours), "--output-dir", str(tmp_path / "b"))
    assert status == 0
    before, after = (set(merged_configs(tmp_path / d)["mig-configs"]) for d in ("a", "b"))
    assert before > OPERATOR_CONFIGS and after > before and len(after - OPERATOR_CONFIGS) == 2
    assert "kubectl patch" not in out  # already pointed at ours: updated in place


def test_on_an_operator_node_nothing_changes_even_with_apply(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path, incident_document(without_processes_on=(0,)))
    before = fleet.read_bytes()
    labels = tmp_path / "node.json"
    labels.write_text(json.dumps({"kind": "Node", "metadata": {"name": "gpu-node-1", "labels": {
        "nvidia.com/mig.config": "all-disabled", "nvidia.com/mig.config.state": "success"}}}))
    status, out = run_cli("remediate", "--fleet", str(fleet), "--gpu", "0", "--layout", "3g,3g", "--apply",
                          "--kubernetes.node-labels", str(labels), "--kubernetes.node", "gpu-node-1",
                          "--journal", str(tmp_path / "journal.jsonl"), "--lock", str(tmp_path / "lock"))
    assert status == 0
    assert "managed by the NVIDIA GPU Operator (node label nvidia.com/mig.config=all-disabled)" in out
    assert "mig-exporter changes no MIG setting itself (--apply changes nothing here)" in out
    assert "kubectl label node gpu-node-1 nvidia.com/mig.config=mig-exporter-2x3g.40gb-off-" in out
    assert fleet.read_bytes() == before and not (tmp_path / "journal.jsonl").exists()
    # --gpu-operator off: the same command partitions the GPU itself
    assert run_cli("remediate", "--fleet", str(fleet), "--gpu", "0", "--layout", "3g,3g", "--apply",
                   "--gpu-operator", "off", "--journal", str(tmp_path / "journal.jsonl"),
                   "--lock", str(tmp_path / "lock"))[0] == 0
    assert [gi.profile for gi in read(fleet).gpus[0].gpu_instances] == ["3g.40gb", "3g.40gb"]


def test_writing_artifacts_needs_the_clusters_config_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    error = refused(capsys, "remediate", "--fleet", "seed-incident", "--gpu", "0", "--layout", "3g,3g",
                    "--gpu-operator", "on", "--output-dir", str(tmp_path / "out"))
    assert re.search(r"--output-dir: .* give --gpu-operator.config FILE from `kubectl get configmap -n "
                     r"gpu-operator default-mig-parted-config -o yaml`", error)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("content", "message"), [
    ("kind: ConfigMap\nmetadata: {name: x}\ndata: {other: 'a: 1'}\n",
     "expected one data key holding a mig-parted"),
    ("kind: ConfigMap\nmetadata: {name: x}\ndata:\n  config.yaml: |\n    version: v1\n    mig-configs:\n"
     "      bad: [{devices: all, mig-enabled: true, mig-devices: {'3g.40gb+2me': 1}}]\n",
     r"data.config.yaml: mig-configs.bad\[0\].mig-devices: 3g.40gb\+2me: not a MIG profile name"),
])
def test_a_bad_config_map_is_refused_with_the_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str,
) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text(content)
    error = refused(capsys, "remediate", "--fleet", "seed-incident", "--gpu", "0", "--layout", "3g,3g",
                    "--gpu-operator", "on", "--gpu-operator.config", str(path),
                    "--output-dir", str(tmp_path / "out"))
    assert re.search(message, error) and str(path) in error
    assert not (tmp_path / "out").exists()


def test_a_config_of_that_name_with_other_content_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    diagnosed = diagnose_json(tmp_path, "one", incident_document())
    status, out = run_cli("remediate", "--from-diagnose", str(diagnosed), "--format", "json")
    assert status == 0
    name = json.loads(out)["gpu_operator"]["nodes"][0]["config"]
    assert json.loads(out)["gpu_operator"]["nodes"][0]["node"] == "one"  # the file's name
    clash = tmp_path / "clash.yaml"
    clash.write_text(f"version: v1\nmig-configs:\n  {name}: [{{devices: all, mig-enabled: false}}]\n")
    error = refused(capsys, "remediate", "--from-diagnose", str(diagnosed),
                    "--gpu-operator.config", str(clash))
    assert f"config {name} already exists with other content" in error


def test_advised_layouts_alone_are_enough(tmp_path: Path) -> None:
    advice = json.loads(diagnose_json(tmp_path, "full", incident_document()).read_text())["advice"]
    only = tmp_path / "gpu-node-7.json"
    only.write_text(json.dumps({"layouts": advice["layouts"]}))
    status, out = run_cli("remediate", "--from-diagnose", str(only), "--format", "json")
    assert status == 0
    (node,) = json.loads(out)["gpu_operator"]["nodes"]
    assert node["node"] == "gpu-node-7"
    assert node["gpus"] == [{"index": 0, "mig_enabled": True, "devices": ["3g.40gb", "3g.40gb"]}]
    assert node["config"].startswith("mig-exporter-2x3g.40gb-")


def test_diagnose_json_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "gpus": [{"index": "zero"}]}')
    assert "bad.json: gpus[0].index: expected an integer, got 'zero'" in refused(
        capsys, "remediate", "--from-diagnose", str(bad))
    assert "--from-diagnose: --gpu does not apply" in refused(
        capsys, "remediate", "--from-diagnose", str(bad), "--gpu", "0")


@pytest.fixture
def mig_manager(tmp_path: Path) -> Iterator[int]:
    """A process named like the GPU Operator's MIG manager (a copy of sleep), stopped afterwards."""
    binary = tmp_path / "nvidia-mig-manager"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    process = subprocess.Popen([str(binary), "60"])
    try:
        deadline = time.monotonic() + 10
        while process.pid not in mig_manager_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield process.pid
    finally:
        process.terminate()
        process.wait()


def test_a_running_mig_manager_is_detected(mig_manager: int) -> None:
    assert psutil.Process(mig_manager).name() == "nvidia-mig-manager"
    assert mig_manager in mig_manager_pids()
    found = detect("auto", None, mig_manager_pids())
    assert found.managed and "nvidia-mig-manager runs on this host" in found.reason
    assert not detect("off", {"nvidia.com/mig.config": "all-disabled"}, (mig_manager,)).managed
    assert not detect("auto", {"kubernetes.io/hostname": "n1"}, ()).managed
