"""Fake NVML handles and the ctypes plumbing of the C calling convention.

NVML handles are opaque pointers. The simulator writes integers into ``c_nvmlDevice_t`` and
friends that encode what they point at (kind, GPU index, GPU instance ID, compute instance ID) and
decodes them on later calls, checking against the current state, so a handle to a destroyed
instance is refused like a dangling one. Arguments reach the simulator as pynvml passes them to
the C library: plain ints or ctypes scalars, ``byref`` outputs, arrays, string buffers.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

_TAG = 0x5E0 << 36  # high bits that mark a pointer as one of ours
MAX_GPUS = 1 << 16  # a handle holds the GPU index in 16 bits


class Kind(IntEnum):
    DEVICE = 1
    MIG_DEVICE = 2
    GPU_INSTANCE = 3
    COMPUTE_INSTANCE = 4


@dataclass(frozen=True)
class Handle:
    """What a fake pointer points at. ``gpu_instance``/``compute_instance`` are IDs, 0 when the kind
    has none."""

    kind: Kind
    gpu: int
    gpu_instance: int = 0
    compute_instance: int = 0

    @property
    def value(self) -> int:
        return _TAG | self.kind << 32 | self.gpu << 16 | self.gpu_instance << 8 | self.compute_instance


def decode(pointer: Any) -> Handle | None:
    """The handle a ctypes pointer argument carries, or None for NULL or a pointer not ours."""
    if pointer is None:
        return None
    try:
        value = ctypes.cast(pointer, ctypes.c_void_p).value
    except ctypes.ArgumentError:
        return None
    if value is None or value & ~((1 << 36) - 1) != _TAG:
        return None
    try:
        kind = Kind(value >> 32 & 0xF)
    except ValueError:
        return None
    return Handle(kind, value >> 16 & 0xFFFF, value >> 8 & 0xFF, value & 0xFF)


def target(out: Any) -> Any:
    """The object an output argument refers to: ``byref(x)`` → x, ``pointer(x)`` → x, x → x."""
    if out is None:
        return None
    obj = getattr(out, "_obj", None)  # CArgObject from byref()
    if obj is not None:
        return obj
    if isinstance(out, ctypes._Pointer):
        return out.contents
    return out


def write_handle(out: Any, handle: Handle) -> None:
    """Store ``handle`` in a ``c_nvml*_t`` output (``byref`` of a pointer variable)."""
    ctypes.c_void_p.from_buffer(target(out)).value = handle.value


def write_handle_at(array: Any, index: int, handle: Handle) -> None:
    ctypes.c_void_p.from_buffer(array, index * ctypes.sizeof(ctypes.c_void_p)).value = handle.value


def as_pointer(handle: Handle, pointer_type: Any) -> Any:
    """``handle`` as a value of ``pointer_type`` (for handle fields inside structs)."""
    return ctypes.cast(ctypes.c_void_p(handle.value), pointer_type)


def value(arg: Any) -> Any:
    """An input argument as a Python value: ctypes scalars and ``c_char_p`` unwrap to ``.value``."""
    return arg.value if isinstance(arg, ctypes._SimpleCData) else arg


def as_text(arg: Any) -> str:
    """A C string input argument (``c_char_p`` or bytes, as pynvml passes them) as text."""
    raw = value(arg)
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def write_string(buffer: Any, length: Any, text: str) -> bool:
    """Copy ``text`` into a caller's char buffer of ``length`` bytes; False when it does not fit
    (the caller answers INSUFFICIENT_SIZE, as NVML does)."""
    data = text.encode()
    if len(data) + 1 > value(length):
        return False
    ctypes.memmove(buffer, data + b"\0", len(data) + 1)
    return True


def array_capacity(array: Any) -> int | None:
    """Element count of a ctypes array argument, None when the caller passed a bare pointer."""
    array = target(array)
    return len(array) if isinstance(array, ctypes.Array) else None
