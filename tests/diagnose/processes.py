"""A real child process standing in for a GPU process, for the attribution tests (hostinfo's and
diagnose's on-host path)."""

from __future__ import annotations

import subprocess
import sys

# Prints once running: until the child has exec'd, /proc shows the environment it inherited from
# the test, not the one it was given.
SLEEPER = (sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)", "serve-model")


def start_sleeper(env: dict[str, str]) -> subprocess.Popen:
    """Start it with exactly ``env`` and return once it runs; the caller kills it."""
    child = subprocess.Popen(SLEEPER, env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child
