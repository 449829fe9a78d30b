"""The simulated per-process utilization calls: the R550 ``nvmlDeviceGetProcessesUtilizationInfo``
and the older ``nvmlDeviceGetProcessUtilization`` it replaces.

Samples come from the fleet file's ``sm_util_percent``/``mem_util_percent`` on a process of a GPU
without MIG; each sampled process gives one sample stamped with the time of the call (in
microseconds, as NVML stamps them), so every sample is newer than any earlier ``lastSeenTimeStamp``.
Both calls answer NOT_SUPPORTED on a MIG device and on a MIG-enabled GPU (mig-facts.md) and follow
the INSUFFICIENT_SIZE protocol. With processes running but none sampled, the older call answers
NOT_FOUND (its documented "sample entries are not found"), while the newer one answers SUCCESS
with a count of 0 (the caller's count already fits), which pynvml turns into an ``NVMLError`` of
code 0: both are "no samples", which readers must tell from a failure.
"""

from __future__ import annotations

import time
from typing import Any

import pynvml

from mig_exporter.sim.calls import CallsBase, NvmlFailure, Target, c_function
from mig_exporter.sim.handles import array_capacity, target, value
from mig_exporter.sim.state import SimProcess


class ProcessUtilCalls(CallsBase):
    def _samples(self, device: Any, last_seen_us: int) -> tuple[int, list[SimProcess]]:
        """(time stamp, sampled processes newer than ``last_seen_us``) of a GPU without MIG."""
        _, gpu = self._physical(device)
        if gpu.mig.current:  # also refuses a MIG device handle, in _physical
            raise NvmlFailure(pynvml.NVML_ERROR_NOT_SUPPORTED)
        now_us = time.time_ns() // 1000
        return now_us, [p for p in gpu.processes if p.sampled and now_us > last_seen_us]

    @c_function(Target.HANDLE)
    def nvmlDeviceGetProcessUtilization(
        self, device: Any, utilization: Any, processSamplesCount: Any, lastSeenTimeStamp: Any
    ) -> int:
        now_us, sampled = self._samples(device, value(lastSeenTimeStamp))
        if not sampled:
            return pynvml.NVML_ERROR_NOT_FOUND
        count = target(processSamplesCount)
        capacity = array_capacity(utilization)
        fits = (
            utilization is not None
            and count.value >= len(sampled)
            and (capacity is None or capacity >= len(sampled))
        )
        if not fits:
            count.value = len(sampled)
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        array = target(utilization)
        for i, process in enumerate(sampled):
            _write_sample(array[i], process, now_us)
        count.value = len(sampled)
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceGetProcessesUtilizationInfo(self, device: Any, procesesUtilInfo: Any) -> int:
        info = target(procesesUtilInfo)
        if info is None:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        if info.version != pynvml.ProcessesUtilizationInfo_v1:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        now_us, sampled = self._samples(device, info.lastSeenTimeStamp)
        if not info.procUtilArray or info.processSamplesCount < len(sampled):
            info.processSamplesCount = len(sampled)
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE if sampled else pynvml.NVML_SUCCESS
        for i, process in enumerate(sampled):
            _write_sample(info.procUtilArray[i], process, now_us)
        info.processSamplesCount = len(sampled)
        return pynvml.NVML_SUCCESS


def _write_sample(entry: Any, process: SimProcess, now_us: int) -> None:
    """Fill a ``c_nvmlProcessUtilizationSample_t`` or ``c_nvmlProcessUtilizationInfo_v1_t``; the
    video, JPEG and optical-flow engines are never busy in the simulator."""
    entry.pid = process.pid
    entry.timeStamp = now_us
    entry.smUtil = process.sm_util_percent or 0
    entry.memUtil = process.mem_util_percent or 0
    entry.encUtil = entry.decUtil = 0
    if hasattr(entry, "jpgUtil"):
        entry.jpgUtil = entry.ofaUtil = 0
