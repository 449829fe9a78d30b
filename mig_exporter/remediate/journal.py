"""The journal: one JSON line per event, written and synced before and after each mutation.

If the run dies half-way (power, kill -9, a hung driver), the journal says which steps were begun
and which were finished, so an operator, or the runbook, can tell what the hardware was left in.
Lines are appended, never rewritten, and every run has its own ID. A run that finds an earlier
one begun and never ended says so in its first line, ``unfinished-run-found``: the layout it
completes is then not mistaken for the earlier run's.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from mig_exporter.errors import InputError


class Journal:
    """``create_parent`` as for ``HostLock``: only the default path's directory is made."""

    def __init__(self, path: Path, create_parent: bool = False) -> None:
        self.path = path
        self.create_parent = create_parent
        self.run_id = uuid.uuid4().hex[:12]
        self._file: IO[str] | None = None

    def __enter__(self) -> Journal:
        try:
            if self.create_parent:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            elif not self.path.parent.is_dir():
                raise InputError(f"--journal {self.path}: the directory {self.path.parent} does not exist")
            unfinished = unfinished_runs(self.path)
            self._file = self.path.open("a")
            if self._file.tell() and not self.path.read_bytes().endswith(b"\n"):
                self._file.write("\n")  # a line cut short by a kill stays a line of its own
        except OSError as error:
            raise InputError(f"--journal {self.path}: {error.strerror}") from error
        for run in unfinished:
            self.record("unfinished-run-found", unfinished_run=run)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def record(self, event: str, **fields: Any) -> None:
        """Append one event and sync it to disk before returning."""
        assert self._file is not None, "the journal is not open"
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run": self.run_id, "event": event, **fields}
        self._file.write(json.dumps(line, sort_keys=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())


def unfinished_runs(path: Path) -> list[str]:
    """IDs of the runs in the journal with a ``run-start`` and no ``run-end`` (killed half-way),
    since the last run that already reported them."""
    if not path.exists():
        return []
    begun: dict[str, None] = {}
    for text in path.read_text(errors="replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue  # a line cut short by the kill
        if not isinstance(line, dict):
            continue
        if line.get("event") == "run-start":
            begun[str(line.get("run"))] = None
        elif line.get("event") in ("run-end", "unfinished-run-found"):
            begun.pop(str(line.get("unfinished_run", line.get("run"))), None)
    return list(begun)
