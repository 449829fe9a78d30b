"""Collections in the background: bounded by the timeout, never piling up behind a hung read."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from mig_exporter.exporter.collector import ExporterSettings
from mig_exporter.exporter.schedule import CollectionJob, start_collecting
from mig_exporter.exporter.state import ExporterState
from mig_exporter.host import nvml_session
from mig_exporter.model import CollectionError, Snapshot
from mig_exporter.nvml.read import read_snapshot

from .snapshots import incident


class HangingRead:
    """A read that blocks until released, like an NVML call stuck in the driver."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self) -> Snapshot:
        self.calls += 1
        self.release.wait(10)
        return incident()


def new_state() -> ExporterState:
    return ExporterState(ExporterSettings(interval_seconds=1))


def test_a_finished_read_is_published() -> None:
    state = new_state()
    CollectionJob(incident, state, timeout_seconds=5)()
    assert state.snapshot == incident() and state.health().healthy


def test_a_hung_read_is_abandoned_and_no_second_read_starts_while_it_hangs(
        caplog: pytest.LogCaptureFixture) -> None:
    state = new_state()
    state.publish(incident())
    served = state.exposition
    read = HangingRead()
    job = CollectionJob(read, state, timeout_seconds=0.05)
    job()
    assert job.read_in_flight and read.calls == 1
    assert b"mig_exporter_collection_timeouts_total 1.0" in state.exposition.plain
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mig_exporter.exporter.schedule"):
        job()
        job()
    assert read.calls == 1  # no pile-up
    assert [r.getMessage() for r in caplog.records] == [  # said once, not every interval
        "the previous NVML read is still hung; no new read starts until it returns"]
    assert state.snapshot == incident() and b"nvml_up 1.0" in state.exposition.plain
    assert served.plain.replace(b"timeouts_total 0.0", b"timeouts_total 1.0") == state.exposition.plain

    read.release.set()
    deadline = time.monotonic() + 5
    while job.read_in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    job()  # the hung read came back: the next collection starts a fresh one
    assert read.calls == 2 and not job.read_in_flight


def test_a_read_that_raises_publishes_nothing_and_logs_one_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    state = new_state()

    def broken() -> Snapshot:
        raise RuntimeError("bug")

    job = CollectionJob(broken, state, timeout_seconds=1)
    with caplog.at_level(logging.INFO, logger="mig_exporter.exporter.schedule"):
        for _ in range(3):
            job()
    assert state.snapshot is None and not state.health().healthy
    assert [r.exc_info is not None for r in caplog.records] == [True, False, False]


def test_gpu_is_lost_from_the_gpu_count_is_nvml_down_then_recovers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # issue 11: GPU_IS_LOST from nvmlDeviceGetCount kept the stale snapshot (nvml_up 1), logged a
    # traceback every interval and never re-initialised NVML.
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("gpus:\n  - model: A100-SXM4-80GB\n"
                     "faults:\n  - {call: nvmlDeviceGetCount_v2, error: GPU_IS_LOST, count: 2}\n")
    state = new_state()
    with nvml_session(str(fleet)) as session, \
            caplog.at_level(logging.INFO, logger="mig_exporter.exporter.schedule"):
        job = CollectionJob(lambda: read_snapshot(session), state, timeout_seconds=5)
        up = []
        for _ in range(3):
            job()
            assert state.snapshot is not None
            up.append(state.snapshot.nvml_up)
    assert up == [False, False, True] and len(state.snapshot.gpus) == 1
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("WARNING", "NVML unreachable: nvmlDeviceGetCount: GPU is lost", None),
        ("INFO", "NVML answers without errors again", None),
    ]


def test_the_first_collection_runs_at_start() -> None:
    state = new_state()
    published = threading.Event()

    def read() -> Snapshot:
        published.set()
        return incident()

    scheduler = start_collecting(CollectionJob(read, state, timeout_seconds=1), interval_seconds=3600)
    try:
        assert published.wait(5)
        deadline = time.monotonic() + 5
        while state.snapshot is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state.snapshot == incident()
        job = scheduler.get_job("collect")
        assert (job.max_instances, job.coalesce) == (1, True)
    finally:
        scheduler.shutdown(wait=False)


def test_errors_are_logged_when_they_change_not_every_collection(caplog: pytest.LogCaptureFixture) -> None:
    failing = replace(incident(), errors=(CollectionError("nvmlDeviceGetPowerUsage", "Unknown Error", 1),))
    results = iter([failing, failing, incident()])
    job = CollectionJob(lambda: next(results), new_state(), timeout_seconds=5)
    with caplog.at_level(logging.INFO, logger="mig_exporter.exporter.schedule"):
        for _ in range(3):
            job()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "NVML errors: nvmlDeviceGetPowerUsage on GPU 1: Unknown Error"),
        ("INFO", "NVML answers without errors again"),
    ]


def test_nvml_counting_no_gpus_is_logged_when_it_starts_and_ends(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 11, item 8: with no GPU, serve exported nvml_up 1 and nothing else, silently."""
    none = replace(incident(), gpus=())
    results = iter([none, none, incident()])
    job = CollectionJob(lambda: next(results), new_state(), timeout_seconds=5)
    with caplog.at_level(logging.INFO, logger="mig_exporter.exporter.schedule"):
        for _ in range(3):
            job()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "NVML reports no GPUs: none passed into this container, or none bound to the nvidia "
                    "driver (nvidia-smi -L); serving nvml_up and no GPU series"),
        ("INFO", f"NVML reports {len(incident().gpus)} GPU(s) again"),
    ]
