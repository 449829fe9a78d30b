"""Compute processes as NVML lists them per device, and their names, kept per process.

A name costs one ``nvmlSystemGetProcessName`` per pid, which at 10,000 processes and 1 ms a call
is ten seconds. A process keeps its name for life, so ``ProcessNames`` keeps each pid's name for
as long as the same process holds the pid: a pid is the same process while its start time
(``/proc/<pid>/stat`` on a host, the simulator's on a fleet) is the same, and while NVML keeps
listing it (a pid missing from one collection is forgotten, which also covers a pid whose start
time this host cannot see, such as one in another PID namespace).
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import pynvml
from pynvml import nvmlStructToFriendlyObject  # a converter, not an NVML call

from mig_exporter.model import GpuProcess
from mig_exporter.nvml.calls import Collection

# Processes one call has room for (the v3 entry is 32 bytes): more than most GPUs or MIG devices run.
_ROOM = 64
NOT_AN_INSTANCE = 0xFFFFFFFF  # a process's gpuInstanceId / computeInstanceId when MIG is off
_NOT_FOUND = frozenset({pynvml.NVML_ERROR_NOT_FOUND})


def read_processes(
    collection: Collection, handle: Any, gpu_index: int, gpu_uuid: str, mig: tuple[int, int] | None,
    gone: frozenset[int] = frozenset(),
) -> tuple[GpuProcess, ...] | None:
    """Compute processes on ``handle``, without their names (``ProcessNames`` adds them): the
    whole GPU when MIG is off, else one MIG device whose (GPU instance ID, compute instance ID) is
    ``mig``. None when NVML did not list them (an error, or a driver without the call): not "no
    processes".

    A pid NVML lists twice on one device is kept once (the first entry): two identical label sets
    in one exposition would make Prometheus reject the second sample of the scrape.
    """
    infos = collection.call(_compute_processes, handle, gpu=gpu_index, gone=gone)
    if infos is None:
        return None
    processes = []
    seen: set[tuple[int, int, int]] = set()
    for info in infos:
        gpu_instance_id, compute_instance_id = mig or (info.gpuInstanceId, info.computeInstanceId)
        if (info.pid, gpu_instance_id, compute_instance_id) in seen:
            continue
        seen.add((info.pid, gpu_instance_id, compute_instance_id))
        processes.append(GpuProcess(
            pid=info.pid, name=None, gpu_index=gpu_index, gpu_uuid=gpu_uuid,
            used_memory_bytes=info.usedGpuMemory,  # pynvml turns "not available" into None
            gpu_instance_id=None if gpu_instance_id == NOT_AN_INSTANCE else gpu_instance_id,
            compute_instance_id=None if compute_instance_id == NOT_AN_INSTANCE else compute_instance_id,
        ))
    return tuple(processes)


@functools.wraps(pynvml.nvmlDeviceGetComputeRunningProcesses)
def _compute_processes(handle: Any) -> list[Any]:
    """NVML's compute-process list in one C call when ``_ROOM`` entries hold it. pynvml's wrapper
    always asks the count first and then the list: two calls per device and collection, of which
    the first is wasted whenever a buffer of a few KiB would have done. More processes than that,
    or a driver without the v3 call, go to pynvml's wrapper (which raises as pynvml does)."""
    try:
        function = pynvml._nvmlGetFunctionPointer("nvmlDeviceGetComputeRunningProcesses_v3")
    except pynvml.NVMLError_FunctionNotFound:
        return list(pynvml.nvmlDeviceGetComputeRunningProcesses(handle))
    count = ctypes.c_uint(_ROOM)
    found = (pynvml.c_nvmlProcessInfo_v3_t * _ROOM)()
    status = function(handle, ctypes.byref(count), found)
    if status == pynvml.NVML_ERROR_INSUFFICIENT_SIZE:
        return list(pynvml.nvmlDeviceGetComputeRunningProcesses(handle))
    if status != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(status)
    infos = [nvmlStructToFriendlyObject(found[i]) for i in range(count.value)]
    for info in infos:
        if info.usedGpuMemory == pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value:
            info.usedGpuMemory = None  # as pynvml's wrapper: NVML could not say
    return infos


def proc_start_time(pid: int) -> float | None:
    """The start time of host process ``pid`` in clock ticks since boot (``/proc/<pid>/stat``
    field 22), or None when this host cannot see it. Only compared for equality, so no conversion
    to seconds (and no psutil.Process, at a few times the cost for 10,000 pids a collection)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return float(fields[19])
    except (OSError, IndexError, ValueError):
        return None


class ProcessNames:
    """pid → name over a session's collections (see the module docstring). Thread-safe."""

    def __init__(self, start_time: Callable[[int], float | None]) -> None:
        self._start_time = start_time
        self._known: dict[int, tuple[float | None, str | None]] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._known.clear()

    def named(
        self, processes: Iterable[GpuProcess], limit: int | None,
        look_up: Callable[[list[int]], dict[int, tuple[str | None, bool]]],
    ) -> tuple[dict[int, str | None], int]:
        """Every listed pid's name, from what is kept or from ``look_up(pids)`` (pid → (name,
        whether the lookup failed)); and how many pids were not looked up because ``limit`` pids
        (those of the first processes listed) already were. Pids not listed are forgotten."""
        order = list(dict.fromkeys(p.pid for p in processes))
        wanted = order if limit is None else order[:limit]
        with self._lock:
            known = {pid: self._known[pid] for pid in order if pid in self._known}
        starts = {pid: self._start_time(pid) for pid in wanted}
        found = look_up([pid for pid in wanted if pid not in known or known[pid][0] != starts[pid]])
        for pid, (name, failed) in found.items():
            if failed:
                known.pop(pid, None)  # a failure is asked again next time
            else:
                known[pid] = (starts[pid], name)
        with self._lock:
            self._known = known
        names = {pid: found[pid][0] if pid in found else known[pid][1] for pid in wanted}
        return names, len(order) - len(wanted)


def look_up_names(collection: Collection, pids: list[int]) -> dict[int, tuple[str | None, bool]]:
    """pid → (its name, whether the call failed)."""
    found = {}
    for pid in pids:
        errors_before = len(collection.errors)
        # NOT_FOUND: the process ended since it was listed, or lives in another PID namespace.
        name = collection.call(pynvml.nvmlSystemGetProcessName, pid, expected=_NOT_FOUND)
        found[pid] = (name, collection.failed_since(errors_before))
    return found


def with_names(processes: tuple[GpuProcess, ...], names: dict[int, str | None]) -> tuple[GpuProcess, ...]:
    return tuple(replace(p, name=names.get(p.pid)) for p in processes)
