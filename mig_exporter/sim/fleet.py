"""Opening a fleet: a built-in fleet by name, or a fleet file by path, checked into a ``Fleet``.

The jobs around it live beside it: ``fleet_reader`` (the validating reader), ``fleet_dump`` (the
canonical YAML), ``builtin_fleets`` and ``atomic_write`` (the simulator's write-back).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mig_exporter.errors import read_small_file
from mig_exporter.sim.builtin_fleets import builtin_names, builtin_text
from mig_exporter.sim.fleet_checks import FleetError
from mig_exporter.sim.fleet_reader import parse_fleet
from mig_exporter.sim.state import Fleet

log = logging.getLogger(__name__)

# A fleet file of a real host is kilobytes; the benchmarks' 10,000 processes are under 1 MiB. Past
# this it is the wrong file (/dev/zero, a disk image), and reading it whole would only grow memory.
MAX_FLEET_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class FleetSource:
    """A fleet with where it came from: ``path`` None for a built-in fleet; ``data`` the bytes read
    (kept to restore the file byte for byte)."""

    spec: str
    path: Path | None
    data: bytes
    fleet: Fleet


def open_fleet(spec: str) -> FleetSource:
    """``spec`` is a built-in fleet's name or else a fleet file's path.

    A built-in name always means the built-in fleet, even where a file of that name exists in the
    current directory (that file is named ``./seed-incident``): what ``--fleet seed-incident``
    simulates never depends on the directory it is run from. The shadowed file is warned about."""
    if spec in builtin_names():
        if os.path.lexists(spec):
            log.warning(
                "--fleet %s: simulating the built-in fleet %s, not the file %s here; "
                "to simulate the file, give it as ./%s",
                spec, spec, spec, spec,
            )
        data = builtin_text(spec).encode()
        return FleetSource(spec, None, data, parse_fleet(data, spec))
    data = read_fleet_file(spec)
    return FleetSource(spec, Path(spec), data, parse_fleet(data, spec))


def read_fleet_file(spec: str) -> bytes:
    """The bytes of fleet file ``spec``, refusing what cannot be one: a FIFO, a device, a
    directory, a file over ``MAX_FLEET_FILE_BYTES`` (the same guard as the other config files)."""
    try:
        return read_small_file(spec, MAX_FLEET_FILE_BYTES)
    except FileNotFoundError:
        raise FleetError(
            f"{spec}: no such fleet file, and not a built-in fleet (built-in: {', '.join(builtin_names())})"
        ) from None
    except OSError as error:
        raise FleetError(f"{spec}: cannot read: {error.strerror}") from None
    except ValueError as error:
        raise FleetError(f"{spec}: {error}; give a fleet file or a built-in fleet's name") from None


def load_fleet(spec: str) -> Fleet:
    return open_fleet(spec).fleet
