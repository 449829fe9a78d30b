"""Sessions over simulated fleets for the reader's tests, closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from mig_exporter.host import nvml_session
from mig_exporter.model import Snapshot
from mig_exporter.nvml.read import read_snapshot
from mig_exporter.nvml.session import NvmlSession
from mig_exporter.sim import SimulatedNvml

Opener = Callable[[str], NvmlSession]


@pytest.fixture
def open_session() -> Iterator[Opener]:
    sessions: list[NvmlSession] = []

    def opener(fleet: str) -> NvmlSession:
        session = nvml_session(fleet)
        session.open()
        sessions.append(session)
        return session

    yield opener
    for session in sessions:
        session.close()


def collect(session: NvmlSession) -> Snapshot:
    """One collection that must have read everything."""
    snapshot = read_snapshot(session)
    assert snapshot.nvml_up and not snapshot.errors, snapshot.errors
    return snapshot


def simulator(session: NvmlSession) -> SimulatedNvml:
    """The simulator behind a session opened on a fleet."""
    assert isinstance(session.simulator, SimulatedNvml)
    return session.simulator
