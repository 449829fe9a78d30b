"""Sessions over simulated fleets for the reader's tests, closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from mig_exporter.host import nvml_session
from mig_exporter.nvml.session import NvmlSession

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
