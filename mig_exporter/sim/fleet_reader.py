"""The validating reader of fleet files: YAML in, a checked ``Fleet`` out, or one line saying why not.

The format is the contract of DESIGN.md ("The fleet file"). A file that is wrong is refused before
anything uses it, with the file, the place inside it and the reason. Instances without a placement
are placed in the order listed, where the driver would put them.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from typing import Any

import yaml

from mig_exporter.errors import load_yaml, yaml_problem
from mig_exporter.sim import placement as driver
from mig_exporter.sim.fault_reader import read_call_latency, read_fault
from mig_exporter.sim.fleet_checks import MAX_DELAY_SECONDS, UINT_MAX, FleetError
from mig_exporter.sim.handles import MAX_GPUS
from mig_exporter.sim.health_reader import read_health
from mig_exporter.sim.model_reader import read_models
from mig_exporter.sim.models import MODELS, GpuInstanceProfile, GpuModel, match_profile, valid_compute_slices
from mig_exporter.sim.process_reader import ProcessReader
from mig_exporter.sim.state import (
    DEFAULT_CUDA_VERSION,
    DEFAULT_DRIVER_VERSION,
    Activity,
    Fleet,
    Health,
    MigMode,
    SimComputeInstance,
    SimGpu,
    SimGpuInstance,
    Telemetry,
    XidEvent,
    default_gpu_uuid,
    default_pci_bus_id,
    default_serial,
)

TOP_KEYS = ("description", "driver_version", "cuda_version", "models", "gpus", "faults", "call_latency")
TELEMETRY_KEYS = tuple(f.name for f in fields(Telemetry))
GPU_KEYS = (
    "model",
    "uuid",
    "persistence",
    "mig",
    "processes",
    "instances",
    *TELEMETRY_KEYS,
    "memory_used_mib",
    "serial",
    "pci_bus_id",
    "lost",
    "held_by",
    "xid_events",
    "gpm",
    "health",
    "mig_devices_created",
)
# An XID error NVML reports as an event: ``after_seconds`` after the GPU's first registration.
XID_EVENT_KEYS = ("xid", "after_seconds", "gpu_instance")
# ``uuid``: the MIG device's, of the one full-size compute instance (else under compute_instances).
INSTANCE_KEYS = ("profile", "placement", "uuid", "processes", "compute_instances", "gpm")
# GPM activity (0-100 %) of a GPU without MIG or of a GPU instance; Hopper and later only.
GPM_KEYS = tuple(f.name for f in fields(Activity))
COMPUTE_INSTANCE_KEYS = ("profile", "placement", "uuid", "processes")

_PCI_BUS_ID = re.compile(r"^[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-7]$")
_CUDA_VERSION = re.compile(r"^\d+\.\d+$", re.ASCII)
_COMPUTE_PROFILE = re.compile(r"^(?P<slices>\d+)c(?:\.(?P<gpu_instance>.+))?$", re.ASCII)


def parse_fleet(data: bytes | str, source: str) -> Fleet:
    """The ``Fleet`` a fleet file describes; ``source`` names the file in error messages."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise FleetError(f"{source}: not UTF-8 text") from None
    try:
        document = load_yaml(text)
    except yaml.YAMLError as error:
        raise FleetError(f"{source}: not valid YAML: {yaml_problem(error)}") from None
    return FleetReader(source).fleet(document)



