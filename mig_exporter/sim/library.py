"""The simulated ``libnvidia-ml``: every C function the simulator implements, in one class.

``SimulatedNvml`` wraps each method of ``NvmlLibrary`` marked with ``c_function`` and serves it
as the attribute of the same name, the way ``ctypes.CDLL`` serves the real library's symbols.
"""

from __future__ import annotations

from mig_exporter.sim.calls import Target
from mig_exporter.sim.device_calls import DeviceCalls
from mig_exporter.sim.event_calls import EventCalls
from mig_exporter.sim.gpm_calls import GpmCalls
from mig_exporter.sim.health_calls import HealthCalls
from mig_exporter.sim.mig_calls import MigCalls
from mig_exporter.sim.process_util_calls import ProcessUtilCalls


class NvmlLibrary(DeviceCalls, MigCalls, ProcessUtilCalls, EventCalls, GpmCalls,
                  HealthCalls):
    """The C functions over a ``World`` (see ``calls``)."""


def c_function_targets() -> dict[str, Target]:
    """Every implemented C symbol → where its GPU is found."""
    return {
        name: member._nvml_target
        for cls in NvmlLibrary.__mro__
        for name, member in vars(cls).items()
        if hasattr(member, "_nvml_target")
    }
