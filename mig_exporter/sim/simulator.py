"""``SimulatedNvml``: the object installed as ``pynvml.nvmlLib``.

Attribute access returns the simulated C functions (plain functions, so pynvml can set
``restype`` on them as it does on ctypes functions). Around every call it counts the call, sleeps
the fleet's ``call_latency``, injects the fleet's faults, answers GPU_IS_LOST for a lost GPU and
serialises access to the state with a lock, released while a latency or an injected delay sleeps
so a hung call does not block other threads. A simulator over a fleet file keeps the file and the
state in step: every successful mutation is written back atomically (the original bytes when the
state is back to the state as loaded), a mutation whose state cannot be written fails with
NO_PERMISSION and changes nothing, and an edit of the file on disk is picked up at ``nvmlInit``
and at each ``nvmlDeviceGetCount``.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pynvml

from mig_exporter.sim.atomic_write import write_atomically
from mig_exporter.sim.calls import NvmlFailure, Target
from mig_exporter.sim.faults import NOTHING, FaultInjector
from mig_exporter.sim.fleet import FleetSource, open_fleet, read_fleet_file
from mig_exporter.sim.fleet_checks import FleetError
from mig_exporter.sim.fleet_reader import parse_fleet
from mig_exporter.sim.handles import as_text, decode, value
from mig_exporter.sim.latency import by_family
from mig_exporter.sim.library import NvmlLibrary, c_function_targets
from mig_exporter.sim.process_starts import ProcessStarts
from mig_exporter.sim.state import Fleet, MigMode, ProcessAttribution
from mig_exporter.sim.writeback import updated_fleet_file

log = logging.getLogger(__name__)

# Calls that work before nvmlInit (everything else answers UNINITIALIZED, as NVML does).
_WITHOUT_INIT = frozenset({"nvmlInitWithFlags", "nvmlErrorString"})
# Calls at which an edit of the fleet file is picked up.
_RELOAD_AT = frozenset({"nvmlInitWithFlags", "nvmlDeviceGetCount_v2"})


class SimulatedNvml:
    """A simulated ``libnvidia-ml`` over a fleet. See the package docstring for the public API."""

    def __init__(self, source: FleetSource) -> None:
        self.spec = source.spec
        self.path = source.path
        self.read_only = source.path is None
        self.call_counts: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # notified at each new state
        self._fleet = source.fleet
        self._loaded = source  # the file as last read from disk: its bytes and state
        self._on_disk = source.data  # what the file holds now, as last read or written
        self._file_stamp = self._stamp()
        self._faults = FaultInjector(source.fleet.faults)
        self._per_gpu = _per_gpu(source.fleet)
        self._starts = ProcessStarts(source.fleet)
        self._library = NvmlLibrary(self)
        self._targets = c_function_targets()
        self._functions = {name: self._c_function(name) for name in self._targets}

    @classmethod
    def open(cls, spec: str) -> SimulatedNvml:
        return cls(open_fleet(spec))

    # ---- the state ------------------------------------------------------------------------------

    @property
    def fleet(self) -> Fleet:
        """The current state. Assign a new ``Fleet`` (for example ``fleet.without_process(pid)``)
        to change the simulated world; it is written back like a mutation."""
        with self._lock:
            return self._fleet

    @fleet.setter
    def fleet(self, fleet: Fleet) -> None:
        self.commit(fleet)

    def commit(self, fleet: Fleet) -> None:
        """Make ``fleet`` the state, written back to the fleet file first (never to a built-in): a
        state that cannot be saved is not taken, so the file and what NVML reports never disagree.
        Raises ``OSError`` when the file cannot be written."""
        with self._lock:
            if self.path is not None:
                data = updated_fleet_file(self._loaded, fleet)
                write_atomically(self.path, data)
                self._on_disk = data
                self._file_stamp = self._stamp()
            if fleet.faults != self._fleet.faults:
                self._faults = FaultInjector(fleet.faults)
            self._fleet = fleet
            self._per_gpu = _per_gpu(fleet)
            self._starts.update(fleet)
            self._changed.notify_all()

    def wait(self, seconds: float) -> None:
        """Inside a C function: sleep up to ``seconds`` or until the state changes, with the lock
        released meanwhile (a blocking call such as an event wait must not stop the others)."""
        with self._changed:
            self._changed.wait(seconds)

    def _unsaved(self, call: str, error: OSError) -> int:
        """The NVML code a mutation answers when its new state cannot be written back: NO_PERMISSION
        for a file or directory not writable (as NVML answers a non-root caller), else UNKNOWN. The
        reason is logged, naming the file, since NVML's code cannot carry it."""
        log.error(
            "%s: cannot write the new state back (%s), so %s changed nothing",
            self.path,
            error.strerror or error,
            call,
        )
        not_writable = isinstance(error, PermissionError) or error.errno == errno.EROFS
        return pynvml.NVML_ERROR_NO_PERMISSION if not_writable else pynvml.NVML_ERROR_UNKNOWN

    def _stamp(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino

    def _reload_if_changed(self) -> None:
        """Pick up an edit of the fleet file. A broken edit is logged and the last good state
        kept, so a typo does not take the simulated host down."""
        stamp = self._stamp()
        if self.path is None or stamp is None or stamp == self._file_stamp:
            return
        self._file_stamp = stamp
        try:
            data = read_fleet_file(str(self.path))
            if data == self._on_disk:
                return
            fleet = parse_fleet(data, self.spec)
        except (OSError, FleetError) as error:
            log.warning("fleet file changed but cannot be used, keeping the last good state: %s", error)
            return
        log.info("fleet file %s changed on disk: reloaded", self.path)
        self._loaded = FleetSource(self.spec, self.path, data, fleet)
        self._on_disk = data
        self._fleet = fleet
        self._faults = FaultInjector(fleet.faults)
        self._per_gpu = _per_gpu(fleet)
        self._starts.update(fleet)

    # ---- operations outside NVML ----------------------------------------------------------------

    def reset_gpu(self, index: int) -> None:
        """``nvidia-smi -r -i N``: raises ``pynvml.NVMLError`` IN_USE while processes, other clients
        (``held_by``) or persistence mode hold the GPU; else applies the pending MIG mode and
        clears the GPU and compute instances (they never survive a reset)."""
        with self._lock:
            fleet = self._fleet
            if not 0 <= index < len(fleet.gpus):
                raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            gpu = fleet.gpus[index]
            if gpu.lost:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            if gpu.all_processes or gpu.held_by or gpu.persistence:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_IN_USE)
            mode = MigMode.of(gpu.mig.pending, gpu.mig.pending)
            try:
                self.commit(fleet.with_gpu(index, replace(gpu, mig=mode, instances=(), memory_used_mib=None)))
            except OSError as error:
                raise pynvml.NVMLError(self._unsaved("reset_gpu", error)) from None

    def attribution(self, pid: int) -> ProcessAttribution | None:
        """Who runs ``pid``, as the fleet file says; None when it says nothing of it."""
        return self.fleet.attribution(pid)

    def process_start_time(self, pid: int) -> float | None:
        """When ``pid`` started, as ``/proc`` would say of a host process (see ``ProcessStarts``);
        None when no simulated process has it."""
        with self._lock:
            return self._starts.of(pid)

    def call_families(self) -> Counter[str]:
        """Calls so far per family of C functions (``latency.call_family``): identity, mig, …"""
        with self._lock:
            return by_family(self.call_counts)

    def faults_fired(self) -> Counter[tuple[str, int | None]]:
        """Calls answered with an injected error so far, per (C function, GPU index or None), since
        the fleet's faults were last loaded."""
        with self._lock:
            return Counter(self._faults.errors_fired)

    def c_function_names(self) -> tuple[str, ...]:
        """The C symbols implemented (for the contract test)."""
        return tuple(sorted(self._functions))

    # ---- the C library --------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Callable[..., Any]:
        functions = self.__dict__.get("_functions", {})
        if name in functions:
            return functions[name]
        raise AttributeError(name)  # pynvml turns this into FUNCTION_NOT_FOUND

    def _c_function(self, name: str) -> Callable[..., Any]:
        implementation = getattr(self._library, name)
        where = self._targets[name]

        @functools.wraps(implementation)
        def call(*args: Any) -> Any:
            with self._lock:
                self.call_counts[name] += 1
                if name in _RELOAD_AT:
                    self._reload_if_changed()
                if name not in _WITHOUT_INIT and self._library.init_count == 0:
                    return pynvml.NVML_ERROR_UNINITIALIZED
                # Which GPU a call is about matters only to faults, per-GPU latency and lost GPUs:
                # without them the dispatch skips decoding it, the bulk of its own cost.
                gpu = self._gpu_of_call(where, args) if self._per_gpu else None
                firing = self._faults.fire(name, gpu) if self._faults.faults else NOTHING
                delay = firing.delay_seconds + self._fleet.call_latency.of(name, gpu)
            if delay:
                time.sleep(delay)  # outside the lock: concurrent callers overlap as on a driver
            if firing.error is not None:
                return firing.error
            with self._lock:
                if gpu is not None and gpu < len(self._fleet.gpus) and self._fleet.gpus[gpu].lost:
                    return pynvml.NVML_ERROR_GPU_IS_LOST
                try:
                    return implementation(*args)
                except NvmlFailure as failure:
                    return failure.code
                except OSError as error:  # a C library never raises: the failed write-back is a code
                    return self._unsaved(name, error)

        return call

    def _gpu_of_call(self, where: Target, args: tuple[Any, ...]) -> int | None:
        """The GPU index a call concerns, for faults with ``gpu:`` and for lost GPUs."""
        if where is Target.NONE or not args:
            return None
        if where is Target.INDEX:
            index = value(args[0])
            return index if isinstance(index, int) else None
        if where is Target.UUID:
            return self._library.gpu_index_of_uuid(as_text(args[0]))
        handle = decode(args[0])
        return None if handle is None else handle.gpu


def _per_gpu(fleet: Fleet) -> bool:
    """Whether any call can depend on the GPU it is about: a fault, a per-GPU latency, a lost GPU."""
    return bool(fleet.faults or fleet.call_latency.gpus or any(gpu.lost for gpu in fleet.gpus))
