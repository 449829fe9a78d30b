"""The write side: NVML failures named, and a real GPU's reset run as ``nvidia-smi -r -i N``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mig_exporter.host import nvml_session
from mig_exporter.nvml.session import NvmlSession
from mig_exporter.nvml.write import HardwareWriter, WriteFailed
from mig_exporter.sim import SimulatedNvml

from .fleets import incident_copy

IN_USE_OUTPUT = """The following GPUs could not be reset:
  GPU 00000000:07:00.0: In use by another client

1 device is currently being used by one or more other processes (e.g., Fabric Manager, CUDA application)."""


@pytest.fixture
def nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """Puts a fake ``nvidia-smi`` first on PATH; returns a function that sets what it does."""
    directory = tmp_path / "bin"
    directory.mkdir()
    program = directory / "nvidia-smi"
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")

    def behave(script: str) -> Path:
        program.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path / 'arguments'}\n{script}\n")
        program.chmod(0o755)
        return tmp_path / "arguments"

    return behave


@pytest.fixture
def host_session(tmp_path: Path) -> Iterator[tuple[NvmlSession, SimulatedNvml]]:
    """A session as on a host with a driver: NVML answers (from a simulated fleet), but the session
    has no simulator, so a reset goes to ``nvidia-smi``."""
    with nvml_session(str(incident_copy(tmp_path))) as session:
        simulator = session.simulator
        assert simulator is not None
        session.simulator = None
        try:
            yield session, simulator
        finally:
            session.simulator = simulator


def test_reset_on_a_host_runs_nvidia_smi_as_an_argument_list_with_nvml_let_go(
    nvidia_smi: Callable[[str], Path], host_session: tuple[NvmlSession, SimulatedNvml]
) -> None:
    arguments = nvidia_smi("exit 0")
    session, simulator = host_session
    initialised = simulator.call_counts["nvmlInitWithFlags"]
    HardwareWriter(session).reset_gpu(3)
    assert arguments.read_text().split("\n")[:3] == ["-r", "-i", "3"]
    assert simulator.call_counts["nvmlShutdown"] == 1
    assert simulator.call_counts["nvmlInitWithFlags"] == initialised + 1  # and NVML is back for the rest


def test_a_refused_reset_says_why_and_that_the_gpu_is_in_use(
    nvidia_smi: Callable[[str], Path], host_session: tuple[NvmlSession, SimulatedNvml]
) -> None:
    nvidia_smi(f"cat <<'END'\n{IN_USE_OUTPUT}\nEND\nexit 255")
    with pytest.raises(WriteFailed) as raised:
        HardwareWriter(host_session[0]).reset_gpu(0)
    assert raised.value.in_use and raised.value.call == "nvidia-smi -r -i 0"
    assert "GPU 00000000:07:00.0: In use by another client" in raised.value.reason


def test_nvml_failures_name_the_call_and_the_error(tmp_path: Path) -> None:
    with nvml_session(str(incident_copy(tmp_path))) as session:
        writer = HardwareWriter(session)
        with pytest.raises(WriteFailed) as raised:
            writer.create_gpu_instance(0, 2, 4, 4)  # MIG is disabled on GPU 0
        assert str(raised.value) == (
            "GPU 0: nvmlDeviceCreateGpuInstanceWithPlacement failed: Not Supported (NOT_SUPPORTED)")
        assert writer.set_mig_mode(0, True).activated is False  # processes hold the GPU
