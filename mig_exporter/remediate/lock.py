"""One ``remediate --apply`` per host at a time.

Two runs planning from the same Snapshot would each place instances in the space the other is
about to take. An advisory ``flock`` is released by the kernel when the process dies, so a crash
never leaves a stale lock; the file keeps the holder's pid only to name it in the refusal.

The file is removed when the lock is released, so a run refused for bad input leaves nothing
behind. That is safe because a run that wins ``flock`` then checks that the path still names the
file it locked: one that locked a file already removed by the previous holder tries again.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import IO

from mig_exporter.errors import InputError


class HostLock:
    """``create_parent``: make a missing directory (the defaults); a path the user gave must be
    in a directory that exists, so a typo is refused rather than a lock taken somewhere else."""

    def __init__(self, path: Path, create_parent: bool = False) -> None:
        self.path = path
        self.create_parent = create_parent
        self._file: IO[str] | None = None

    def __enter__(self) -> HostLock:
        while True:
            handle = self._open()
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise InputError(f"--lock {self.path}: another mig-exporter remediate (pid {holder}) "
                                 "is applying changes on this host; wait for it to finish") from None
            if _same_file(handle, self.path):
                break
            handle.close()  # the previous holder removed it between our open and our flock
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return self

    def _open(self) -> IO[str]:
        try:
            if self.create_parent:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            elif not self.path.parent.is_dir():
                raise InputError(f"--lock {self.path}: the directory {self.path.parent} does not exist")
            return self.path.open("a+")
        except OSError as error:
            raise InputError(f"--lock {self.path}: {error.strerror}") from error

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._file is not None:
            self.path.unlink(missing_ok=True)  # still held: no other run can be using this file
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
