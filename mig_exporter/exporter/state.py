"""What the HTTP side serves: the last snapshot, already rendered, and whether it is fresh.

The exposition text is rendered once per collection (and once per abandoned one, for the timeout
counter), not once per scrape: a scrape is then a memory copy, as fast as a static file, and no
number of scrapers can make the exporter do NVML or formatting work. This is the fix for the
scrape time-outs and CPU use that per-scrape exporters suffer (conventions.md).
"""

from __future__ import annotations

import gzip
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry, generate_latest

from mig_exporter.exporter.collector import (
    ExporterSettings,
    ExporterTotals,
    SnapshotCollector,
    process_series_dropped,
)
from mig_exporter.kubelet.podresources import DeviceAllocation
from mig_exporter.model import Snapshot

# /health turns 503 when no collection has finished for this many intervals.
STALE_AFTER_INTERVALS = 3


@dataclass(frozen=True)
class Exposition:
    """One rendering of every series, plain and gzip-compressed (Prometheus asks for gzip)."""

    plain: bytes
    gzipped: bytes


@dataclass(frozen=True)
class Health:
    healthy: bool
    reason: str  # one line, the body of /health


def health(last_finished: float | None, now: float, interval_seconds: float) -> Health:
    """Healthy when a collection finished within the last three intervals (monotonic seconds)."""
    if last_finished is None:
        return Health(False, "no collection has finished yet")
    age = now - last_finished
    if age > STALE_AFTER_INTERVALS * interval_seconds:
        return Health(False, f"no collection has finished for {age:.1f}s "
                             f"(more than {STALE_AFTER_INTERVALS} intervals of {interval_seconds:g}s)")
    return Health(True, f"ok: last collection finished {age:.1f}s ago")


class ExporterState:
    """Thread-safe: the scheduler publishes, the HTTP threads read ``exposition``."""

    def __init__(
        self, settings: ExporterSettings,
        allocations: Callable[[], Mapping[str, DeviceAllocation]] = dict,
    ) -> None:
        """``allocations`` gives the kubelet's last answer at each rendering (it never blocks)."""
        self.settings = settings
        self._allocations = allocations
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._totals = ExporterTotals()
        self._last_finished: float | None = None  # time.monotonic()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(self._current, settings))
        self.exposition = self._render()

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def publish(self, snapshot: Snapshot) -> None:
        """A collection finished: serve it from now on."""
        with self._lock:
            errors = Counter(self._totals.errors_by_call)
            errors.update(error.call for error in snapshot.errors)
            self._totals = replace(
                self._totals, errors_by_call=dict(errors),
                process_series_dropped=self._totals.process_series_dropped
                + process_series_dropped(snapshot, self.settings.max_process_series),
                process_names_skipped=self._totals.process_names_skipped + snapshot.process_names_skipped,
            )
            self._snapshot = snapshot
            self._last_finished = time.monotonic()
            self.exposition = self._render()

    def record_timeout(self) -> None:
        """A collection was abandoned: keep serving the last snapshot, count the timeout."""
        with self._lock:
            self._totals = replace(self._totals, timeouts=self._totals.timeouts + 1)
            self.exposition = self._render()

    def record_error(self, call: str) -> None:
        """A failure outside a collection (a kubelet poll): counted from the next rendering on."""
        with self._lock:
            errors = Counter(self._totals.errors_by_call)
            errors[call] += 1
            self._totals = replace(self._totals, errors_by_call=dict(errors))

    def health(self) -> Health:
        return health(self._last_finished, time.monotonic(), self.settings.interval_seconds)

    def _current(self) -> tuple[Snapshot | None, ExporterTotals]:
        return self._snapshot, replace(self._totals, allocations=self._allocations())

    def _render(self) -> Exposition:
        plain = generate_latest(self.registry)
        return Exposition(plain, gzip.compress(plain, compresslevel=6))
