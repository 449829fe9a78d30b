"""The exporter assembled in-process over the simulator: scrapes never reach NVML."""

from __future__ import annotations

import sys
import time
from collections import Counter

import requests

from mig_exporter.exporter.flags import ListenAddress
from mig_exporter.exporter.service import SWITCH_INTERVAL_SECONDS, Exporter, ServeConfig
from mig_exporter.host import nvml_session

XID_THREAD_CALLS = frozenset({"nvmlEventSetCreate", "nvmlDeviceGetHandleByUUID", "nvmlDeviceRegisterEvents",
                              "nvmlEventSetWait_v2"})


def collection_calls(call_counts: Counter[str]) -> int:
    """NVML calls other than the XID event thread's, which waits on NVML all along."""
    return sum(count for name, count in call_counts.items() if name not in XID_THREAD_CALLS)


def test_scrapes_never_call_nvml() -> None:
    with nvml_session("seed-incident") as session:
        assert session.simulator is not None
        exporter = Exporter(session, ServeConfig(ListenAddress("127.0.0.1", 0), interval_seconds=3600,
                                                 timeout_seconds=5))
        exporter.start()
        try:
            base = f"http://127.0.0.1:{exporter.server.port}"
            deadline = time.monotonic() + 10
            while requests.get(base + "/health", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "the first collection did not finish"
                time.sleep(0.02)
            calls_after_collecting = collection_calls(session.simulator.call_counts)
            for path in ("/metrics", "/health", "/") * 20:
                assert requests.get(base + path, timeout=5).status_code == 200
            assert calls_after_collecting > 0
            assert collection_calls(session.simulator.call_counts) == calls_after_collecting
        finally:
            exporter.stop()


def test_the_gpm_window_ceiling_admits_the_collection_interval() -> None:
    """With --collect.interval 5m every GPM window is 5 minutes long: a fixed 120 s ceiling would
    refuse each of them, and GPM series would never appear."""
    with nvml_session("h100-mixed") as session:
        for interval, ceiling in ((5, 120.0), (300, 900.0)):
            exporter = Exporter(session, ServeConfig(ListenAddress("127.0.0.1", 0), interval_seconds=interval,
                                                     timeout_seconds=5))
            exporter.server.server_close()
            assert session.gpm_samples.ceiling_seconds == ceiling


def test_while_serving_a_waiting_thread_gets_the_gil_within_half_a_millisecond() -> None:
    """The event loop gives the GIL up at each system call and must get it back quickly while a
    collection renders on another thread; the interpreter's setting is restored at stop."""
    before = sys.getswitchinterval()
    with nvml_session("seed-incident") as session:
        exporter = Exporter(session, ServeConfig(ListenAddress("127.0.0.1", 0), interval_seconds=3600,
                                                 timeout_seconds=5))
        exporter.start()
        try:
            assert sys.getswitchinterval() == SWITCH_INTERVAL_SECONDS < before
        finally:
            exporter.stop()
    assert sys.getswitchinterval() == before
