"""The journal: one JSON line per event, written and synced before and after each mutation.

If the run dies half-way (power, kill -9, a hung driver), the journal says which steps were begun
and which were finished, so an operator, or the runbook, can tell what the hardware was left in.
Lines are appended, never rewritten, and every run has its own ID.
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
    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_id = uuid.uuid4().hex[:12]
        self._file: IO[str] | None = None

    def __enter__(self) -> Journal:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a")
        except OSError as error:
            raise InputError(f"--journal {self.path}: {error.strerror}") from error
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
