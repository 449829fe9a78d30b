"""Per-process SM and memory utilization on a GPU without MIG (NVML samples none under MIG).

``nvmlDeviceGetProcessesUtilizationInfo`` (R550 and later) is asked first, and the older
``nvmlDeviceGetProcessUtilization`` only when the driver lacks the newer call. NVML keeps a few
seconds of samples, possibly several per pid: each pid's newest one is kept. "No samples" comes
back as NOT_FOUND or, from pynvml when the driver answers SUCCESS with nothing to give, as an
``NVMLError`` of code 0: both mean no value, not a failure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pynvml

from mig_exporter.model import GpuProcess

# Answers that mean "no process was sampled": NOT_FOUND, and pynvml's error of code 0 (SUCCESS).
NO_SAMPLES = frozenset({pynvml.NVML_ERROR_NOT_FOUND, pynvml.NVML_SUCCESS})
_UNSUPPORTED = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})


class _Unsupported:
    """The driver lacks the newer call: ask the older one."""


@functools.wraps(pynvml.nvmlDeviceGetProcessesUtilizationInfo)
def _utilization_info(handle: Any, last_seen: int) -> Any:
    try:
        return pynvml.nvmlDeviceGetProcessesUtilizationInfo(handle, last_seen)
    except pynvml.NVMLLibraryMismatchError:
        return _Unsupported
    except pynvml.NVMLError as error:
        if error.value in _UNSUPPORTED:
            return _Unsupported
        raise


def with_utilization(
    call: Callable[..., Any], handle: Any, processes: tuple[GpuProcess, ...],
) -> tuple[GpuProcess, ...]:
    """``processes`` of the GPU ``handle`` with their utilization where NVML sampled them.

    ``call`` is the collection's NVML call (it counts the call and confines its errors); no call
    is made for a GPU without processes, which has nothing to attach the samples to.
    """
    if not processes:
        return processes
    samples = call(_utilization_info, handle, 0, expected=NO_SAMPLES)
    if samples is _Unsupported:
        samples = call(pynvml.nvmlDeviceGetProcessUtilization, handle, 0, expected=NO_SAMPLES)
    newest: dict[int, Any] = {}
    for sample in samples or ():
        if sample.pid not in newest or sample.timeStamp > newest[sample.pid].timeStamp:
            newest[sample.pid] = sample
    return tuple(
        replace(process, sm_utilization_ratio=newest[process.pid].smUtil / 100,
                memory_utilization_ratio=newest[process.pid].memUtil / 100)
        if process.pid in newest else process
        for process in processes
    )
