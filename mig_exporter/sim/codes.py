"""NVML's error codes by name, as the simulated library and fleet files' ``faults:`` name them.

Read from pynvml, like ``nvml/errors.py`` on the real side: both sides take the names from the same
bindings, so they agree without the simulator importing ``nvml/`` (DESIGN.md keeps the two apart).
"""

from __future__ import annotations

import pynvml

# NVML_ERROR_* without the prefix → code, e.g. "IN_USE" → 19.
NVML_ERROR_CODES: dict[str, int] = {
    name.removeprefix("NVML_ERROR_"): code
    for name, code in vars(pynvml).items()
    if name.startswith("NVML_ERROR_") and isinstance(code, int)
}
NVML_ERROR_NAMES: dict[int, str] = {code: name for name, code in NVML_ERROR_CODES.items()}
