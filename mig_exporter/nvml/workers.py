"""A small, bounded pool of daemon threads for NVML reads.

ctypes releases the GIL inside a C call, so GPUs read on several threads overlap their NVML
latency. ``concurrent.futures.ThreadPoolExecutor`` would do, except that its threads are joined
when the interpreter exits: a call hung in the driver (a GPU falling off the bus) would then keep
``serve`` from exiting on SIGTERM. These threads are daemons, and a caller never waits on one
beyond its own deadline.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Task = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]
# Enough to overlap the latency of an 8-GPU host; more threads would only contend for the driver.
MAX_WORKERS = 8


class Workers:
    """``submit(function, *args)`` → a Future; at most ``size`` run at once, started on demand."""

    def __init__(self, size: int = MAX_WORKERS) -> None:
        self.size = size
        self._tasks: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, function: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._tasks.put((future, function, args))
        with self._lock:
            if len(self._threads) < self.size:
                name = f"nvml-read-{len(self._threads)}"
                thread = threading.Thread(target=self._work, name=name, daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self) -> None:
        while True:
            future, function, args = self._tasks.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(*args))
            except BaseException as error:  # handed to whoever waits on the future
                future.set_exception(error)
