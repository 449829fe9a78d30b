"""The checks every part of a fleet file goes through, and the one-line error they raise.

Each check knows the file and the path inside it (``gpus[2].instances[1].placement``), so a person
editing a fleet by hand reads where and why in one line, without reading code.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from mig_exporter.errors import InputError, shown_key

# Bounds of values NVML hands out in C unsigned ints, so a typo is refused rather than wrapped.
UINT_MAX = 0xFFFFFFFF
MAX_DELAY_SECONDS = 86400.0  # a hang longer than a day is a typo (and time.sleep's limit is near)


class FleetError(InputError):
    """A fleet that cannot be used: not found, not YAML, or not a host NVML could report."""


class Checks:
    """Shape and scalar checks of a parsed document, each raising ``FleetError`` with its path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, reason: str) -> FleetError:
        return FleetError(f"{self.source}: {path}: {reason}" if path else f"{self.source}: {reason}")

    # ---- scalars and shapes ---------------------------------------------------------------------

    def mapping(self, raw: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(raw, dict):
            what = "the top level" if not path else "this"
            raise self.error(path, f"{what} must be a mapping with keys {', '.join(allowed)}")
        for key in raw:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                allowed_keys = ", ".join(allowed)
                raise self.error(join(path, shown_key(key)), f"unknown key{hint}; allowed: {allowed_keys}")
        for key in required:
            if key not in raw:
                raise self.error(path, f"{key} is required")
        return raw

    def sequence(self, raw: Any, path: str) -> list:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise self.error(path, "must be a list")
        return raw

    def integer(self, raw: Any, path: str, minimum: int | None = None, maximum: int | None = None) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self.error(path, f"{raw!r} is not a whole number")
        if minimum is not None and raw < minimum:
            raise self.error(path, f"{raw} is less than {minimum}")
        if maximum is not None and raw > maximum:
            raise self.error(path, f"{raw} is more than {maximum}")
        return raw

    def number(self, raw: Any, path: str, minimum: float = 0.0, maximum: float = math.inf) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise self.error(path, f"{raw!r} is not a number")
        if raw < minimum:
            raise self.error(path, f"{raw} is less than {minimum:g}")
        if raw > maximum:
            raise self.error(path, f"{raw} is more than {maximum:g}")
        return float(raw)

    def boolean(self, raw: Any, path: str) -> bool:
        if not isinstance(raw, bool):
            raise self.error(path, f"{raw!r} is not true or false")
        return raw

    def string(self, raw: Any, path: str) -> str:
        if not isinstance(raw, str) or not raw:
            hint = " (quote it)" if isinstance(raw, (int, float)) and not isinstance(raw, bool) else ""
            raise self.error(path, f"{raw!r} is not a non-empty string{hint}")
        return raw

    def any_mapping(self, raw: Any, path: str) -> dict:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.error(path, "must be a mapping")
        return raw



def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
