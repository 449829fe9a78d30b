"""The Prometheus tools the tests run, found on PATH.

A missing tool fails the test instead of skipping it: ``scripts/test`` installs Debian's
``prometheus`` and ``prometheus-alertmanager``, so a missing one is a broken set-up, not an
optional feature.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest


def required_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: run scripts/test, which installs it from Debian's packages")
    return path


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``name args…`` and returns its result whatever the exit status (the caller asserts it)."""
    return subprocess.run([required_binary(name), *args], capture_output=True, text=True, timeout=120)
