"""diagnose on a Kubernetes node: a real gRPC server speaking the kubelet's pod-resources API on a
unix socket says which pod holds the GPU; diagnose names it for each process and advises changing
the pod's resource instead of restarting the process by hand, unless the GPU is used from two pods
(one of them around the device plugin), where it cannot tell which process is the pod's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from kubelet.kubelet_server import FakeKubelet, KubeletServer, pod

from mig_exporter.cli import main
from mig_exporter.host import nvml_session
from mig_exporter.nvml.read import read_snapshot

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "diagnose.schema.json").read_text())
POD_A = "0c5ae2f1-3b7e-4d1c-9a51-5b0f6d2e8a11"
POD_B = "7f0d3c2e-9e4a-4b8f-8c55-1d2e3f4a5b6c"


def cgroup(pod_uid: str, container_id: str) -> str:
    """The cgroup v2 path of a containerd container of a burstable pod, as the kubelet names it."""
    return (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_uid.replace('-', '_')}"
            f".slice/cri-containerd-{container_id * 64}.scope")


def fleet(tmp_path: Path, second_pod: str) -> Path:
    """One A100 80GB without MIG shared by two model servers of about 18 GiB each (the incident's
    sizes): 3g.40gb each with 20% headroom. The second runs in pod ``second_pod``."""
    path = tmp_path / "fleet.yaml"
    path.write_text(f"""
gpus:
  - model: A100-SXM4-80GB
    processes:
      - {{pid: 5001, name: python, used_memory_mib: 18000, cmdline: "python serve.py --model qwen",
          container: "{cgroup(POD_A, 'a')}"}}
      - {{pid: 5002, name: python, used_memory_mib: 18000, cmdline: "python serve.py --model ocr",
          container: "{cgroup(second_pod, 'b')}"}}
  - model: A100-SXM4-80GB
""")
    return path


@pytest.fixture
def gpu0_uuid(tmp_path: Path) -> str:
    with nvml_session(str(fleet(tmp_path, POD_A))) as session:
        return read_snapshot(session).gpus[0].uuid


@pytest.fixture
def kubelet(gpu0_uuid: str) -> Iterator[KubeletServer]:
    server = KubeletServer(FakeKubelet(pods=[
        pod("ml", "qwen-ocr-7d9f8", {"server": [("nvidia.com/gpu", [gpu0_uuid])]}),
    ]))
    yield server
    server.stop()


def diagnose(capsys: pytest.CaptureFixture[str], fleet_file: Path, socket: str,
             output: str = "json") -> tuple[int, str, str]:
    status = main(["diagnose", "--fleet", str(fleet_file), "--format", output,
                   "--kubernetes.pod-resources-socket", socket])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def by_pid(items: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {item["pid"]: item for item in items}


def steps(report: dict[str, Any]) -> list[str]:
    return [step["action"] for finding in report["findings"] for step in finding["next_steps"]]


def test_each_process_names_its_pod_and_the_advice_changes_the_pods_resource(
        tmp_path: Path, kubelet: KubeletServer, gpu0_uuid: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = diagnose(capsys, fleet(tmp_path, POD_A), kubelet.socket)
    assert status == 1 and not err
    report = json.loads(out)
    jsonschema.validate(report, SCHEMA)
    allocation = {"device_id": gpu0_uuid, "resource": "nvidia.com/gpu", "namespace": "ml",
                  "pod": "qwen-ocr-7d9f8", "container": "server"}
    processes = by_pid(report["processes"])
    assert processes[5001]["pods"] == processes[5002]["pods"] == [allocation]
    workloads = by_pid(report["advice"]["workloads"])
    assert workloads[5001]["profile"] == "3g.40gb"
    assert workloads[5001]["pod_resource"] == workloads[5002]["pod_resource"] == "nvidia.com/mig-3g.40gb"
    pod_steps = [s for s in steps(report) if s.startswith("set the pod's resource to nvidia.com/mig-3g.40gb")]
    # one container holds both processes: it requests one MIG device for each
    (pod_step,) = pod_steps
    assert "in pod ml/qwen-ocr-7d9f8, container server, request nvidia.com/mig-3g.40gb: 2" in pod_step
    assert not any(s.startswith("restart") for s in steps(report))  # no hand restart for pods

    _, text, _ = diagnose(capsys, fleet(tmp_path, POD_A), kubelet.socket, output="text")
    flat = " ".join(text.split())
    assert f"pod ml/qwen-ocr-7d9f8, container server (nvidia.com/gpu {gpu0_uuid})" in flat
    assert ("then: set the pod's resource to nvidia.com/mig-3g.40gb (pod ml/qwen-ocr-7d9f8, "
            "container server)") in flat


def test_a_gpu_used_from_two_pods_is_not_blamed_on_the_allocated_one(
        tmp_path: Path, kubelet: KubeletServer, capsys: pytest.CaptureFixture[str]) -> None:
    """PID 5002 runs in another pod that reached GPU 0 around the device plugin: the GPU is still
    shown as allocated to qwen-ocr, but neither process is told to change that pod."""
    _, out, _ = diagnose(capsys, fleet(tmp_path, POD_B), kubelet.socket)
    report = json.loads(out)
    jsonschema.validate(report, SCHEMA)
    assert all(p["pods"] for p in report["processes"])
    assert all(w["pod_resource"] is None for w in report["advice"]["workloads"])
    assert not any(s.startswith("set the pod's resource") for s in steps(report))
    assert any(s.startswith("restart PIDs 5001, 5002, each with CUDA_VISIBLE_DEVICES") for s in steps(report))


def test_a_kubelet_that_does_not_answer_is_a_warning_and_changes_nothing_else(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_socket = tmp_path / "kubelet.sock"
    not_a_socket.write_text("")
    fleet_file = fleet(tmp_path, POD_A)
    status, out, err = diagnose(capsys, fleet_file, str(not_a_socket))
    assert err.startswith("mig-exporter diagnose: warning: the kubelet's pod-resources socket")
    assert err.count("\n") == 1 and "pods are not shown" in err
    status_without, out_without, _ = diagnose(capsys, fleet_file, "")
    report, report_without = json.loads(out), json.loads(out_without)
    report.pop("taken_at"), report_without.pop("taken_at")
    assert (status, report) == (status_without, report_without)
    assert all(p["pods"] == [] for p in report["processes"])
