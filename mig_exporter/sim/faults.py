"""Fault injection at run time: which of the fleet file's faults fire on a call.

The faults themselves are data (``state.Fault``); how many matching calls each has seen is run-time
state kept here, so ``skip`` and ``count`` work across calls, and start again when the fleet file
is reloaded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from mig_exporter.sim.state import Fault


@dataclass(frozen=True)
class Firing:
    """What the matching faults do to one call: hang this long, then fail with ``error`` (None:
    go on and answer normally)."""

    delay_seconds: float = 0.0
    error: int | None = None


NOTHING = Firing()


class FaultInjector:
    """Counts matching calls per fault. Not thread-safe: the simulator calls it under its lock."""

    def __init__(self, faults: tuple[Fault, ...]) -> None:
        self.faults = faults
        self._matched = [0] * len(faults)
        # (C function, GPU index or None) → calls answered with an injected error: what a test
        # checks the reader's output against (which values really were not read).
        self.errors_fired: Counter[tuple[str, int | None]] = Counter()

    def fire(self, call: str, gpu: int | None) -> Firing:
        """Every fault on ``call`` (on ``gpu``, or on any GPU) counts the call; those past their
        ``skip`` and within their ``count`` fire: their delays add up, the first error wins."""
        delay = 0.0
        error: int | None = None
        for i, fault in enumerate(self.faults):
            if fault.call != call or (fault.gpu is not None and fault.gpu != gpu):
                continue
            self._matched[i] += 1
            fired_before = self._matched[i] - 1 - fault.skip
            if fired_before < 0 or (fault.count is not None and fired_before >= fault.count):
                continue
            delay += fault.delay_seconds
            if error is None:
                error = fault.error
        if error is not None:
            self.errors_fired[call, gpu] += 1
        return Firing(delay, error) if delay or error is not None else NOTHING
