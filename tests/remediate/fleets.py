"""Fleet files in tmp dirs, the ``remediate`` command run on them, and the hardware read back."""

from __future__ import annotations

import io
import json
from collections import Counter
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from mig_exporter.cli import main
from mig_exporter.host import nvml_session
from mig_exporter.model import Snapshot
from mig_exporter.nvml.read import read_snapshot
from mig_exporter.sim import Fleet, builtin_text, load_fleet, parse_fleet
from mig_exporter.sim.state import SimGpu


def incident_copy(directory: Path) -> Path:
    """``mig-exporter fleet show seed-incident > fleet.yaml``, as the refusal of built-ins says."""
    shown = io.StringIO()
    with redirect_stdout(shown):
        assert main(["fleet", "show", "seed-incident"]) == 0
    path = directory / "fleet.yaml"
    path.write_text(shown.getvalue())
    return path


def write_fleet(directory: Path, document: dict[str, Any], name: str = "fleet.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def incident_document(without_processes_on: tuple[int, ...] = ()) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(builtin_text("seed-incident"))
    for index in without_processes_on:
        document["gpus"][index].pop("processes")
        document["gpus"][index].pop("memory_used_mib", None)
    return document


def remediate(directory: Path, fleet: Path, *arguments: str) -> int:
    """``mig-exporter remediate --fleet FLEET …``; with ``--apply``, its journal and lock in
    ``directory`` (without it they are refused: a plan takes no lock and journals nothing)."""
    state = ["--journal", str(directory / "journal.jsonl"), "--lock", str(directory / "remediate.lock")]
    return main(["remediate", "--fleet", str(fleet), *(state if "--apply" in arguments else []), *arguments])


def read(fleet: Path) -> Snapshot:
    """The simulated hardware as the reader sees it."""
    with nvml_session(str(fleet)) as session:
        return read_snapshot(session)


def busy_instances(gpu: SimGpu) -> set[tuple[int, int, int, tuple[int, ...]]]:
    """The GPU instances with processes, as (ID, profile ID, placement, pids): none may be lost."""
    return {
        (gi.id, gi.profile_id, gi.start, tuple(p.pid for p in gi.processes))
        for gi in gpu.instances
        if gi.processes
    }


def reaches(gpu: SimGpu, layout: list[str]) -> bool:
    """MIG on (not pending), GPU instances of exactly ``layout``'s profiles, each with a compute instance."""
    name_of = {p.id: p.name for p in gpu.model.profiles}
    names = Counter(name_of[gi.profile_id] for gi in gpu.instances)
    return (
        gpu.mig.current
        and gpu.mig.pending
        and names == Counter(layout)
        and all(gi.compute_instances for gi in gpu.instances)
    )


# The C function each step's mutation calls (nvml/write.py).
CALL_OF_STEP = {
    "SetMigMode": "nvmlDeviceSetMigMode",
    "SetPersistence": "nvmlDeviceSetPersistenceMode",
    "CreateGpuInstance": "nvmlDeviceCreateGpuInstanceWithPlacement",
    "DestroyGpuInstance": "nvmlGpuInstanceDestroy",
    "DestroyComputeInstance": "nvmlComputeInstanceDestroy",
}


def call_of(step: dict[str, Any]) -> str:
    """The C function a journaled step (``{"action": …}``) calls to make its change."""
    if step["action"] == "CreateComputeInstance":
        placed = step["start"] is not None
        return "nvmlGpuInstanceCreateComputeInstance" + ("WithPlacement" if placed else "")
    return CALL_OF_STEP[step["action"]]


def events(journal: Path) -> list[dict[str, Any]]:
    """The journal's events, oldest first; none before it exists."""
    return [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []


def without_faults(fleet: Path) -> None:
    """Take ``faults:`` out of the fleet file, its state kept, for the re-run."""
    document = yaml.safe_load(fleet.read_text())
    document.pop("faults", None)
    write_fleet(fleet.parent, document, fleet.name)


def fault_at(steps: list[dict[str, Any]], index: int, **what: Any) -> dict[str, Any]:
    """A fault on the NVML call of ``steps[index]``: the earlier steps' calls to the same C
    function are skipped."""
    call = call_of(steps[index])
    return {"call": call, "skip": sum(call_of(s) == call for s in steps[:index]), "count": 1, **what}


def without_mig_uuids(fleet: Fleet) -> Fleet:
    """``fleet`` with every MIG device's UUID the one derived from its shape: how a run that undid
    itself leaves the hardware, since a MIG device the undo made again has a new UUID, as a
    driver gives it (issue 11, item 8)."""
    return replace(fleet, gpus=tuple(
        replace(g, instances=tuple(
            replace(gi, compute_instances=tuple(replace(ci, uuid=None) for ci in gi.compute_instances))
            for gi in g.instances))
        for g in fleet.gpus))


def undone_to(fleet: Path, before: bytes) -> bool:
    """Whether fleet file ``fleet`` holds ``before`` again after a run undid itself: byte for byte,
    or, where the undo made destroyed MIG devices again, the same state but for their new UUIDs."""
    if fleet.read_bytes() == before:
        return True
    return without_mig_uuids(load_fleet(str(fleet))) == without_mig_uuids(parse_fleet(before, str(fleet)))
