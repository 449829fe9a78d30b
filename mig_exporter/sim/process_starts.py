"""Start times of simulated processes, so a pid taken over by another process can be told apart.

A host process has a start time in ``/proc/<pid>/stat``; a simulated one has only what the fleet
says: a pid, a name. The simulator gives each process a start time when it appears: when its pid
was not in the previous state, or was there under another name (the pid reused by another
program). A start time is an ordinal, not a clock reading: only "same start, same process"
matters to its readers, and an ordinal never repeats within a run.
"""

from __future__ import annotations

from itertools import count

from mig_exporter.sim.state import Fleet


class ProcessStarts:
    """pid → (name, start) over the successive states of one simulator. Not thread-safe: the
    simulator calls it under its lock."""

    def __init__(self, fleet: Fleet) -> None:
        self._ordinals = count(1)
        self._starts: dict[int, tuple[str | None, float]] = {}
        self.update(fleet)

    def update(self, fleet: Fleet) -> None:
        """The state changed: processes new or renamed start now, those gone are forgotten."""
        names = {p.pid: p.name for gpu in fleet.gpus for p in gpu.all_processes}
        known = self._starts
        self._starts = {
            pid: known[pid] if pid in known and known[pid][0] == name else (name, float(next(self._ordinals)))
            for pid, name in names.items()
        }

    def of(self, pid: int) -> float | None:
        entry = self._starts.get(pid)
        return None if entry is None else entry[1]
