"""The PromQL of docs/kubernetes.md that joins mig-exporter's series with dcgm-exporter's and
kube-state-metrics', run by ``promtool test rules`` on series shaped as each exporter serves them
(dcgm-exporter: ``UUID``, ``GPU_I_ID``; mig-exporter: ``uuid``, ``gpu_instance_id``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from alerts.tools import run_tool

DOC = Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md"
JOB = 'job="mig-exporter",instance="node-1"'
POD = 'namespace="ml",pod="qwen-ocr-7d9f8"'

INPUT_SERIES = {
    # dcgm-exporter
    'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",Hostname="node-1"}': "90x10",
    'DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b",Hostname="node-1"}': "10x10",
    'DCGM_FI_DEV_FB_USED{gpu="2",UUID="GPU-c",GPU_I_ID="1",GPU_I_PROFILE="3g.40gb",Hostname="node-1"}':
        "12000x10",
    'DCGM_FI_DEV_FB_USED{gpu="2",UUID="GPU-c",GPU_I_ID="2",GPU_I_PROFILE="3g.40gb",Hostname="node-1"}':
        "5000x10",
    # mig-exporter
    f'nvml_gpu_unpartitioned_sharing{{{JOB},gpu="0",uuid="GPU-a"}}': "1x10",
    f'nvml_gpu_unpartitioned_sharing{{{JOB},gpu="1",uuid="GPU-b"}}': "0x10",
    f'nvml_mig_instance_info{{{JOB},gpu="2",uuid="GPU-c",mig_uuid="MIG-c1",gpu_instance_id="1",'
    'compute_instance_id="0",profile="3g.40gb"}': "1x10",
    f'nvml_mig_instance_info{{{JOB},gpu="2",uuid="GPU-c",mig_uuid="MIG-c2",gpu_instance_id="2",'
    'compute_instance_id="0",profile="3g.40gb"}': "1x10",
    f'nvml_process_memory_bytes{{{JOB},gpu="0",uuid="GPU-a",gpu_instance_id="",compute_instance_id="",'
    f'pid="20101",process_name="python",{POD},container="server"}}': "3000000000x10",
    f'nvml_process_memory_bytes{{{JOB},gpu="1",uuid="GPU-b",gpu_instance_id="",compute_instance_id="",'
    f'pid="20101",process_name="python",{POD},container="server"}}': "1000000000x10",
    f'nvml_process_memory_bytes{{{JOB},gpu="0",uuid="GPU-a",gpu_instance_id="",compute_instance_id="",'
    'pid="30202",process_name="python3",namespace="",pod="",container=""}': "2000000000x10",
    f'nvml_gpu_allocation_info{{{JOB},gpu="2",uuid="GPU-c",mig_uuid="MIG-c1",resource="nvidia.com/mig-3g.40gb",'
    f'{POD},container="server"}}': "1x10",
    f'nvml_gpu_allocation_info{{{JOB},gpu="1",uuid="GPU-b",mig_uuid="",resource="nvidia.com/gpu",'
    'namespace="batch",pod="train-0",container="trainer"}': "1x10",
    # kube-state-metrics
    f'kube_pod_owner{{{POD},owner_kind="ReplicaSet",owner_name="qwen-ocr-7d9f8",owner_is_controller="true"}}':
        "1x10",
    f'kube_pod_info{{{POD},node="node-1",host_ip="10.0.0.5",uid="0c5ae2f1"}}': "1x10",
    'kube_pod_info{namespace="batch",pod="train-0",node="node-2",host_ip="10.0.0.6",uid="7f0d3c2e"}': "1x10",
}

# What each query of the document returns on INPUT_SERIES, in the document's order.
EXPECTED: list[list[dict[str, Any]]] = [
    [{"labels": '{gpu="0",UUID="GPU-a",uuid="GPU-a",Hostname="node-1"}', "value": 90}],
    [{"labels": '{gpu="2",UUID="GPU-c",uuid="GPU-c",GPU_I_ID="1",gpu_instance_id="1",GPU_I_PROFILE="3g.40gb",'
                'Hostname="node-1",profile="3g.40gb",mig_uuid="MIG-c1"}', "value": 12000},
     {"labels": '{gpu="2",UUID="GPU-c",uuid="GPU-c",GPU_I_ID="2",gpu_instance_id="2",GPU_I_PROFILE="3g.40gb",'
                'Hostname="node-1",profile="3g.40gb",mig_uuid="MIG-c2"}', "value": 5000}],
    [{"labels": f'{{{POD},owner_kind="ReplicaSet",owner_name="qwen-ocr-7d9f8"}}', "value": 4e9}],
    [{"labels": f'{{{JOB},gpu="2",uuid="GPU-c",mig_uuid="MIG-c1",resource="nvidia.com/mig-3g.40gb",{POD},'
                'container="server",node="node-1"}', "value": 1}],
]


def documented_queries() -> list[str]:
    return re.findall(r"```promql\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_every_documented_join_is_tested() -> None:
    queries = documented_queries()
    assert len(queries) == len(EXPECTED)
    for query in queries:
        promql_parser.parse(query)


def promtool_test(tmp_path: Path, cases: list[tuple[str, list[dict[str, Any]]]]) -> int:
    """``promtool test rules`` of each (query, expected samples) on INPUT_SERIES; its exit status."""
    path = tmp_path / "joins.test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": series, "values": values} for series, values in INPUT_SERIES.items()],
        "promql_expr_test": [{"expr": query, "eval_time": "5m", "exp_samples": expected}
                             for query, expected in cases],
    }]}, sort_keys=False))
    result = run_tool("promtool", "test", "rules", str(path))
    print(result.stdout, result.stderr)
    return result.returncode


def test_the_joins_return_what_the_document_says(tmp_path: Path) -> None:
    assert promtool_test(tmp_path, list(zip(documented_queries(), EXPECTED, strict=True))) == 0


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """promtool compares the samples: the test above can fail."""
    (query, *_), (expected, *_) = documented_queries(), EXPECTED
    assert promtool_test(tmp_path, [(query, [{**expected[0], "value": 91}])]) != 0
