"""Sizes for tests marked ``long``: small enough for every CI run, bigger on request.

Imported as ``from long import scaled`` (tests/ is on the path, as for ``simulated_gpus``).

A ``long`` test runs in the normal suite (CI skips nothing) at its CI size, ``scaled(n)``
with the default factor 1. ``MIG_EXPORTER_LONG_SCALE=10 .venv/bin/pytest -m long`` is the
long run: every count passed through ``scaled`` is ten times bigger.
"""

from __future__ import annotations

import os

SCALE_VARIABLE = "MIG_EXPORTER_LONG_SCALE"


def scale() -> int:
    """The factor from ``MIG_EXPORTER_LONG_SCALE`` (a whole number of at least 1; 1 when unset)."""
    text = os.environ.get(SCALE_VARIABLE, "").strip() or "1"
    try:
        factor = int(text)
    except ValueError:
        raise ValueError(f"{SCALE_VARIABLE}={text!r}: not a whole number") from None
    if factor < 1:
        raise ValueError(f"{SCALE_VARIABLE}={text!r}: below 1")
    return factor


def scaled(count: int) -> int:
    """``count`` at CI size, times the long factor when one is set."""
    return count * scale()