class FleetReader(ProcessReader):
    """Checks a parsed document piece by piece, each piece knowing its path for the messages."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.mig_uuids: dict[str, str] = {}  # MIG device UUID the file gives → where

    def fleet(self, document: Any) -> Fleet:
        top = self.mapping(document, "", TOP_KEYS, required=("gpus",))
        cuda_version = self.string(top.get("cuda_version", DEFAULT_CUDA_VERSION), "cuda_version")
        if not _CUDA_VERSION.match(cuda_version):
            raise self.error("cuda_version", f'{cuda_version!r} is not a CUDA version like "12.9"')
        defined = read_models(self, top.get("models"))
        models = {**MODELS, **defined}
        raw_gpus = self.sequence(top["gpus"], "gpus")
        if len(raw_gpus) > MAX_GPUS:
            raise self.error("gpus", f"{len(raw_gpus)} GPUs; the simulator models at most {MAX_GPUS}")
        gpus = tuple(self.gpu(raw, i, models) for i, raw in enumerate(raw_gpus))
        for name in ("uuid", "pci_bus_id"):
            self.check_unique(name, [getattr(g, name) for g in gpus], [name in raw for raw in raw_gpus])
        faults = tuple(
            read_fault(self, raw, f"faults[{i}]", len(gpus))
            for i, raw in enumerate(self.sequence(top.get("faults"), "faults"))
        )
        fleet = Fleet(
            gpus=gpus,
            driver_version=self.string(top.get("driver_version", DEFAULT_DRIVER_VERSION), "driver_version"),
            cuda_version=cuda_version,
            description=self.description(top["description"]) if "description" in top else None,
            faults=faults,
            call_latency=read_call_latency(self, top.get("call_latency", {}), len(gpus)),
            attributions=tuple(a for _, (a, _) in sorted(self.attributions.items())),
            models=tuple(defined.values()),
        )
        if not gpus:  # a slip (an indent lost): a simulated host is there to have GPUs
            raise self.error("gpus", "lists no GPU; a fleet describes a host with at least one")
        return fleet

    def check_unique(self, name: str, values: list[Any], given: list[bool]) -> None:
        """Two GPUs with one ``uuid`` or ``pci_bus_id``, named at the GPU whose file entry gives it
        (the other's may be the one derived from its index, which the person never wrote)."""
        first: dict[Any, int] = {}
        for i, item in enumerate(values):
            if item not in first:
                first[item] = i
                continue
            here, other = (i, first[item]) if given[i] or not given[first[item]] else (first[item], i)
            derived = "" if given[other] else f" (derived from its index, as gpus[{other}] gives none)"
            raise self.error(
                f"gpus[{here}].{name}", f"{item} is already the {name} of gpus[{other}]{derived}"
            )

    def description(self, raw: Any) -> str:
        """One line: ``fleet list`` shows it beside the name."""
        text = self.string(raw, "description")
        if "\n" in text.strip():
            raise self.error("description", "must be one line (fleet list shows it beside the name)")
        return text.strip()

    def gpu(self, raw: Any, index: int, models: dict[str, GpuModel]) -> SimGpu:
        path = f"gpus[{index}]"
        entry = self.mapping(raw, path, GPU_KEYS, required=("model",))
        model_key = self.string(entry["model"], f"{path}.model")
        if model_key not in models:
            raise self.error(f"{path}.model", f"unknown model {model_key!r} (models: {', '.join(models)})")
        model = models[model_key]
        mig = self.mig_mode(entry.get("mig", MigMode.DISABLED.value), f"{path}.mig")
        uuid = self.string(entry.get("uuid", default_gpu_uuid(index)), f"{path}.uuid")
        if not uuid.startswith("GPU-"):
            raise self.error(f"{path}.uuid", f"{uuid!r} does not start with GPU-")
        pci_bus_id = self.string(
            entry.get("pci_bus_id", default_pci_bus_id(index)), f"{path}.pci_bus_id"
        ).upper()
        if not _PCI_BUS_ID.match(pci_bus_id):
            raise self.error(
                f"{path}.pci_bus_id", f"{pci_bus_id!r} is not a PCI bus ID like 00000000:07:00.0"
            )

        pids_seen: dict[int, str] = {}
        processes = tuple(
            self.process(p, f"{path}.processes[{i}]", pids_seen, whole_gpu=True)
            for i, p in enumerate(self.sequence(entry.get("processes"), f"{path}.processes"))
        )
        if processes and mig.current:
            raise self.error(
                f"{path}.processes",
                f"processes on the whole GPU, but MIG is {mig.value}: "
                "list them under the instance they run in",
            )
        raw_instances = self.sequence(entry.get("instances"), f"{path}.instances")
        if raw_instances and not mig.current:
            raise self.error(f"{path}.instances", f"GPU instances need MIG enabled, but mig is {mig.value}")
        instances: tuple[SimGpuInstance, ...] = ()
        where: dict[int, str] = {}  # GPU instance ID → its path, for overlap messages
        for i, raw_instance in enumerate(raw_instances):
            instance_path = f"{path}.instances[{i}]"
            instance = self.gpu_instance(raw_instance, instance_path, model, instances, where, pids_seen)
            where[instance.id] = instance_path
            instances = (*instances, instance)

        gpu = SimGpu(
            model=model,
            uuid=uuid,
            persistence=self.boolean(entry.get("persistence", False), f"{path}.persistence"),
            mig=mig,
            processes=processes,
            telemetry=self.telemetry(entry, path),
            serial=self.string(entry.get("serial", default_serial(index)), f"{path}.serial"),
            pci_bus_id=pci_bus_id,
            lost=self.boolean(entry.get("lost", False), f"{path}.lost"),
            held_by=tuple(
                self.string(h, f"{path}.held_by[{i}]")
                for i, h in enumerate(self.sequence(entry.get("held_by"), f"{path}.held_by"))
            ),
            xid_events=tuple(
                self.xid_event(e, f"{path}.xid_events[{i}]")
                for i, e in enumerate(self.sequence(entry.get("xid_events"), f"{path}.xid_events"))
            ),
            activity=self.activity(entry, path, model),
            health=read_health(self, entry["health"], f"{path}.health") if "health" in entry else Health(),
            mig_devices_created=self.integer(
                entry.get("mig_devices_created", 0), f"{path}.mig_devices_created", 0, UINT_MAX
            ),
        ).with_instances(instances)
        if "gpm" in entry and mig.current:
            raise self.error(f"{path}.gpm", "with MIG enabled the GPU's activity is its instances': "
                                            "give gpm under each instance")
        in_processes = sum(p.used_memory_mib for p in processes)
        if not mig.current:
            self.check_fits(
                f"{path}.processes",
                in_processes,
                model.key,
                model.memory_total_mib,
                driver.NON_MIG_OVERHEAD_MIB,
            )
        if "memory_used_mib" in entry:
            used = self.integer(
                entry["memory_used_mib"], f"{path}.memory_used_mib", 0, model.memory_total_mib
            )
            in_all = sum(p.used_memory_mib for p in gpu.all_processes)
            if used < in_all:
                raise self.error(
                    f"{path}.memory_used_mib", f"{used} is less than the {in_all} MiB its processes use"
                )
            gpu = replace(gpu, memory_used_mib=used)
        return gpu

    def check_fits(self, path: str, in_processes: int, device: str, total_mib: int, driver_mib: int) -> None:
        if in_processes + driver_mib > total_mib:
            raise self.error(
                path,
                f"{in_processes} MiB in processes do not fit: {device} has {total_mib} MiB, "
                f"of which the driver uses {driver_mib}",
            )

    def mig_mode(self, raw: Any, path: str) -> MigMode:
        allowed = [m.value for m in MigMode]
        if raw not in allowed:
            raise self.error(path, f"{raw!r} is not a MIG mode ({', '.join(allowed)})")
        return MigMode(raw)

    def telemetry(self, entry: dict, path: str) -> Telemetry:
        percent = {"minimum": 0, "maximum": 100}
        watts = UINT_MAX / 1000  # NVML reports milliwatts in an unsigned int
        checks: dict[str, Any] = {
            "utilization_gpu_percent": lambda raw, p: self.integer(raw, p, **percent),
            "utilization_memory_percent": lambda raw, p: self.integer(raw, p, **percent),
            "temperature_celsius": lambda raw, p: self.integer(raw, p, 0, 200),
            "power_watts": lambda raw, p: self.number(raw, p, maximum=watts),
            "power_limit_watts": lambda raw, p: self.number(raw, p, minimum=1, maximum=watts),
            "clock_sm_mhz": lambda raw, p: self.integer(raw, p, 1, UINT_MAX),
            "clock_memory_mhz": lambda raw, p: self.integer(raw, p, 1, UINT_MAX),
            "ecc_corrected": lambda raw, p: self.integer(raw, p, 0, 2**64 - 1),
            "ecc_uncorrected": lambda raw, p: self.integer(raw, p, 0, 2**64 - 1),
        }
        return Telemetry(
            **{key: checks[key](entry[key], f"{path}.{key}") for key in TELEMETRY_KEYS if key in entry}
        )

    def activity(self, entry: dict, path: str, model: GpuModel) -> Activity:
        if "gpm" not in entry:
            return Activity()
        if model.architecture == "ampere":
            raise self.error(f"{path}.gpm", f"{model.key} has no GPM (NVML gives it on Hopper and later)")
        values = self.mapping(entry["gpm"], f"{path}.gpm", GPM_KEYS)
        return Activity(**{key: self.number(values[key], f"{path}.gpm.{key}", maximum=100)
                           for key in GPM_KEYS if key in values})

    def xid_event(self, raw: Any, path: str) -> XidEvent:
        entry = self.mapping(raw, path, XID_EVENT_KEYS, required=("xid", "after_seconds"))
        return XidEvent(
            xid=self.integer(entry["xid"], f"{path}.xid", 1, UINT_MAX),
            after_seconds=self.number(entry["after_seconds"], f"{path}.after_seconds",
                                      maximum=MAX_DELAY_SECONDS),
            gpu_instance=self.integer(entry["gpu_instance"], f"{path}.gpu_instance", 0, UINT_MAX - 1)
            if "gpu_instance" in entry else None,
        )

    def gpu_instance(
        self,
        raw: Any,
        path: str,
        model: GpuModel,
        existing: tuple[SimGpuInstance, ...],
        where: dict[int, str],
        pids_seen: dict[int, str],
    ) -> SimGpuInstance:
        entry = self.mapping(raw, path, INSTANCE_KEYS, required=("profile",))
        name = self.string(entry["profile"], f"{path}.profile")
        profile = match_profile(model, name)
        if profile is None:
            names = ", ".join(p.name for p in model.profiles)
            raise self.error(
                f"{path}.profile", f"{name!r} is not a GPU instance profile of {model.key} ({names})"
            )
        if sum(1 for gi in existing if gi.profile_id == profile.id) >= profile.max_count:
            raise self.error(
                f"{path}.profile", f"at most {profile.max_count} {profile.name} fit on {model.key}"
            )
        if "placement" in entry:
            start = self.integer(entry["placement"], f"{path}.placement")
            if start not in profile.placement_starts:
                valid = ", ".join(str(s) for s in profile.placement_starts)
                raise self.error(
                    f"{path}.placement",
                    f"{start} is not a valid start for {profile.name} on {model.key} (valid: {valid})",
                )
            span = set(driver.memory_span(profile, start))
            for other in existing:
                other_profile = model.profile_by_id(other.profile_id)
                assert other_profile is not None
                if not span.isdisjoint(driver.memory_span(other_profile, other.start)):
                    raise self.error(
                        f"{path}.placement",
                        f"{start} overlaps the {other_profile.name} at {other.start} ({where[other.id]})",
                    )
        else:
            auto = driver.auto_placement(model, existing, profile)
            if auto is None:
                taken = sorted(driver.occupied_slices(model, existing))
                raise self.error(
                    f"{path}.profile",
                    f"no room left for {profile.name} on {model.key} "
                    f"(memory slices {', '.join(map(str, taken))} are taken)",
                )
            start = auto
        if driver.free_compute_slices(model, existing) < profile.slice_count:
            raise self.error(f"{path}.profile", f"{profile.name} needs {profile.slice_count} compute slices; "
                                                f"{driver.free_compute_slices(model, existing)} of "
                                                f"{model.compute_slices} are left on {model.key}")
        compute_instances = self.compute_instances(entry, path, profile, pids_seen)
        instance = SimGpuInstance(
            driver.gpu_instance_id(model, profile, start), profile.id, start, compute_instances,
            self.activity(entry, path, model),
        )
        self.check_fits(
            f"{path}.processes",
            sum(p.used_memory_mib for p in instance.processes),
            profile.name,
            profile.memory_mib,
            driver.mig_overhead_mib(profile.placement_size),
        )
        return instance

    def compute_instances(
        self, entry: dict, path: str, profile: GpuInstanceProfile, pids_seen: dict[int, str]
    ) -> tuple[SimComputeInstance, ...]:
        """One full-size compute instance holding the instance's processes, unless the file lists
        ``compute_instances`` (then each lists its own processes)."""
        if "compute_instances" not in entry:
            processes = tuple(
                self.process(p, f"{path}.processes[{i}]", pids_seen)
                for i, p in enumerate(self.sequence(entry.get("processes"), f"{path}.processes"))
            )
            return (SimComputeInstance(0, profile.slice_count, processes, self.mig_uuid(entry, path)),)
        for key, what in (("processes", "each process"), ("uuid", "each MIG device UUID")):
            if entry.get(key):
                raise self.error(
                    f"{path}.{key}",
                    f"with compute_instances given, list {what} under the compute instance it runs in",
                )
        result: list[SimComputeInstance] = []
        for i, raw in enumerate(self.sequence(entry["compute_instances"], f"{path}.compute_instances")):
            ci_path = f"{path}.compute_instances[{i}]"
            ci = self.mapping(raw, ci_path, COMPUTE_INSTANCE_KEYS, required=("profile",))
            slices = self.compute_slices(ci["profile"], f"{ci_path}.profile", profile)
            free = driver.free_compute_starts(profile.slice_count, result, slices)
            if "placement" in ci:
                start = self.integer(ci["placement"], f"{ci_path}.placement")
                valid = driver.compute_starts(profile.slice_count, slices)
                if start not in valid:
                    raise self.error(
                        f"{ci_path}.placement",
                        f"{start} is not a valid start for {slices}c in "
                        f"{profile.name} (valid: {', '.join(map(str, valid))})",
                    )
                if start not in free:
                    raise self.error(f"{ci_path}.placement", f"{start} overlaps another compute instance")
            elif free:
                start = free[0]
            else:
                raise self.error(f"{ci_path}.profile", f"no room left for {slices}c in {profile.name}")
            processes = tuple(
                self.process(p, f"{ci_path}.processes[{j}]", pids_seen)
                for j, p in enumerate(self.sequence(ci.get("processes"), f"{ci_path}.processes"))
            )
            result.append(SimComputeInstance(start, slices, processes, self.mig_uuid(ci, ci_path)))
        return tuple(sorted(result, key=lambda c: c.id))

    def mig_uuid(self, entry: dict, path: str) -> str | None:
        """A MIG device UUID the file gives, unique in the fleet (two devices cannot share one)."""
        if "uuid" not in entry:
            return None
        mig_uuid = self.string(entry["uuid"], f"{path}.uuid")
        if not mig_uuid.startswith("MIG-"):
            raise self.error(f"{path}.uuid", f"{mig_uuid!r} does not start with MIG-")
        if mig_uuid in self.mig_uuids:
            raise self.error(f"{path}.uuid", f"{mig_uuid} is already the uuid of {self.mig_uuids[mig_uuid]}")
        self.mig_uuids[mig_uuid] = path
        return mig_uuid

    def compute_slices(self, raw: Any, path: str, profile: GpuInstanceProfile) -> int:
        """``1c.3g.40gb``, ``1c``, or the GPU instance's own profile name for a full-size one."""
        name = self.string(raw, path)
        valid = valid_compute_slices(profile.slice_count)
        match = _COMPUTE_PROFILE.match(name)
        if (
            match
            and (match.group("gpu_instance") in (None, profile.name))
            and int(match.group("slices")) in valid
        ):
            return int(match.group("slices"))
        if name == profile.name:
            return profile.slice_count
        names = ", ".join(f"{c}c.{profile.name}" if c < profile.slice_count else profile.name for c in valid)
        raise self.error(path, f"{name!r} is not a compute instance profile of {profile.name} ({names})")
