"""The simulated GPM calls (Hopper and later): ``nvmlGpmQueryDeviceSupport``,
``nvmlGpmSampleAlloc``/``Free``, ``nvmlGpmSampleGet``, ``nvmlGpmMigSampleGet``, ``nvmlGpmMetricsGet``.

GPM works like the hardware counters it reads: a sample holds cumulative activity counters, and a
metric is the difference of two samples over the time between them. Each GPU and each GPU
instance has its counters, which grow at the rate of the fleet file's ``gpm`` activity in force
when a sample is taken (so a test that changes the activity between samples sees the diff of
each window). A GPU instance's counters belong to it as created, keyed by its ID, profile and
placement: one destroyed and re-created in another shape under the same ID starts from zero, and
``nvmlGpmMetricsGet`` over samples of two different GPUs or instances answers INVALID_ARGUMENT
(a real driver would answer meaningless numbers). The whole GPU's activity with MIG enabled is
its instances', weighted by their compute slices (memory slices for DRAM bandwidth). Ampere GPUs
are not GPM devices: the query answers ``isSupportedDevice`` 0 and sampling NOT_SUPPORTED.
Metrics the simulator does not model answer NOT_SUPPORTED in their own ``nvmlReturn``.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, fields
from typing import Any

import pynvml

from mig_exporter.sim.calls import CallsBase, NvmlFailure, Target, World, c_function
from mig_exporter.sim.handles import target, value
from mig_exporter.sim.state import Activity, SimGpu

_SAMPLE_TAG = 0x5E6 << 36  # high bits of a GPM sample pointer
# GPM metric ID → the Activity field it reports
_METRICS = {
    pynvml.NVML_GPM_METRIC_SM_UTIL: "sm_util_percent",
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: "sm_occupancy_percent",
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: "tensor_util_percent",
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: "dram_bw_util_percent",
}
_FIELDS = tuple(f.name for f in fields(Activity))

# ("gpu", index) or ("gpu instance", index, ID, profile ID, placement start)
CounterKey = tuple[Any, ...]


@dataclass(frozen=True)
class _Sample:
    key: CounterKey
    taken_at: float
    counters: tuple[float, ...]  # percent-seconds per Activity field


class GpmCalls(CallsBase):
    def __init__(self, world: World) -> None:
        super().__init__(world)
        self._gpm_samples: dict[int, _Sample | None] = {}  # pointer → what it holds (None: nothing yet)
        self._gpm_samples_allocated = 0
        self._gpm_counters: dict[CounterKey, tuple[float, tuple[float, ...]]] = {}  # key → (when, counters)

    @c_function(Target.HANDLE)
    def nvmlGpmQueryDeviceSupport(self, device: Any, gpmSupport: Any) -> int:
        _, gpu = self._physical(device)
        support = target(gpmSupport)
        if support.version != pynvml.NVML_GPM_SUPPORT_VERSION:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        support.isSupportedDevice = int(_has_gpm(gpu))
        return pynvml.NVML_SUCCESS

    @c_function(Target.NONE)
    def nvmlGpmSampleAlloc(self, gpmSample: Any) -> int:
        self._gpm_samples_allocated += 1
        pointer = _SAMPLE_TAG | self._gpm_samples_allocated
        self._gpm_samples[pointer] = None
        ctypes.c_void_p.from_buffer(target(gpmSample)).value = pointer
        return pynvml.NVML_SUCCESS

    @c_function(Target.NONE)
    def nvmlGpmSampleFree(self, gpmSample: Any) -> int:
        del self._gpm_samples[self._sample_pointer(gpmSample)]
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlGpmSampleGet(self, device: Any, gpmSample: Any) -> int:
        index, gpu = self._physical(device)
        if not _has_gpm(gpu):
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        self._take(gpmSample, ("gpu", index), _gpu_activity(gpu))
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlGpmMigSampleGet(self, device: Any, gpuInstanceId: Any, gpmSample: Any) -> int:
        index, gpu = self._physical(device)
        if not _has_gpm(gpu) or not gpu.mig.current:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        gpu_instance = gpu.gpu_instance(value(gpuInstanceId))
        if gpu_instance is None:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        key = ("gpu instance", index, gpu_instance.id, gpu_instance.profile_id, gpu_instance.start)
        self._take(gpmSample, key, gpu_instance.activity)
        return pynvml.NVML_SUCCESS

    @c_function(Target.NONE)
    def nvmlGpmMetricsGet(self, metricsGet: Any) -> int:
        request = target(metricsGet)
        if request.version != pynvml.NVML_GPM_METRICS_GET_VERSION:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        first = self._gpm_samples.get(self._sample_pointer(request.sample1))
        second = self._gpm_samples.get(self._sample_pointer(request.sample2))
        if first is None or second is None or first.key != second.key or second.taken_at <= first.taken_at:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        seconds = second.taken_at - first.taken_at
        for i in range(min(request.numMetrics, pynvml.NVML_GPM_METRIC_MAX)):
            metric = request.metrics[i]
            field = _METRICS.get(metric.metricId)
            if field is None:
                metric.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                continue
            at = _FIELDS.index(field)
            metric.value = (second.counters[at] - first.counters[at]) / seconds
            metric.nvmlReturn = pynvml.NVML_SUCCESS
        return pynvml.NVML_SUCCESS

    def _sample_pointer(self, arg: Any) -> int:
        pointer = ctypes.cast(arg, ctypes.c_void_p).value if arg is not None else None
        if pointer not in self._gpm_samples:
            raise NvmlFailure(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return pointer

    def _take(self, gpmSample: Any, key: CounterKey, activity: Activity) -> None:
        """Advance ``key``'s counters to now at ``activity`` and store them in the sample."""
        pointer = self._sample_pointer(gpmSample)
        now = time.monotonic()
        since, counters = self._gpm_counters.get(key, (now, (0.0,) * len(_FIELDS)))
        counters = tuple(count + getattr(activity, name) * (now - since)
                         for count, name in zip(counters, _FIELDS, strict=True))
        self._gpm_counters[key] = (now, counters)
        self._gpm_samples[pointer] = _Sample(key, now, counters)


def _has_gpm(gpu: SimGpu) -> bool:
    return gpu.model.architecture != "ampere"


def _gpu_activity(gpu: SimGpu) -> Activity:
    """The whole GPU's activity: its own with MIG off, else its instances' weighted by share."""
    if not gpu.mig.current:
        return gpu.activity
    totals = dict.fromkeys(_FIELDS, 0.0)
    for gpu_instance in gpu.instances:
        profile = gpu.profile(gpu_instance.profile_id)
        assert profile is not None
        compute_share = profile.slice_count / gpu.model.compute_slices
        memory_share = profile.placement_size / gpu.model.memory_slices
        for name in _FIELDS:
            share = memory_share if name == "dram_bw_util_percent" else compute_share
            totals[name] += getattr(gpu_instance.activity, name) * share
    return Activity(**totals)
