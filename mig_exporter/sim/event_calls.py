"""The simulated NVML event calls, for XID errors: ``nvmlEventSetCreate``,
``nvmlDeviceRegisterEvents``, ``nvmlEventSetWait_v2``, ``nvmlEventSetFree``.

A GPU's XID errors are the fleet file's ``xid_events`` (``{xid, after_seconds, gpu_instance}``):
each happens ``after_seconds`` after XID events were first registered on that GPU in this
simulator (so a test's delays count from when its watcher started, however slow the machine). As
on NVML, a set only receives events that happen after it registered the GPU, each event once per
set. A wait with nothing due sleeps until the next event or the timeout with the simulator's lock
released (``World.wait``), so collections on other threads go on; at the timeout it answers
TIMEOUT. Only XID events are modelled: registering other types answers NOT_SUPPORTED, like a
platform without them. A lost GPU among a set's makes its wait answer GPU_IS_LOST.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from typing import Any

import pynvml

from mig_exporter.sim.calls import CallsBase, NvmlFailure, Target, World, c_function
from mig_exporter.sim.handles import Handle, Kind, as_pointer, target, value

_SET_TAG = 0x5E7 << 36  # high bits of an event set pointer (device handles use 0x5E0)
_NOT_ATTRIBUTABLE = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId of an event of no instance


@dataclass
class _EventSet:
    """GPU index → when the set registered it (monotonic); events already delivered."""

    registered: dict[int, float] = field(default_factory=dict)
    delivered: set[tuple[int, int]] = field(default_factory=set)  # (GPU index, event index)


class EventCalls(CallsBase):
    def __init__(self, world: World) -> None:
        super().__init__(world)
        self._event_sets: dict[int, _EventSet] = {}  # pointer → set
        self._sets_created = 0
        self._first_registered: dict[int, float] = {}  # GPU index → its events' time origin

    def _event_set(self, arg: Any) -> _EventSet:
        pointer = ctypes.cast(arg, ctypes.c_void_p).value if arg is not None else None
        event_set = self._event_sets.get(pointer or 0)
        if event_set is None:
            raise NvmlFailure(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return event_set

    @c_function(Target.NONE)
    def nvmlEventSetCreate(self, eventSet: Any) -> int:
        self._sets_created += 1
        pointer = _SET_TAG | self._sets_created
        self._event_sets[pointer] = _EventSet()
        ctypes.c_void_p.from_buffer(target(eventSet)).value = pointer
        return pynvml.NVML_SUCCESS

    @c_function(Target.HANDLE)
    def nvmlDeviceRegisterEvents(self, device: Any, eventTypes: Any, eventSet: Any) -> int:
        index, _ = self._physical(device)
        event_set = self._event_set(eventSet)
        if value(eventTypes) & ~pynvml.nvmlEventTypeXidCriticalError:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        now = time.monotonic()
        self._first_registered.setdefault(index, now)
        event_set.registered.setdefault(index, now)
        return pynvml.NVML_SUCCESS

    @c_function(Target.NONE)
    def nvmlEventSetWait_v2(self, eventSet: Any, data: Any, timeoutms: Any) -> int:
        deadline = time.monotonic() + value(timeoutms) / 1000
        while True:
            event_set = self._event_set(eventSet)  # again after each wait: it may have been freed
            gpus = self.world.fleet.gpus
            if any(gpus[index].lost for index in event_set.registered if index < len(gpus)):
                return pynvml.NVML_ERROR_GPU_IS_LOST
            now = time.monotonic()
            due, upcoming = self._due(event_set, now)
            if due is not None:
                self._deliver(event_set, due, target(data))
                return pynvml.NVML_SUCCESS
            if now >= deadline:
                return pynvml.NVML_ERROR_TIMEOUT
            self.world.wait(min(deadline, upcoming) - now)

    @c_function(Target.NONE)
    def nvmlEventSetFree(self, eventSet: Any) -> int:
        self._event_set(eventSet)
        del self._event_sets[ctypes.cast(eventSet, ctypes.c_void_p).value or 0]
        return pynvml.NVML_SUCCESS

    def _due(self, event_set: _EventSet, now: float) -> tuple[tuple[float, int, int] | None, float]:
        """The earliest undelivered event due by ``now`` as (time, GPU index, event index), and
        when the next one not yet due happens (infinity: none)."""
        due: tuple[float, int, int] | None = None
        upcoming = float("inf")
        gpus = self.world.fleet.gpus
        for index, registered_at in event_set.registered.items():
            if index >= len(gpus):
                continue
            origin = self._first_registered[index]
            for number, event in enumerate(gpus[index].xid_events):
                at = origin + event.after_seconds
                if at < registered_at or (index, number) in event_set.delivered:
                    continue
                if at > now:
                    upcoming = min(upcoming, at)
                elif due is None or (at, index, number) < due:
                    due = (at, index, number)
        return due, upcoming

    def _deliver(self, event_set: _EventSet, due: tuple[float, int, int], data: Any) -> None:
        _, index, number = due
        event_set.delivered.add((index, number))
        event = self.world.fleet.gpus[index].xid_events[number]
        data.device = as_pointer(Handle(Kind.DEVICE, index), pynvml.c_nvmlDevice_t)
        data.eventType = pynvml.nvmlEventTypeXidCriticalError
        data.eventData = event.xid
        data.gpuInstanceId = _NOT_ATTRIBUTABLE if event.gpu_instance is None else event.gpu_instance
        data.computeInstanceId = _NOT_ATTRIBUTABLE if event.gpu_instance is None else 0
