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
