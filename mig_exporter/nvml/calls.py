"""One NVML call as the reader makes it: counted, its error confined to the value it concerns, and
a call the GPU never supports made once per session, not once per collection.

How an NVML error is treated (docs/metrics.md says the same to operators):

- NOT_SUPPORTED, and FUNCTION_NOT_FOUND or ``NVMLLibraryMismatchError`` (a driver older than the
  call): this GPU does not give that value. The value is absent and no error is counted, because
  nothing is wrong and a counter that grows forever on healthy MIG GPUs (utilization is never
  supported there) would only teach people to ignore it. The answer is remembered for the GPU
  (``unsupported``) until the session forgets the GPU (NVML re-initialised, the GPU lost, its MIG
  mode changed, remediate wrote to it): asking again every collection would cost a call per
  collection for nothing.
- GPU_IS_LOST: the GPU is reported as lost with its last known UUID; the other GPUs are still read.
  From a call about no GPU (the GPU count, the driver or NVML version) it is treated as NVML gone.
- UNINITIALIZED, DRIVER_NOT_LOADED, LIB_RM_VERSION_MISMATCH, LIBRARY_NOT_FOUND: NVML itself is gone.
  The collection stops with ``nvml_up`` False and the session initialises NVML again next time.
- Anything else: a ``CollectionError`` naming the call, and the value is absent.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Hashable
from typing import Any

import pynvml

from mig_exporter.model import CollectionError
from mig_exporter.nvml.errors import NVML_GONE_CODES

_ABSENT_CODES = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})


class GpuLost(Exception):
    """GPU_IS_LOST: stop reading this GPU."""


class NvmlGone(Exception):
    """NVML itself failed: stop the collection."""


class HandleGone(Exception):
    """A kept handle was refused with one of the codes the caller named (``gone``): what it
    pointed at was destroyed since it was read."""


class Collection:
    """The calls of one collection about one GPU (or about none): how many, which failed, and
    the GPU's calls known to be unsupported (the session's set, shared across collections)."""

    def __init__(self, unsupported: set[Hashable] | None = None) -> None:
        self.calls = 0
        self.skipped = 0  # calls not made because the GPU never supports them
        self.unsupported_answers = 0  # calls answered "absent" (NOT_SUPPORTED now or before)
        self.errors: list[CollectionError] = []
        self.unsupported = unsupported if unsupported is not None else set()

    def failed_since(self, errors_before: int) -> bool:
        """Whether a call failed (not just answered "absent") since there were ``errors_before``."""
        return len(self.errors) > errors_before

    def call(
        self, function: Callable[..., Any], *args: Any, gpu: int | None = None,
        expected: frozenset[int] = frozenset(), gone: frozenset[int] = frozenset(),
    ) -> Any:
        """``function(*args)``, or None when the value is absent. ``expected`` lists error codes
        that are an answer rather than a failure here (NOT_FOUND for an empty MIG slot); ``gone``
        codes raise ``HandleGone`` instead."""
        key = (function.__name__, *map(_argument_key, args))
        if key in self.unsupported:
            self.skipped += 1
            self.unsupported_answers += 1
            return None
        self.calls += 1
        try:
            return function(*args)
        except pynvml.NVMLLibraryMismatchError:
            self.unsupported.add(key)
            self.unsupported_answers += 1
            return None
        except pynvml.NVMLError as error:
            code = error.value
            if code in _ABSENT_CODES:
                self.unsupported.add(key)
                self.unsupported_answers += 1
                return None
            if code in expected:
                return None
            if code in gone:
                raise HandleGone from None
            self.errors.append(CollectionError(function.__name__, str(error), gpu))
            if code == pynvml.NVML_ERROR_GPU_IS_LOST:
                raise GpuLost from None
            if code in NVML_GONE_CODES:
                raise NvmlGone from None
            return None


def _argument_key(argument: Any) -> Hashable:
    """What identifies an argument across collections: a handle by its address (the session keeps
    handles), a number or string by itself, an output buffer by its type."""
    if isinstance(argument, ctypes._Pointer):
        return ctypes.cast(argument, ctypes.c_void_p).value
    return argument if isinstance(argument, (int, str, bytes)) else type(argument).__name__
