"""A simulated NVML: the real nvidia-ml-py (pynvml) runs on top of a fleet file instead of a GPU.

API for the rest of the project (only ``nvml/`` and tests should need it):

- ``install(spec) -> SimulatedNvml``: sets ``pynvml.nvmlLib`` to a simulator over ``spec`` (a
  fleet file path, or a built-in fleet name: see ``mig-exporter fleet list``) and clears pynvml's
  function-pointer cache; then ``pynvml.nvmlInit()`` and every pynvml call work as on a GPU host.
  ``uninstall()`` undoes it. ``load_fleet(spec) -> Fleet`` only reads and checks a fleet;
  both raise ``FleetError`` (an ``InputError``: one line with file, path inside it and reason).
- ``SimulatedNvml``: ``.fleet`` (the current state, an immutable ``Fleet``; assign a new one, e.g.
  ``sim.fleet = sim.fleet.without_process(78914)``, to change the world under NVML),
  ``.read_only`` (True for built-in fleets: never written; mutations live in memory only),
  ``.path`` (the fleet file or None), ``.reset_gpu(index)`` (``nvidia-smi -r -i N``: raises
  ``pynvml.NVMLError`` IN_USE while processes, ``held_by`` clients or persistence mode hold the
  GPU; else applies the pending MIG mode and clears its instances), ``.attribution(pid) ->
  ProcessAttribution | None`` (user, cmdline, container, env from the fleet file),
  ``.call_counts`` (``Counter`` of C function name → calls), ``.call_families()`` (the same per
  family of functions: identity, mig, process, telemetry …), ``.faults_fired()`` (``Counter`` of
  (C function, GPU index or None) → calls the fleet's ``faults:`` answered with an error).
- A fleet-file simulator writes the state back to the file atomically after each successful
  mutating call (the file's original bytes when the state is back to the state as loaded; a file it
  cannot write makes the call fail with NO_PERMISSION, changing nothing, and logs why) and re-reads
  the file when it changed on disk (at ``nvmlInit`` and each ``nvmlDeviceGetCount``).

NVML behaviour worth knowing (mig-facts.md, plus the choices documented in ``placement``,
``device_calls`` and ``mig_calls``): a lost GPU (``lost: true``) answers GPU_IS_LOST to every
call, handle by index included; utilization and encoder/decoder queries are NOT_SUPPORTED on a
MIG-enabled GPU and on MIG device handles; board-level queries (temperature, power, clocks, ECC,
PCI, persistence, MIG mode) on a MIG device handle are NOT_SUPPORTED; ``nvmlDeviceGetAttributes``
only takes MIG device handles; MIG device slots are the instance's first compute slice, so they
have gaps; a pid the fleet gives no ``name`` makes ``nvmlSystemGetProcessName`` answer NOT_FOUND;
memory info v2 ``reserved`` is 0 and ``used`` is what nvidia-smi shows (107 MiB on an idle
3g.40gb).

Latency (fleet file ``call_latency: {seconds: s, calls: {<C symbol>: s}, gpus: {<index>: s}}``):
every call sleeps that long, outside the lock, as a real NVML call costs 0.1-5 ms.

Faults (fleet file ``faults:``): ``{call: <C symbol>, gpu: <index>, error: NOT_SUPPORTED | <code>,
delay_seconds: <s>, skip: <n>, count: <n>}``. ``call: nvmlInitWithFlags, error:
LIBRARY_NOT_FOUND`` (or DRIVER_NOT_LOADED) makes ``nvmlInit`` fail as on a host without a
driver; ``error: FUNCTION_NOT_FOUND`` on ``nvmlDeviceGetComputeRunningProcesses_v3`` makes the
unversioned pynvml wrapper raise ``NVMLLibraryMismatchError``.
"""

from __future__ import annotations

import pynvml

from mig_exporter.sim.builtin_fleets import builtin_names, builtin_text
from mig_exporter.sim.fleet import load_fleet
from mig_exporter.sim.fleet_checks import FleetError
from mig_exporter.sim.fleet_dump import dump_fleet
from mig_exporter.sim.fleet_reader import parse_fleet
from mig_exporter.sim.simulator import SimulatedNvml
from mig_exporter.sim.state import Fleet, ProcessAttribution

__all__ = [
    "Fleet",
    "FleetError",
    "ProcessAttribution",
    "SimulatedNvml",
    "builtin_names",
    "builtin_text",
    "dump_fleet",
    "install",
    "load_fleet",
    "parse_fleet",
    "uninstall",
]


def install(spec: str) -> SimulatedNvml:
    """Put a simulator over fleet ``spec`` under pynvml (see the module docstring)."""
    simulator = SimulatedNvml.open(spec)
    with pynvml.libLoadLock:
        pynvml.nvmlLib = simulator
        pynvml._nvmlGetFunctionPointer_cache.clear()
    return simulator


def uninstall() -> None:
    """Take the simulator out from under pynvml; the next ``nvmlInit`` loads the real library."""
    with pynvml.libLoadLock:
        if isinstance(pynvml.nvmlLib, SimulatedNvml):
            pynvml.nvmlLib = None
            pynvml._nvmlLib_refcount = 0
        pynvml._nvmlGetFunctionPointer_cache.clear()
