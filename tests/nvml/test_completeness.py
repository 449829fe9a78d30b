"""What a reading could not see, recorded per GPU (``Gpu.unread``) through the real pynvml on the
simulated library: the planner and verify decide on it, never on pynvml function names."""

from __future__ import annotations

from pathlib import Path

import pytest

from mig_exporter.nvml.read import read_snapshot

from .conftest import Opener
from .test_read import PARTITIONED_GPU, fleet_file


@pytest.mark.parametrize(("call", "unread"), [
    ("nvmlDeviceGetMigMode", {"mig_mode"}),
    ("nvmlDeviceGetPersistenceMode", {"persistence"}),
    ("nvmlDeviceGetGpuInstancePossiblePlacements_v2", {"mig_capability"}),
    ("nvmlDeviceGetGpuInstances", {"gpu_instances"}),
    ("nvmlDeviceGetAttributes_v2", {"mig_devices"}),
    ("nvmlDeviceGetComputeRunningProcesses_v3", {"processes"}),
    ("nvmlDeviceGetPowerUsage", set()),  # telemetry: nothing a plan rests on
])
def test_a_failed_call_marks_the_part_it_reads(tmp_path: Path, open_session: Opener, call: str,
                                              unread: set[str]) -> None:
    fault = f"- {{call: {call}, error: UNKNOWN, count: 1}}\n"
    session = open_session(fleet_file(tmp_path, PARTITIONED_GPU, fault))
    first = read_snapshot(session)
    assert first.errors and first.gpus[0].unread == unread
    assert read_snapshot(session).gpus[0].unread == frozenset()  # the fault is spent: all read


def test_a_clean_reading_leaves_nothing_unread(tmp_path: Path, open_session: Opener) -> None:
    snapshot = read_snapshot(open_session(fleet_file(tmp_path, PARTITIONED_GPU)))
    assert not snapshot.errors and snapshot.gpus[0].unread == frozenset()
