"""Memory units as the project shows them: whole MiB, as ``nvidia-smi`` does.

NVML reports bytes and the Snapshot keeps bytes; the fleet file, ``diagnose`` and ``remediate``
speak MiB. The conversion and the way an unknown figure is written live here once, so the two
reports print the same number for the same process.
"""

from __future__ import annotations

MIB = 1024 * 1024


def mib_figure(byte_count: int | None) -> int | str:
    """Whole MiB (rounded down), or ``?`` when NVML gave no figure."""
    return "?" if byte_count is None else byte_count // MIB


def format_mib(byte_count: int | None) -> str:
    """``3752 MiB``, or ``?`` when NVML gave no figure."""
    return "?" if byte_count is None else f"{byte_count // MIB} MiB"
