"""GPM (GPU Performance Monitoring, Hopper and later): SM utilization, SM occupancy, tensor
activity and DRAM bandwidth per GPU and per MIG GPU instance, the utilization NVML gives nowhere
else under MIG (Ampere has none: there only DCGM's profiling fields measure MIG activity).

A GPM metric is the difference of two samples of hardware counters. A collection never sleeps
to make a window: each takes one sample per GPU and GPU instance and diffs it with the one kept
from an earlier collection (``GpmSamples``, which the session keeps). The window has a floor: a
collection sooner than ``floor_seconds`` after the kept sample takes no new one and repeats the
last window's metrics, so collections closer together than GPM can measure cost no calls. And a
ceiling: a kept sample older than ``ceiling_seconds`` (collections stopped, a hung call) is not
diffed (the metrics would average over a long-gone period); the collection only starts a new
window. A GPU instance's samples are keyed by its ID, profile, placement and MIG device UUIDs, so
an instance destroyed and re-created under the same ID in another shape starts a new window.

Cost: ``nvmlGpmQueryDeviceSupport`` once per GPU; then two calls per collection per GPU and per
GPU instance (``nvmlGpmSampleGet``/``nvmlGpmMigSampleGet`` and ``nvmlGpmMetricsGet``); buffers are
allocated once per sampled thing and reused.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pynvml

from mig_exporter.model import GpmMetrics, GpuInstance, MigInstance

# GpmMetrics field → GPM metric ID
METRICS = {
    "sm_utilization_ratio": pynvml.NVML_GPM_METRIC_SM_UTIL,
    "sm_occupancy_ratio": pynvml.NVML_GPM_METRIC_SM_OCCUPANCY,
    "tensor_utilization_ratio": pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL,
    "dram_bandwidth_utilization_ratio": pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL,
}
_UNSUPPORTED = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})

Call = Callable[..., Any]  # the collection's NVML call: counts it, confines its errors, None if absent
SampleKey = tuple[Any, ...]  # (GPU UUID,) or (GPU UUID, GPU instance ID, profile ID, start, MIG UUIDs)


@dataclass
class _Kept:
    sample: Any  # the buffer holding the last sample
    taken_at: float  # time.monotonic() of that sample
    spare: Any = None  # a buffer for the next sample
    metrics: GpmMetrics | None = None  # of the window that ended at ``taken_at``


class GpmSamples:
    """GPM state that outlives a collection: which GPUs are GPM devices, and the kept samples."""

    def __init__(self, floor_seconds: float = 1.0, ceiling_seconds: float = 120.0) -> None:
        self.floor_seconds = floor_seconds
        self.ceiling_seconds = ceiling_seconds
        self._supported: dict[str, bool] = {}  # GPU UUID → GPM device
        self._kept: dict[SampleKey, _Kept] = {}

    def clear(self) -> None:
        """NVML was shut down: its sample buffers are gone with it."""
        self._supported.clear()
        self._kept.clear()

    def read(
        self, call: Call, handle: Any, uuid: str, gpu_instances: tuple[GpuInstance, ...],
        mig_instances: tuple[MigInstance, ...],
    ) -> tuple[GpmMetrics | None, tuple[MigInstance, ...]]:
        """The GPU's metrics, and its MIG devices with their GPU instance's."""
        if not uuid or not self._is_gpm_device(call, handle, uuid):
            return None, mig_instances
        seen: set[SampleKey] = set()
        gpu_metrics = self._sampled(call, (uuid,), seen, pynvml.nvmlGpmSampleGet, handle)
        by_instance = {}
        for gpu_instance in gpu_instances:
            migs = tuple(sorted(m.mig_uuid for m in mig_instances
                                if m.gpu_instance_id == gpu_instance.gpu_instance_id))
            if not migs:
                continue  # nothing to label its values with, nor anything running in it
            instance_id = gpu_instance.gpu_instance_id
            key = (uuid, instance_id, gpu_instance.profile_id, gpu_instance.placement_start, migs)
            by_instance[instance_id] = self._sampled(call, key, seen, pynvml.nvmlGpmMigSampleGet, handle,
                                                     instance_id)
        self._forget(call, uuid, seen)
        return gpu_metrics, tuple(replace(m, gpm=by_instance.get(m.gpu_instance_id)) for m in mig_instances)

    def _is_gpm_device(self, call: Call, handle: Any, uuid: str) -> bool:
        if uuid not in self._supported:
            supported = call(_gpm_support, handle)
            if supported is None:  # a failure, counted: ask again next time
                return False
            self._supported[uuid] = supported
        return self._supported[uuid]

    def _sampled(
        self, call: Call, key: SampleKey, seen: set[SampleKey], sample_get: Call, *args: Any,
    ) -> GpmMetrics | None:
        """Take a sample for ``key`` with ``sample_get(*args, buffer)`` and diff it with the kept
        one (see the module docstring)."""
        seen.add(key)
        kept = self._kept.get(key)
        now = time.monotonic()
        if kept is not None and now - kept.taken_at < self.floor_seconds:
            return kept.metrics
        buffer = kept.spare if kept is not None else None
        if buffer is None:
            buffer = call(pynvml.nvmlGpmSampleAlloc)
        if buffer is None:
            return None
        if call(sample_get, *args, buffer) is None:
            if kept is None:
                call(pynvml.nvmlGpmSampleFree, buffer)
            else:
                kept.spare = buffer
            return None
        if kept is None or now - kept.taken_at > self.ceiling_seconds:
            if kept is not None:
                call(pynvml.nvmlGpmSampleFree, kept.sample)
            self._kept[key] = _Kept(buffer, now)
            return None
        metrics = call(_metrics_get, kept.sample, buffer, now - kept.taken_at)
        self._kept[key] = _Kept(buffer, now, spare=kept.sample, metrics=metrics)
        return metrics

    def _forget(self, call: Call, uuid: str, seen: set[SampleKey]) -> None:
        """Free the buffers of the GPU's instances that are gone (or changed shape)."""
        # list(): other GPUs, read on other threads (nvml.read), add their keys meanwhile
        for key in [k for k in list(self._kept) if k[0] == uuid and k not in seen]:
            kept = self._kept.pop(key)
            for buffer in (kept.sample, kept.spare):
                if buffer is not None:
                    call(pynvml.nvmlGpmSampleFree, buffer)


@functools.wraps(pynvml.nvmlGpmQueryDeviceSupport)
def _gpm_support(handle: Any) -> bool:
    """Whether the GPU is a GPM device; NOT_SUPPORTED or an older driver is an answer: no."""
    try:
        return bool(pynvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice)
    except pynvml.NVMLLibraryMismatchError:
        return False
    except pynvml.NVMLError as error:
        if error.value in _UNSUPPORTED:
            return False
        raise


@functools.wraps(pynvml.nvmlGpmMetricsGet)
def _metrics_get(first: Any, second: Any, window_seconds: float) -> GpmMetrics:
    request = pynvml.c_nvmlGpmMetricsGet_t()
    request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(METRICS)
    request.sample1, request.sample2 = first, second
    for i, metric_id in enumerate(METRICS.values()):
        request.metrics[i].metricId = metric_id
    pynvml.nvmlGpmMetricsGet(request)
    values = {
        name: request.metrics[i].value / 100 if request.metrics[i].nvmlReturn == pynvml.NVML_SUCCESS else None
        for i, name in enumerate(METRICS)
    }
    return GpmMetrics(window_seconds=window_seconds, **values)
