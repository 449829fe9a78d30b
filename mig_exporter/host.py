"""The one place that opens a host: the real NVML library, or a simulated fleet for ``--fleet``.

``nvml/`` and ``sim/`` never import each other (DESIGN.md); this module joins them. The simulator is
imported only when a fleet is named, so a real host never loads it or its fleet files.
"""

from __future__ import annotations

from mig_exporter.nvml.session import NvmlSession


def nvml_session(fleet: str | None) -> NvmlSession:
    """An unopened session over the host's GPUs, or over the simulated ``fleet`` (a name or a path)."""
    if fleet is None:
        return NvmlSession()
    from mig_exporter import sim

    return NvmlSession(fleet, simulation=sim)
