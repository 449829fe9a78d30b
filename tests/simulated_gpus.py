"""One GPU of each model, as the reader records it through the simulator: what hand-built
Snapshots of the pure parts (planner, advice, diagnose) take their name, PCI ID, memory and MIG
capability from, so those tests see only what NVML reports, never the simulator's tables.

Every model is read in one session, the first time one is asked for, and kept for the test run.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from mig_exporter.capability import GpuInstanceProfile, MigCapability, match_profile
from mig_exporter.host import nvml_session
from mig_exporter.model import Gpu
from mig_exporter.nvml.read import read_snapshot

# The model keys of DESIGN.md's fleet-file contract.
MODEL_KEYS = ("A100-SXM4-40GB", "A100-SXM4-80GB", "A100-PCIE-80GB", "A30", "H100-SXM5-80GB", "H100-NVL",
              "H200")


@functools.cache
def _read_all() -> dict[str, Gpu]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "every-model.yaml"
        path.write_text("gpus:\n" + "".join(f"  - model: {key}\n" for key in MODEL_KEYS))
        session = nvml_session(str(path))
        session.open()
        try:
            snapshot = read_snapshot(session)
        finally:
            session.close()
    assert snapshot.nvml_up and not snapshot.errors, snapshot.errors
    return dict(zip(MODEL_KEYS, snapshot.gpus, strict=True))


def read_gpu(model: str) -> Gpu:
    """A GPU of ``model`` (a fleet-file key), MIG off, as the reader gave it."""
    return _read_all()[model]


def capability(model: str) -> MigCapability:
    found = read_gpu(model).mig_capability
    assert found is not None, model
    return found


def profile(model: str, name: str) -> GpuInstanceProfile:
    found = match_profile(capability(model), name)
    assert found is not None, (model, name)
    return found
