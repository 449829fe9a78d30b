"""The simulated GPM calls (docs/fleet-telemetry.md) through the real pynvml: fleet keys checked
and written back, Ampere not a GPM device, metrics as counter diffs over a window, metrics not
modelled NOT_SUPPORTED each, and a diff of two different GPUs or instances refused."""

from __future__ import annotations

import pynvml
import pytest

from mig_exporter.sim import FleetError, dump_fleet, parse_fleet

from .conftest import StartNvml

FLEET = """gpus:
  - model: H100-SXM5-80GB
    gpm: {sm_util_percent: 42.5, dram_bw_util_percent: 7}
  - model: H200
    mig: enabled
    instances:
      - {profile: 7g.141gb, gpm: {tensor_util_percent: 64}}
  - model: A100-SXM4-80GB
"""


def test_gpm_keys_round_trip_through_the_canonical_dump() -> None:
    fleet = parse_fleet(FLEET, "gpm.yaml")
    assert parse_fleet(dump_fleet(fleet), "dumped.yaml") == fleet
    assert fleet.gpus[0].activity.sm_util_percent == 42.5
    assert fleet.gpus[1].instances[0].activity.tensor_util_percent == 64


@pytest.mark.parametrize(("gpu", "message"), [
    ("{model: A100-SXM4-80GB, gpm: {sm_util_percent: 5}}",
     "gpm.yaml: gpus[0].gpm: A100-SXM4-80GB has no GPM (NVML gives it on Hopper and later)"),
    ("{model: H100-SXM5-80GB, gpm: {sm_util_percent: 101}}",
     "gpm.yaml: gpus[0].gpm.sm_util_percent: 101 is more than 100"),
    ("{model: H100-SXM5-80GB, gpm: {sm_util: 5}}",
     "gpm.yaml: gpus[0].gpm.sm_util: unknown key (did you mean sm_util_percent?)"),
    ("{model: H100-SXM5-80GB, mig: enabled, gpm: {sm_util_percent: 5}}",
     "gpm.yaml: gpus[0].gpm: with MIG enabled the GPU's activity is its instances'"),
    ("{model: A100-SXM4-80GB, mig: enabled, instances: [{profile: 7g.80gb, gpm: {sm_util_percent: 5}}]}",
     "gpm.yaml: gpus[0].instances[0].gpm: A100-SXM4-80GB has no GPM"),
])
def test_bad_gpm_keys_are_refused_with_their_path(gpu: str, message: str) -> None:
    with pytest.raises(FleetError) as refused:
        parse_fleet(f"gpus:\n  - {gpu}\n", "gpm.yaml")
    assert str(refused.value).startswith(message)


def metrics(first: object, second: object, *metric_ids: int) -> pynvml.c_nvmlGpmMetricsGet_t:
    request = pynvml.c_nvmlGpmMetricsGet_t()
    request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(metric_ids)
    request.sample1, request.sample2 = first, second
    for i, metric_id in enumerate(metric_ids):
        request.metrics[i].metricId = metric_id
    return pynvml.nvmlGpmMetricsGet(request)


def test_metrics_are_diffs_of_two_samples(start_nvml: StartNvml) -> None:
    start_nvml(FLEET)
    h100, h200, a100 = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(3))
    assert [pynvml.nvmlGpmQueryDeviceSupport(d).isSupportedDevice for d in (h100, h200, a100)] == [1, 1, 0]
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlGpmSampleGet(a100, pynvml.nvmlGpmSampleAlloc())
    first, second = pynvml.nvmlGpmSampleAlloc(), pynvml.nvmlGpmSampleAlloc()
    pynvml.nvmlGpmSampleGet(h100, first)
    pynvml.nvmlGpmSampleGet(h100, second)
    answer = metrics(first, second, pynvml.NVML_GPM_METRIC_SM_UTIL, pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL,
                     pynvml.NVML_GPM_METRIC_FP64_UTIL)
    assert [answer.metrics[i].nvmlReturn for i in range(3)] == [0, 0, pynvml.NVML_ERROR_NOT_SUPPORTED]
    assert [answer.metrics[i].value for i in range(2)] == [pytest.approx(42.5), pytest.approx(7.0)]
    # a GPU instance's samples, and a diff across two sampled things refused
    pynvml.nvmlGpmMigSampleGet(h200, 0, first)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        metrics(second, first, pynvml.NVML_GPM_METRIC_SM_UTIL)
    pynvml.nvmlGpmMigSampleGet(h200, 0, second)
    tensor = metrics(first, second, pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL)
    assert tensor.metrics[0].value == pytest.approx(64)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlGpmMigSampleGet(h200, 5, first)  # no such GPU instance
    pynvml.nvmlGpmSampleFree(first)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlGpmSampleGet(h100, first)
