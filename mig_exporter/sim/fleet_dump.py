"""The canonical dump of a ``Fleet``: the YAML ``parse_fleet`` reads back to an equal ``Fleet``.

``fleet show`` prints it, and the simulator writes it back when a file's own text cannot be kept
(``writeback``). Placements are explicit and defaults left out, so a dump is short and stable.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import yaml

from mig_exporter.sim.codes import NVML_ERROR_NAMES
from mig_exporter.sim.fleet_reader import GPM_KEYS, TELEMETRY_KEYS
from mig_exporter.sim.health_reader import HEALTH_KEYS
from mig_exporter.sim.model_reader import ENGINE_KEYS
from mig_exporter.sim.models import GpuInstanceProfile, GpuModel
from mig_exporter.sim.process_reader import ATTRIBUTION_KEYS, PROCESS_UTILIZATION_KEYS
from mig_exporter.sim.state import (
    Activity,
    Fault,
    Fleet,
    Health,
    NvlinkErrors,
    RetiredPages,
    RowRemapping,
    SimGpu,
    SimGpuInstance,
    SimProcess,
    Telemetry,
    default_gpu_uuid,
    default_pci_bus_id,
    default_serial,
)


def dump_fleet(fleet: Fleet) -> str:
    """Canonical YAML for ``fleet``: explicit placements, defaults left out; ``parse_fleet`` reads
    it back to an equal ``Fleet``. (Writing back over a file a person keeps, the simulator changes
    only the GPUs that changed: ``writeback.updated_fleet_file``.)"""
    attributed: set[int] = set()
    document: dict[str, Any] = {}
    if fleet.description is not None:
        document["description"] = fleet.description
    document["driver_version"] = fleet.driver_version
    document["cuda_version"] = fleet.cuda_version
    if fleet.models:
        document["models"] = {model.key: model_entry(model) for model in fleet.models}
    document["gpus"] = [gpu_entry(fleet, i, attributed) for i in range(len(fleet.gpus))]
    if fleet.faults:
        document["faults"] = [_fault(f) for f in fleet.faults]
    if fleet.call_latency:
        latency = fleet.call_latency
        settings = {"seconds": latency.seconds, "calls": dict(latency.calls), "gpus": dict(latency.gpus)}
        document["call_latency"] = {key: item for key, item in settings.items() if item}
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=110)


def model_entry(model: GpuModel) -> dict[str, Any]:
    """The ``models:`` entry ``model_reader`` reads back to ``model``; engine counts of 0 left out."""
    def profile(p: GpuInstanceProfile) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": p.name, "enum": p.enum, "id": p.id, "memory_mib": p.memory_mib,
            "multiprocessors": p.multiprocessors, "max_count": p.max_count, "slices": p.slice_count,
            "placement_starts": list(p.placement_starts), "placement_size": p.placement_size,
        }
        return {**out, **{key: getattr(p, key) for key in ENGINE_KEYS if getattr(p, key)}}

    return {
        "nvml_name": model.nvml_name, "memory_total_mib": model.memory_total_mib,
        "architecture": model.architecture, "memory_slices": model.memory_slices,
        "compute_slices": model.compute_slices, "pci_device_id": model.pci_device_ids[0],
        "profiles": [profile(p) for p in model.profiles],
    }


def gpu_entry(fleet: Fleet, index: int, attributed: set[int]) -> dict[str, Any]:
    """The canonical entry of ``gpus[index]``. A pid's attribution is written on its first entry
    only: ``attributed`` holds the pids already given theirs, and this adds those it writes."""

    def process(p: SimProcess) -> dict[str, Any]:
        out: dict[str, Any] = {"pid": p.pid}
        if p.name is not None:
            out["name"] = p.name
        out["used_memory_mib"] = p.used_memory_mib
        if p.sampled:
            out.update({key: getattr(p, key) for key in PROCESS_UTILIZATION_KEYS})
        attribution = fleet.attribution(p.pid)
        if attribution is not None and p.pid not in attributed:
            attributed.add(p.pid)
            for key in ATTRIBUTION_KEYS:
                item = getattr(attribution, key)
                if item is not None:
                    out[key] = list(item) if isinstance(item, tuple) else dict(item) if key == "env" else item
        return out

    def gpu_instance(gpu: SimGpu, gi: SimGpuInstance) -> dict[str, Any]:
        profile = gpu.profile(gi.profile_id)
        assert profile is not None
        out: dict[str, Any] = {"profile": profile.name, "placement": gi.start}
        if gi.activity != Activity():
            out["gpm"] = activity(gi.activity)
        if [(c.start, c.slices) for c in gi.compute_instances] == [(0, profile.slice_count)]:
            (full,) = gi.compute_instances
            if full.uuid is not None:
                out["uuid"] = full.uuid
            if gi.processes:
                out["processes"] = [process(p) for p in gi.processes]
            return out
        out["compute_instances"] = []
        for ci in gi.compute_instances:
            entry: dict[str, Any] = {
                "profile": profile.name
                if ci.slices == profile.slice_count
                else f"{ci.slices}c.{profile.name}",
                "placement": ci.start,
            }
            if ci.uuid is not None:
                entry["uuid"] = ci.uuid
            if ci.processes:
                entry["processes"] = [process(p) for p in ci.processes]
            out["compute_instances"].append(entry)
        return out

    g = fleet.gpus[index]
    out: dict[str, Any] = {"model": g.model_key}
    if g.uuid != default_gpu_uuid(index):
        out["uuid"] = g.uuid
    out["persistence"] = g.persistence
    out["mig"] = g.mig.value
    defaults = Telemetry()
    for key in TELEMETRY_KEYS:
        if getattr(g.telemetry, key) != getattr(defaults, key):
            out[key] = getattr(g.telemetry, key)
    if g.memory_used_mib is not None:
        out["memory_used_mib"] = g.memory_used_mib
    if g.serial != default_serial(index):
        out["serial"] = g.serial
    if g.pci_bus_id != default_pci_bus_id(index):
        out["pci_bus_id"] = g.pci_bus_id
    if g.lost:
        out["lost"] = True
    if g.held_by:
        out["held_by"] = list(g.held_by)
    if g.activity != Activity():
        out["gpm"] = activity(g.activity)
    if g.health != Health():
        out["health"] = health(g.health)
    if g.mig_devices_created:
        out["mig_devices_created"] = g.mig_devices_created
    if g.xid_events:
        out["xid_events"] = [
            {"xid": e.xid, "after_seconds": e.after_seconds}
            | ({} if e.gpu_instance is None else {"gpu_instance": e.gpu_instance})
            for e in g.xid_events
        ]
    if g.processes:
        out["processes"] = [process(p) for p in g.processes]
    if g.instances:
        out["instances"] = [gpu_instance(g, gi) for gi in g.instances]
    return out


def health(values: Health) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in HEALTH_KEYS:
        item = getattr(values, key)
        if item == getattr(Health(), key):
            continue
        if key == "clock_event_reasons":
            out[key] = list(item)
        elif isinstance(item, (RowRemapping, RetiredPages, NvlinkErrors)):
            out[key] = {f.name: getattr(item, f.name) for f in fields(item)}
        else:
            out[key] = item
    return out


def activity(values: Activity) -> dict[str, float]:
    return {key: getattr(values, key) for key in GPM_KEYS if getattr(values, key)}


def _fault(fault: Fault) -> dict[str, Any]:
    out: dict[str, Any] = {"call": fault.call}
    if fault.gpu is not None:
        out["gpu"] = fault.gpu
    if fault.error is not None:
        out["error"] = NVML_ERROR_NAMES.get(fault.error, fault.error)
    if fault.delay_seconds:
        out["delay_seconds"] = fault.delay_seconds
    if fault.skip:
        out["skip"] = fault.skip
    if fault.count is not None:
        out["count"] = fault.count
    return out
