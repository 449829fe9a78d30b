"""Fixtures for the simulator's tests: the real pynvml over a simulated fleet, torn down after."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pynvml
import pytest

from mig_exporter.sim import SimulatedNvml, install, uninstall

StartNvml = Callable[[str], SimulatedNvml]


@pytest.fixture
def fleet_file(tmp_path: Path) -> Callable[[str], Path]:
    """Write a fleet file's YAML to a temporary file and return its path."""

    def write(text: str, name: str = "fleet.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def start_nvml(fleet_file: Callable[[str], Path]) -> Iterator[StartNvml]:
    """``start_nvml(spec_or_yaml)``: install the simulator over a built-in fleet name, or over YAML
    text written to a temporary fleet file, and ``nvmlInit``. Shut down and uninstalled after."""
    started: list[SimulatedNvml] = []

    def start(fleet: str) -> SimulatedNvml:
        spec = fleet if "\n" not in fleet else str(fleet_file(fleet))
        simulator = install(spec)
        started.append(simulator)
        pynvml.nvmlInit()
        return simulator

    yield start
    if started:
        with contextlib.suppress(pynvml.NVMLError):
            while True:  # until NVML answers UNINITIALIZED: every nvmlInit of the test undone
                pynvml.nvmlShutdown()
        uninstall()
