"""The checked-in kubelet stubs are exactly what scripts/generate-kubelet-stubs makes from api.proto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STUBS = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


def test_checked_in_stubs_match_the_proto(tmp_path):
    subprocess.run([str(REPO / "scripts" / "generate-kubelet-stubs"), str(tmp_path)], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    for name in STUBS:
        generated = (tmp_path / "mig_exporter" / "kubelet" / "v1" / name).read_text()
        checked_in = (REPO / "mig_exporter" / "kubelet" / "v1" / name).read_text()
        assert generated == checked_in, f"{name} drifted: run scripts/generate-kubelet-stubs"
