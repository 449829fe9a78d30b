"""NVML's lifecycle for this process: put a simulated library under pynvml when one is given,
initialise, re-initialise after NVML failed, shut down.

The session never imports the simulator: ``mig_exporter.host`` opens a host, real or simulated,
and hands the session a ``Simulation`` (the ``mig_exporter.sim`` module) only for ``--fleet``.

pynvml keeps one library and one reference count per process, so there is one session per process
(``serve``, ``diagnose`` and ``remediate`` each open one). The session also keeps what must outlive
a single collection: the last UUID seen at each GPU index, so a GPU that is lost later keeps its
identity in the metrics; each GPU's MIG capability (``nvml.capability``), which is static
while NVML stays up and would otherwise cost some forty NVML calls per GPU and collection; what
else cannot change of each GPU (``nvml.known``: handle, identity, MIG layout, unsupported calls);
and process names (``nvml.processes``). ``forget_gpu`` and ``mark_failed`` say when they may have.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import pynvml

from mig_exporter.errors import InputError
from mig_exporter.nvml.capability import CapabilityCache
from mig_exporter.nvml.gpm import GpmSamples
from mig_exporter.nvml.health import HealthReader
from mig_exporter.nvml.known import KnownGpu
from mig_exporter.nvml.processes import ProcessNames, proc_start_time
from mig_exporter.nvml.workers import Workers

if TYPE_CHECKING:
    from mig_exporter.hostinfo import FleetProcessFields
    from mig_exporter.model import Gpu

log = logging.getLogger(__name__)

TRY_FLEET_HINT = "to try mig-exporter without a GPU, use --fleet seed-incident"

# What each way of failing to initialise means to the person running the command.
_INIT_FAILURES = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: "no NVIDIA driver found (NVML: Library Not Found)",
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded (NVML: Driver Not Loaded)",
    pynvml.NVML_ERROR_NO_PERMISSION: "no permission to open the NVIDIA devices (NVML: No Permission)",
}


class SimulatedLibrary(Protocol):
    """What the commands need of a simulated library beyond NVML itself: ``nvidia-smi -r`` for
    the write side, who runs each simulated pid (not on this host's /proc), and whether the fleet
    is a read-only built-in."""

    read_only: bool
    call_counts: Counter[str]  # C calls made, per C function (tests and the benchmark count them)

    def reset_gpu(self, index: int) -> None: ...

    def attribution(self, pid: int) -> FleetProcessFields | None: ...

    def process_start_time(self, pid: int) -> float | None: ...

    def call_families(self) -> Counter[str]: ...


class Simulation(Protocol):
    """How a simulated NVML is put under pynvml and taken out again (``mig_exporter.sim``)."""

    def install(self, spec: str) -> SimulatedLibrary: ...

    def uninstall(self) -> None: ...


class NvmlUnavailable(InputError):
    """NVML could not be initialised. ``nvml_error`` is NVML's own text, for the metrics;
    ``driver_missing`` is True when there is no NVIDIA library at all (no GPU host), as opposed
    to a driver that may come back (not loaded yet, no permission, a version mismatch)."""

    def __init__(self, message: str, nvml_error: str, driver_missing: bool = False) -> None:
        super().__init__(message)
        self.nvml_error = nvml_error
        self.driver_missing = driver_missing


class NvmlSession:
    """Context manager around nvmlInit/nvmlShutdown, over the real library or a simulated fleet."""

    def __init__(self, fleet: str | None = None, simulation: Simulation | None = None) -> None:
        if (fleet is None) != (simulation is None):
            raise ValueError("a fleet needs its simulation, and a simulation its fleet")
        self.fleet = fleet
        self._simulation = simulation
        self.simulator: SimulatedLibrary | None = None
        self.initialised = False
        # GPU index → the UUID it had when last read.
        self.known_uuids: dict[int, str] = {}
        # GPU UUID → its MIG capability (``nvml.capability``); only tables read without error are kept.
        self.mig_capabilities: CapabilityCache = {}
        # GPU index → what does not change between collections (``nvml.known``).
        self.known_gpus: dict[int, KnownGpu] = {}
        self.gpu_count: int | None = None  # as last read: a change is a hot-plug
        # (driver, CUDA driver, NVML) versions: fixed while NVML stays initialised.
        self.versions: tuple[str | None, int | None, str | None] | None = None
        self.system_unsupported: set[Hashable] = set()  # system calls NVML never supports
        self.process_names = ProcessNames(self.process_start_time)
        self.workers = Workers()  # the GPUs are read in parallel on these
        self.gpu_reads: dict[int, Future[Gpu]] = {}  # GPU index → its last read, maybe still hung
        self.last_gpus: dict[int, Gpu] = {}  # GPU index → its last read's values, for a stale GPU
        self.gpm_samples = GpmSamples()  # GPM samples kept for the next collection's diff
        self.health = HealthReader()  # the slow health counters between their reads

    def __enter__(self) -> NvmlSession:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Install the simulator over ``fleet`` (if given) and initialise NVML, or raise
        ``NvmlUnavailable`` with one line saying why and what to do."""
        if self._simulation is not None and self.fleet is not None and self.simulator is None:
            self.simulator = self._simulation.install(self.fleet)
        self._initialise()

    def reopen_if_failed(self) -> None:
        """After NVML failed (see ``mark_failed``), shut it down and initialise it again."""
        if self.initialised:
            return
        self._shutdown_quietly()
        self._initialise()
        log.info("NVML initialised again")

    def mark_failed(self) -> None:
        """A call answered with one of ``errors.NVML_GONE_CODES``: the next collection re-initialises."""
        self.initialised = False
        self.forget_gpus()
        self.versions = None
        self.system_unsupported.clear()
        self.process_names.clear()
        self.gpm_samples.clear()
        self.health.clear()

    def forget_gpu(self, index: int) -> None:
        """Read GPU ``index`` in full next time: it was lost, its MIG mode changed, or this
        process wrote to it (remediate)."""
        known = self.known_gpus.pop(index, None)
        uuid = self.known_uuids.get(index) if known is None or known.identity is None else known.identity.uuid
        if uuid:
            self.mig_capabilities.pop(uuid, None)

    def forget_gpus(self) -> None:
        """Every GPU, as after a hot-plug (the GPU count changed) or NVML initialised again."""
        for index in list(self.known_gpus):
            self.forget_gpu(index)
        self.mig_capabilities.clear()
        self.last_gpus.clear()
        self.gpu_count = None

    def process_start_time(self, pid: int) -> float | None:
        """When ``pid`` started (an opaque value, compared only for equality); None when unknown."""
        if self.simulator is not None:
            return self.simulator.process_start_time(pid)
        return proc_start_time(pid)

    def close(self) -> None:
        if self.initialised:
            self._shutdown_quietly()
            self.initialised = False
        if self._simulation is not None and self.simulator is not None:
            self._simulation.uninstall()
            self.simulator = None

    def _initialise(self) -> None:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            raise NvmlUnavailable(self._init_failure_message(error), str(error),
                                  driver_missing=error.value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND) from None
        self.initialised = True

    def _init_failure_message(self, error: pynvml.NVMLError) -> str:
        if self.fleet is not None:
            return f"--fleet {self.fleet}: the simulated NVML failed to initialise (NVML: {error})"
        reason = _INIT_FAILURES.get(error.value, f"NVML failed to initialise (NVML: {error})")
        return f"{reason}; {TRY_FLEET_HINT}"

    @staticmethod
    def _shutdown_quietly() -> None:
        """nvmlShutdown after a failure: NVML may already consider itself shut down; that is fine."""
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as error:
            log.debug("nvmlShutdown: %s", error)
