"""The built-in fleets: YAML files shipped in ``sim/builtin/``, read-only, named without ``.yaml``."""

from __future__ import annotations

from importlib import resources
from typing import Any

from mig_exporter.sim.fleet_checks import FleetError


def builtin_names() -> tuple[str, ...]:
    return tuple(
        sorted(
            entry.name.removesuffix(".yaml")
            for entry in _builtin_dir().iterdir()
            if entry.name.endswith(".yaml")
        )
    )


def builtin_text(name: str) -> str:
    """The YAML of a built-in fleet, as shipped (with its comments)."""
    if name not in builtin_names():
        raise FleetError(f"{name}: not a built-in fleet (built-in: {', '.join(builtin_names())})")
    return _builtin_dir().joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def _builtin_dir() -> Any:
    return resources.files("mig_exporter.sim").joinpath("builtin")
