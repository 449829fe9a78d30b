"""NVML's error codes by name, read from pynvml, for the real side of the seam.

The writer names a failure's code for the operator (``In use by another client (IN_USE)``). The
simulator reads the same names from pynvml in ``sim/codes.py``, on its own side of the seam.
"""

from __future__ import annotations

import pynvml

# NVML_ERROR_* without the prefix → code, e.g. "IN_USE" → 19 (pynvml has no two names for one code).
NVML_ERROR_CODES: dict[str, int] = {
    name.removeprefix("NVML_ERROR_"): code
    for name, code in vars(pynvml).items()
    if name.startswith("NVML_ERROR_") and isinstance(code, int)
}
# And back: code → name without the prefix.
NVML_ERROR_NAMES: dict[int, str] = {code: name for name, code in NVML_ERROR_CODES.items()}

# Errors after which NVML itself is unusable until it is shut down and initialised again.
NVML_GONE_CODES = frozenset({
    pynvml.NVML_ERROR_UNINITIALIZED,
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
})
