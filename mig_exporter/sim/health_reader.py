"""The ``health`` of a GPU in a fleet file: energy, PCIe replays, clock event reasons, remapped
rows, retired pages and NVLink errors, as the health calls of the simulator report them."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from mig_exporter.sim.fleet_checks import Checks
from mig_exporter.sim.health_calls import CLOCK_EVENT_REASONS
from mig_exporter.sim.state import Health, NvlinkErrors, RetiredPages, RowRemapping

HEALTH_KEYS = tuple(f.name for f in fields(Health))


def read_health(checks: Checks, raw: Any, path: str) -> Health:
    entry = checks.mapping(raw, path, HEALTH_KEYS)
    reasons = tuple(checks.string(r, f"{path}.clock_event_reasons[{i}]") for i, r in enumerate(
        checks.sequence(entry.get("clock_event_reasons"), f"{path}.clock_event_reasons")))
    for i, reason in enumerate(reasons):
        if reason not in CLOCK_EVENT_REASONS:
            raise checks.error(f"{path}.clock_event_reasons[{i}]",
                               f"{reason!r} is not a clock event reason ({', '.join(CLOCK_EVENT_REASONS)})")
    return Health(
        energy_joules=checks.number(entry.get("energy_joules", 0.0), f"{path}.energy_joules", maximum=1e15),
        pcie_replays=checks.integer(entry.get("pcie_replays", 0), f"{path}.pcie_replays", 0, 2**63),
        clock_event_reasons=reasons,
        remapped_rows=_counters(checks, entry, "remapped_rows", path, RowRemapping) or RowRemapping(),
        retired_pages=_counters(checks, entry, "retired_pages", path, RetiredPages),
        nvlink_errors=_counters(checks, entry, "nvlink_errors", path, NvlinkErrors),
    )


def _counters(checks: Checks, entry: dict, key: str, path: str, kind: Any) -> Any:
    """A mapping of counts (and flags, for the ``bool`` fields) into ``kind``; None if not given."""
    if key not in entry:
        return None
    names = tuple(f.name for f in fields(kind))
    values = checks.mapping(entry[key], f"{path}.{key}", names)
    flags = {f.name for f in fields(kind) if f.type == "bool"}
    return kind(**{name: checks.boolean(values[name], f"{path}.{key}.{name}") if name in flags
                   else checks.integer(values[name], f"{path}.{key}.{name}", 0, 2**63)
                   for name in names if name in values})
