"""XID errors through the real pynvml on the simulated event calls: the watcher thread counts each
event once while collections run beside it, never blocks them, keeps a GPU whose events NVML does
not support without a counter (absent, not 0), and survives a failed wait by registering again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from mig_exporter.model import Snapshot
from mig_exporter.nvml.events import XidWatcher
from mig_exporter.nvml.read import read_snapshot
from mig_exporter.sim.state import XidEvent

from .conftest import Opener, simulator
from .test_read import fleet_file

WAIT = "nvmlEventSetWait_v2"
THREE_GPUS = """
  - model: H100-SXM5-80GB
    xid_events:
      - {xid: 79, after_seconds: 0.2}
      - {xid: 48, after_seconds: 0.4}
      - {xid: 79, after_seconds: 0.6}
  - model: A100-SXM4-80GB
    mig: enabled
    instances: [{profile: 3g.40gb}]
    xid_events:
      - {xid: 94, after_seconds: 0.3, gpu_instance: 2}
  - model: A100-SXM4-80GB
    xid_events:
      - {xid: 13, after_seconds: 0.1}
"""
# The third GPU's events are not supported (as on some virtualised GPUs).
UNSUPPORTED_ON_GPU_2 = """
- {call: nvmlDeviceRegisterEvents, gpu: 2, error: NOT_SUPPORTED}
"""


def eventually(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def xid_view(snapshot: Snapshot) -> list[tuple[bool | None, tuple[tuple[int, int], ...] | None]]:
    return [(g.xid_events_supported, g.xid_errors) for g in snapshot.gpus]


@pytest.fixture
def watchers() -> Callable[..., XidWatcher]:
    started: list[XidWatcher] = []

    def start(**kwargs: object) -> XidWatcher:
        watcher = XidWatcher(**kwargs)  # type: ignore[arg-type]
        watcher.start()
        started.append(watcher)
        return watcher

    yield start  # type: ignore[misc]
    for watcher in started:
        watcher.stop()


def test_events_delivered_while_collections_run_are_counted_once_each(
    tmp_path: Path, open_session: Opener, watchers: Callable[..., XidWatcher],
) -> None:
    session = open_session(fleet_file(tmp_path, THREE_GPUS, UNSUPPORTED_ON_GPU_2))
    errors: list[str] = []
    watcher = watchers(wait_ms=200, on_error=errors.append)
    expected = [(True, ((48, 1), (79, 2))), (True, ((94, 1),)), (False, None)]
    collections = 0

    def counted() -> bool:
        nonlocal collections
        snapshot = read_snapshot(session)
        assert snapshot.nvml_up and not snapshot.errors, snapshot.errors
        collections += 1
        return xid_view(watcher.with_xid_errors(snapshot)) == expected

    eventually(counted, "the XID events were not all counted")
    # the waits go on beside more collections; nothing is counted twice
    waits = simulator(session).call_counts[WAIT]
    eventually(lambda: simulator(session).call_counts[WAIT] >= waits + 3, "the watcher stopped waiting")
    for _ in range(3):
        assert xid_view(watcher.with_xid_errors(read_snapshot(session))) == expected
    assert collections >= 1 and errors == []
    # registered once each, by UUID: two calls per GPU, none per collection, none retried
    calls = simulator(session).call_counts
    assert (calls["nvmlDeviceGetHandleByUUID"], calls["nvmlDeviceRegisterEvents"]) == (3, 3)


def test_a_waiting_watcher_never_blocks_a_collection(
    tmp_path: Path, open_session: Opener, watchers: Callable[..., XidWatcher],
) -> None:
    """The watcher waits with a 60 s timeout; a collection made meanwhile finishes inside that one
    wait (had the wait held the simulated library, the collection would end only at its timeout,
    after a second wait had begun)."""
    session = open_session(fleet_file(tmp_path, "\n  - model: H100-SXM5-80GB\n"))
    sim = simulator(session)
    watcher = watchers(wait_ms=60_000)
    watcher.with_xid_errors(read_snapshot(session))  # the first collection hands the GPU over
    eventually(lambda: sim.call_counts[WAIT] == 1, "the watcher did not start waiting")
    for _ in range(3):
        snapshot = watcher.with_xid_errors(read_snapshot(session))
        assert snapshot.nvml_up and xid_view(snapshot) == [(True, ())]
    assert sim.call_counts[WAIT] == 1
    # stopping waits for the wait to return; an XID now wakes it, it delivers it and the thread ends
    stopping = threading.Thread(target=watcher.stop)
    stopping.start()
    gpu = sim.fleet.gpus[0]
    sim.fleet = sim.fleet.with_gpu(0, replace(gpu, xid_events=(XidEvent(63, 0.0),)))
    stopping.join(30)
    assert not stopping.is_alive(), "the wait did not wake for the XID"
    assert xid_view(watcher.with_xid_errors(read_snapshot(session))) == [(True, ((63, 1),))]
    assert sim.call_counts[WAIT] == 1


def test_a_failed_wait_registers_again_and_keeps_the_counts(
    tmp_path: Path, open_session: Opener, watchers: Callable[..., XidWatcher],
) -> None:
    gpus = """
  - model: H100-SXM5-80GB
    xid_events:
      - {xid: 31, after_seconds: 0.0}
      - {xid: 43, after_seconds: 1.0}
"""
    # the second wait fails: the set is freed and the GPU registered in a new set, which receives
    # only what happens after it registered (XID 43), not XID 31 a second time
    faults = "- {call: nvmlEventSetWait_v2, error: UNKNOWN, skip: 1, count: 1}\n"
    session = open_session(fleet_file(tmp_path, gpus, faults))
    errors: list[str] = []
    watcher = watchers(wait_ms=100, retry_seconds=0.1, on_error=errors.append)
    eventually(lambda: xid_view(watcher.with_xid_errors(read_snapshot(session)))
               == [(True, ((31, 1), (43, 1)))], "the XIDs were not counted once each")
    sim = simulator(session)
    assert errors == [WAIT]
    assert (sim.call_counts["nvmlEventSetCreate"], sim.call_counts["nvmlEventSetFree"]) == (2, 1)


def test_before_registration_and_without_a_watcher_nothing_is_claimed(
    tmp_path: Path, open_session: Opener,
) -> None:
    session = open_session(fleet_file(tmp_path, THREE_GPUS))
    watcher = XidWatcher()  # not started: nothing known of any GPU
    assert xid_view(watcher.with_xid_errors(read_snapshot(session))) == [(None, None)] * 3
    watcher.stop()


def test_stop_frees_the_set_and_ends_the_thread(
    tmp_path: Path, open_session: Opener,
) -> None:
    session = open_session(fleet_file(tmp_path, THREE_GPUS))
    sim = simulator(session)
    watcher = XidWatcher(wait_ms=100)
    watcher.start()
    watcher.with_xid_errors(read_snapshot(session))
    eventually(lambda: sim.call_counts[WAIT] >= 1, "the watcher did not start waiting")
    watcher.stop()
    waits = sim.call_counts[WAIT]
    assert sim.call_counts["nvmlEventSetFree"] == 1
    time.sleep(0.3)  # three wait timeouts: a thread still running would have waited again
    assert sim.call_counts[WAIT] == waits
