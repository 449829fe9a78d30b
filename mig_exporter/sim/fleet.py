"""Opening a fleet: a fleet file by path, or a built-in fleet by name, checked into a ``Fleet``.

The jobs around it live beside it: ``fleet_reader`` (the validating reader), ``fleet_dump`` (the
canonical YAML), ``builtin_fleets`` and ``atomic_write`` (the simulator's write-back).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mig_exporter.sim.builtin_fleets import builtin_names, builtin_text
from mig_exporter.sim.fleet_checks import FleetError
from mig_exporter.sim.fleet_reader import parse_fleet
from mig_exporter.sim.state import Fleet


@dataclass(frozen=True)
class FleetSource:
    """A fleet with where it came from: ``path`` None for a built-in fleet; ``data`` the bytes read
    (kept to restore the file byte for byte)."""

    spec: str
    path: Path | None
    data: bytes
    fleet: Fleet


def open_fleet(spec: str) -> FleetSource:
    """``spec`` is a fleet file path or, when no such file exists, a built-in fleet's name."""
    path = Path(spec)
    if path.exists() and not path.is_file():
        raise FleetError(f"{spec}: not a regular file; give a fleet file or a built-in fleet's name")
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as error:
            raise FleetError(f"{spec}: cannot read: {error.strerror}") from None
        return FleetSource(spec, path, data, parse_fleet(data, spec))
    if spec in builtin_names():
        data = builtin_text(spec).encode()
        return FleetSource(spec, None, data, parse_fleet(data, spec))
    raise FleetError(
        f"{spec}: no such fleet file, and not a built-in fleet (built-in: {', '.join(builtin_names())})"
    )


def load_fleet(spec: str) -> Fleet:
    return open_fleet(spec).fleet
