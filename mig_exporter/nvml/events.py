"""XID errors from NVML events, counted per GPU and XID by a thread of their own.

NVML delivers XID errors (``nvmlEventTypeXidCriticalError``) as events, not as a value to read:
missed while nobody waits, they are gone. So a watcher thread registers every GPU in one event
set (by UUID, as collections find them) and waits on it (``nvmlEventSetWait_v2`` with a
timeout, so it notices ``stop``), counting each event once. Collections never wait for it:
``with_xid_errors`` copies the counts so far into a Snapshot. A GPU whose registration NVML
answers NOT_SUPPORTED has no counter at all (absent, not 0) and ``xid_events_supported`` False;
one whose registration failed otherwise is tried again every ``retry_seconds``. When the wait
itself fails (NVML re-initialised, a GPU lost), the set is freed and its GPUs registered again in
a new one; the counts are kept, by GPU UUID.

Registering costs two NVML calls per GPU, once, not per collection.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pynvml

from mig_exporter.model import Snapshot

log = logging.getLogger(__name__)

XID_EVENTS = pynvml.nvmlEventTypeXidCriticalError
_UNSUPPORTED = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})


class XidWatcher:
    """Start once NVML is open; stop before ``nvmlShutdown``. The GPUs to watch are those of the
    Snapshots passed to ``with_xid_errors``: the thread registers each new one by UUID, so it
    never asks NVML for the GPU list itself and registers nothing before the first collection.

    ``on_error(call)`` is told of each NVML call that failed (not of timeouts or NOT_SUPPORTED),
    so the exporter can count it beside the collections' errors.
    """

    def __init__(
        self, wait_ms: int = 1000, retry_seconds: float = 30.0,
        on_error: Callable[[str], None] = lambda call: None,
    ) -> None:
        self._wait_ms = wait_ms
        self._retry_seconds = retry_seconds
        self._on_error = on_error
        self._stopping = False
        self._wake = threading.Event()  # a new GPU to register, or stop
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, int]] = Counter()  # (GPU UUID, XID) → events
        self._supported: dict[str, bool] = {}  # GPU UUID → whether NVML gives its XID events
        self._wanted: dict[str, float] = {}  # GPU UUID not registered yet → when to try (monotonic)
        self._event_set: Any = None
        self._by_handle: dict[int, str] = {}  # registered device handle pointer → GPU UUID
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nvml-xid-events", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Stop waiting and free the event set; a thread hung inside NVML is left to itself (its
        set is not freed under it)."""
        self._stopping = True
        self._wake.set()
        if self._thread is None:
            return
        self._thread.join(timeout_seconds + self._wait_ms / 1000)
        if self._thread.is_alive():
            log.warning("the XID event thread is still inside NVML; leaving it")
            return
        self._free()

    def with_xid_errors(self, snapshot: Snapshot) -> Snapshot:
        """``snapshot`` with each GPU's XID counts so far (by UUID, so a lost GPU keeps them);
        a GPU not watched yet is handed to the thread to register."""
        with self._lock:
            counts = dict(self._counts)
            supported = dict(self._supported)
            new = [g.uuid for g in snapshot.gpus
                   if g.uuid and not g.lost and g.uuid not in supported and g.uuid not in self._wanted]
            self._wanted.update(dict.fromkeys(new, 0.0))
        if new:
            self._wake.set()
        gpus = tuple(
            replace(gpu, xid_events_supported=supported.get(gpu.uuid),
                    xid_errors=None if not supported.get(gpu.uuid) else tuple(sorted(
                        (xid, count) for (uuid, xid), count in counts.items() if uuid == gpu.uuid)))
            for gpu in snapshot.gpus
        )
        return replace(snapshot, gpus=gpus)

    # ---- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self._register_due()
            if not self._by_handle:
                self._wake.wait(self._next_retry())
                self._wake.clear()
                continue
            try:
                data = pynvml.nvmlEventSetWait_v2(self._event_set, self._wait_ms)
            except pynvml.NVMLError as error:
                if error.value != pynvml.NVML_ERROR_TIMEOUT:
                    self._failed("nvmlEventSetWait_v2", error)
                    self._free(retry_in=min(self._retry_seconds, 1.0))
                continue
            self._count(data)

    def _next_retry(self) -> float | None:
        """Seconds until a GPU is due to be registered again; None: none waits (sleep until woken)."""
        with self._lock:
            due = min(self._wanted.values(), default=None)
        return None if due is None else max(0.0, due - time.monotonic())

    def _register_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [uuid for uuid, at in self._wanted.items() if at <= now]
        for uuid in due:
            supported = self._register(uuid)
            with self._lock:
                if supported is None:
                    self._wanted[uuid] = time.monotonic() + self._retry_seconds
                else:
                    del self._wanted[uuid]
                    self._supported[uuid] = supported

    def _register(self, uuid: str) -> bool | None:
        """Whether NVML gives the GPU's XID events; None after a failure (tried again later)."""
        call = "nvmlEventSetCreate"
        try:
            if self._event_set is None:
                self._event_set = pynvml.nvmlEventSetCreate()
            call = "nvmlDeviceGetHandleByUUID"
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
            call = "nvmlDeviceRegisterEvents"
            pynvml.nvmlDeviceRegisterEvents(handle, XID_EVENTS, self._event_set)
        except pynvml.NVMLError as error:
            if call == "nvmlDeviceRegisterEvents" and error.value in _UNSUPPORTED:
                return False
            self._failed(call, error)
            return None
        self._by_handle[_pointer(handle)] = uuid
        return True

    def _count(self, data: Any) -> None:
        uuid = self._by_handle.get(_pointer(data.device))
        if not data.eventType & XID_EVENTS or uuid is None:
            return
        log.warning("XID %d on GPU %s", data.eventData, uuid)
        with self._lock:
            self._counts[uuid, data.eventData] += 1

    def _failed(self, call: str, error: pynvml.NVMLError) -> None:
        log.warning("XID events: %s failed: %s", call, error)
        self._on_error(call)

    def _free(self, retry_in: float | None = None) -> None:
        """Free the set; with ``retry_in``, register its GPUs again in a new one after that long."""
        if self._event_set is not None:
            try:
                pynvml.nvmlEventSetFree(self._event_set)
            except pynvml.NVMLError as error:
                log.debug("nvmlEventSetFree: %s", error)
        if retry_in is not None:
            with self._lock:
                for uuid in self._by_handle.values():
                    self._supported.pop(uuid, None)
                    self._wanted[uuid] = time.monotonic() + retry_in
        self._event_set = None
        self._by_handle.clear()


def _pointer(handle: Any) -> int:
    return ctypes.cast(handle, ctypes.c_void_p).value or 0
