"""Collections in the background: one NVML read every ``--collect.interval``, each bounded by
``--collect.timeout``, never two at once.

NVML calls can hang (a GPU falling off the bus, a driver stuck in a reset), and Python cannot
interrupt a thread blocked in C. So each read runs in its own daemon thread and the job only waits
for it up to the timeout: past it, the job gives up (the timeout is counted, the last snapshot
keeps being served, ``/health`` goes stale) and later jobs start no new read while the hung one
is still inside NVML, so hung threads cannot pile up. A read that finishes after its timeout is
dropped: every published snapshot took at most the timeout.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from mig_exporter.exporter.state import ExporterState
from mig_exporter.findings import reports_no_gpus
from mig_exporter.model import CollectionError, Snapshot

log = logging.getLogger(__name__)


class CollectionJob:
    """The scheduler's job: read, wait up to the timeout, publish."""

    def __init__(self, read: Callable[[], Snapshot], state: ExporterState, timeout_seconds: float) -> None:
        self._read = read
        self._state = state
        self._timeout_seconds = timeout_seconds
        self._in_flight: concurrent.futures.Future[Snapshot] | None = None
        self._last_errors: frozenset[CollectionError] = frozenset()
        self._hang_reported = False
        self._last_failure: str | None = None
        self._no_gpus = False  # the last collection's NVML counted no GPU

    @property
    def read_in_flight(self) -> bool:
        """True while a read (possibly an abandoned, hung one) is still inside NVML."""
        return self._in_flight is not None and not self._in_flight.done()

    def __call__(self) -> None:
        if self.read_in_flight:
            # Once per hang, not every interval: a GPU can stay hung for hours, and /health and
            # the timeouts counter already say so.
            if not self._hang_reported:
                log.warning("the previous NVML read is still hung; no new read starts until it returns")
                self._hang_reported = True
            return
        self._hang_reported = False
        future: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()
        self._in_flight = future
        threading.Thread(target=self._run_read, args=(future,), name="nvml-read", daemon=True).start()
        try:
            snapshot = future.result(timeout=self._timeout_seconds)
        except concurrent.futures.TimeoutError:
            log.warning("collection abandoned after --collect.timeout %gs; serving the last snapshot",
                        self._timeout_seconds)
            self._state.record_timeout()
            return
        except Exception as error:
            # The traceback once; the same failure again is one line, not a traceback per interval.
            if repr(error) != self._last_failure:
                log.exception("collection failed")
            else:
                log.error("collection failed again: %r", error)
            self._last_failure = repr(error)
            return
        self._last_failure = None
        self._state.publish(snapshot)
        self._log_error_changes(snapshot)
        self._log_no_gpus(snapshot)
        log.debug("collected %d GPUs in %.3fs with %d NVML calls and %d errors", len(snapshot.gpus),
                  snapshot.duration_seconds, snapshot.nvml_calls, len(snapshot.errors))

    def _log_error_changes(self, snapshot: Snapshot) -> None:
        """A line when the errors differ from the last collection's, not one every interval."""
        errors = frozenset(snapshot.errors)
        if errors != self._last_errors:
            if errors:
                log.warning("NVML %s: %s", "unreachable" if not snapshot.nvml_up else "errors", "; ".join(
                    f"{e.call}{'' if e.gpu_index is None else f' on GPU {e.gpu_index}'}: {e.error}"
                    for e in snapshot.errors))
            else:
                log.info("NVML answers without errors again")
        self._last_errors = errors

    def _log_no_gpus(self, snapshot: Snapshot) -> None:
        """A line when NVML starts or stops counting no GPU: nvml_up 1 with no GPU series looks
        like a healthy host on a dashboard (issue 11, item 8)."""
        no_gpus = reports_no_gpus(snapshot)
        if no_gpus and not self._no_gpus:
            log.warning("NVML reports no GPUs: none passed into this container, or none bound to the "
                        "nvidia driver (nvidia-smi -L); serving nvml_up and no GPU series")
        elif self._no_gpus and not no_gpus and snapshot.gpus:
            log.info("NVML reports %d GPU(s) again", len(snapshot.gpus))
        self._no_gpus = no_gpus

    def _run_read(self, future: concurrent.futures.Future[Snapshot]) -> None:
        try:
            future.set_result(self._read())
        except BaseException as error:  # handed to the waiting job, which logs it
            future.set_exception(error)


def start_collecting(job: CollectionJob, interval_seconds: float) -> BackgroundScheduler:
    """Run ``job`` now and then every interval. ``max_instances=1`` and ``coalesce`` keep a slow
    collection from queueing more runs behind it: missed runs collapse into one."""
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    scheduler.add_job(
        job, IntervalTrigger(seconds=interval_seconds, timezone=timezone.utc), id="collect",
        name="NVML collection", max_instances=1, coalesce=True, misfire_grace_time=None,
        next_run_time=datetime.now(timezone.utc),
    )
    scheduler.start()
    return scheduler
