"""Signal handlers that leave alone a signal the parent process ignores.

A shell starts a background job (``cmd &`` in a script) with SIGINT ignored, so that a Ctrl-C at
the terminal does not reach it, and a supervisor may ignore a signal on purpose. The classic idiom
keeps that: ``if (signal(SIGINT, SIG_IGN) != SIG_IGN) signal(SIGINT, handler)``. Python itself
leaves an ignored SIGINT ignored; ``serve`` and ``remediate --apply`` install their handlers the
same way, so neither stops (or undoes a run) on a signal its parent meant it not to see.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any]


def handle_unless_ignored(signums: Iterable[int], handler: Handler) -> dict[int, Any]:
    """Install ``handler`` for each signal not ignored now; the handlers it replaced, by signal,
    for ``restore``."""
    return {signum: signal.signal(signum, handler)
            for signum in signums if signal.getsignal(signum) is not signal.SIG_IGN}


def restore(previous: dict[int, Any]) -> None:
    """Give back the handlers ``handle_unless_ignored`` replaced."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)
