"""The fleet the commands diagnose advises must name, which is not always the one it read.

A built-in fleet is read-only: ``remediate --apply`` refuses it, because it is never written. Advice
that ends in ``--apply`` on it would end in that refusal, so on a built-in fleet the commands name
a copy, ``fleet.yaml``, that a first step makes with ``mig-exporter fleet show``. A fleet file and
the host's GPUs (no ``--fleet``) are named as they are.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

WRITABLE_COPY = "fleet.yaml"  # the name remediate's own refusal suggests for the copy


@dataclass(frozen=True)
class FleetTarget:
    """``fleet``: the ``--fleet`` diagnose ran on (None: the host's NVML); ``built_in``: it is one of
    the read-only built-in fleets (``SimulatedNvml.read_only``)."""

    fleet: str | None = None
    built_in: bool = False

    @property
    def remediate_fleet(self) -> str | None:
        """The ``--fleet`` of the advised ``remediate`` commands."""
        return WRITABLE_COPY if self.copy_command is not None else self.fleet

    @property
    def copy_command(self) -> str | None:
        """The command to run before any advised ``remediate``; None when none is needed."""
        if not self.built_in or self.fleet is None:
            return None
        return f"{shlex.join(('mig-exporter', 'fleet', 'show', self.fleet))} > {WRITABLE_COPY}"
