"""Fleet files: read and check one into a ``Fleet``, write a ``Fleet`` back as canonical YAML.

The format is the contract of DESIGN.md ("The fleet file"). A file that is wrong is refused before
anything uses it, with one line naming the file, the place inside it (``gpus[2].instances[1]
.placement``) and the reason, so a person editing a fleet by hand can fix it without reading code.
Instances without a placement are placed in the order listed, where the driver would put them.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mig_exporter.errors import InputError, shown_key, yaml_problem
from mig_exporter.profiles import MODELS, GpuInstanceProfile, GpuModel, match_profile, valid_compute_slices
from mig_exporter.sim import placement as driver
from mig_exporter.sim.codes import NVML_ERROR_CODES, NVML_ERROR_NAMES
from mig_exporter.sim.health_calls import CLOCK_EVENT_REASONS
from mig_exporter.sim.latency import CallLatency
from mig_exporter.sim.library import c_function_targets
from mig_exporter.sim.state import (
    DEFAULT_CUDA_VERSION,
    DEFAULT_DRIVER_VERSION,
    Activity,
    Fault,
    Fleet,
    Health,
    MigMode,
    NvlinkErrors,
    ProcessAttribution,
    RetiredPages,
    RowRemapping,
    SimComputeInstance,
    SimGpu,
    SimGpuInstance,
    SimProcess,
    Telemetry,
    XidEvent,
    default_gpu_uuid,
    default_pci_bus_id,
    default_serial,
)

TOP_KEYS = ("description", "driver_version", "cuda_version", "gpus", "faults", "call_latency")
CALL_LATENCY_KEYS = ("seconds", "calls", "gpus")
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
)
HEALTH_KEYS = tuple(f.name for f in fields(Health))
# An XID error NVML reports as an event: ``after_seconds`` after the GPU's first registration.
XID_EVENT_KEYS = ("xid", "after_seconds", "gpu_instance")
INSTANCE_KEYS = ("profile", "placement", "processes", "compute_instances", "gpm")
# GPM activity (0-100 %) of a GPU without MIG or of a GPU instance; Hopper and later only.
GPM_KEYS = tuple(f.name for f in fields(Activity))
COMPUTE_INSTANCE_KEYS = ("profile", "placement", "processes")
ATTRIBUTION_KEYS = ("user", "cmdline", "container", "env")
# A process's utilization sample (0-100 %), given only on a GPU without MIG: NVML samples no
# process of a MIG-enabled GPU (mig-facts.md). Either key makes the process sampled; the other is 0.
PROCESS_UTILIZATION_KEYS = ("sm_util_percent", "mem_util_percent")
PROCESS_KEYS = ("pid", "name", "used_memory_mib", *PROCESS_UTILIZATION_KEYS, *ATTRIBUTION_KEYS)
FAULT_KEYS = ("call", "gpu", "error", "delay_seconds", "skip", "count")

# libyaml's loader when PyYAML has it: the large benchmark fleets load several times faster.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PCI_BUS_ID = re.compile(r"^[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-7]$")
_CUDA_VERSION = re.compile(r"^\d+\.\d+$", re.ASCII)
_COMPUTE_PROFILE = re.compile(r"^(?P<slices>\d+)c(?:\.(?P<gpu_instance>.+))?$", re.ASCII)
# Bounds of values NVML hands out in C unsigned ints, so a typo is refused rather than wrapped.
_UINT_MAX = 0xFFFFFFFF
_PID_MAX = 4194304  # Linux's PID_MAX_LIMIT: no process has a larger pid
_MAX_DELAY_SECONDS = 86400.0  # a hang longer than a day is a typo (and time.sleep's limit is near)


class FleetError(InputError):
    """A fleet that cannot be used: not found, not YAML, or not a host NVML could report."""


@dataclass(frozen=True)
class FleetSource:
    """A fleet with where it came from: ``path`` None for a built-in fleet; ``data`` the bytes read
    (kept to restore the file byte for byte)."""

    spec: str
    path: Path | None
    data: bytes
    fleet: Fleet


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


def parse_fleet(data: bytes | str, source: str) -> Fleet:
    """The ``Fleet`` a fleet file describes; ``source`` names the file in error messages."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise FleetError(f"{source}: not UTF-8 text") from None
    try:
        document = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as error:
        raise FleetError(f"{source}: not valid YAML: {yaml_problem(error)}") from None
    return _FleetReader(source).fleet(document)


class _FleetReader:
    """Checks a parsed document piece by piece, each piece knowing its path for the messages."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.attributions: dict[int, tuple[ProcessAttribution, dict[str, str]]] = {}
        self.names: dict[int, tuple[str, str]] = {}  # pid → (name, where it was first named)

    def error(self, path: str, reason: str) -> FleetError:
        return FleetError(f"{self.source}: {path}: {reason}" if path else f"{self.source}: {reason}")

    # ---- scalars and shapes ---------------------------------------------------------------------

    def mapping(self, raw: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(raw, dict):
            what = "the top level" if not path else "this"
            raise self.error(path, f"{what} must be a mapping with keys {', '.join(allowed)}")
        for key in raw:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                allowed_keys = ", ".join(allowed)
                raise self.error(_join(path, shown_key(key)), f"unknown key{hint}; allowed: {allowed_keys}")
        for key in required:
            if key not in raw:
                raise self.error(path, f"{key} is required")
        return raw

    def sequence(self, raw: Any, path: str) -> list:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise self.error(path, "must be a list")
        return raw

    def integer(self, raw: Any, path: str, minimum: int | None = None, maximum: int | None = None) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self.error(path, f"{raw!r} is not a whole number")
        if minimum is not None and raw < minimum:
            raise self.error(path, f"{raw} is less than {minimum}")
        if maximum is not None and raw > maximum:
            raise self.error(path, f"{raw} is more than {maximum}")
        return raw

    def number(self, raw: Any, path: str, minimum: float = 0.0, maximum: float = math.inf) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise self.error(path, f"{raw!r} is not a number")
        if raw < minimum:
            raise self.error(path, f"{raw} is less than {minimum:g}")
        if raw > maximum:
            raise self.error(path, f"{raw} is more than {maximum:g}")
        return float(raw)

    def boolean(self, raw: Any, path: str) -> bool:
        if not isinstance(raw, bool):
            raise self.error(path, f"{raw!r} is not true or false")
        return raw

    def string(self, raw: Any, path: str) -> str:
        if not isinstance(raw, str) or not raw:
            hint = " (quote it)" if isinstance(raw, (int, float)) and not isinstance(raw, bool) else ""
            raise self.error(path, f"{raw!r} is not a non-empty string{hint}")
        return raw

    # ---- the document ---------------------------------------------------------------------------

    def fleet(self, document: Any) -> Fleet:
        top = self.mapping(document, "", TOP_KEYS, required=("gpus",))
        cuda_version = self.string(top.get("cuda_version", DEFAULT_CUDA_VERSION), "cuda_version")
        if not _CUDA_VERSION.match(cuda_version):
            raise self.error("cuda_version", f'{cuda_version!r} is not a CUDA version like "12.9"')
        raw_gpus = self.sequence(top["gpus"], "gpus")
        gpus = tuple(self.gpu(raw, i) for i, raw in enumerate(raw_gpus))
        for name in ("uuid", "pci_bus_id"):
            values = [getattr(g, name) for g in gpus]
            for i, item in enumerate(values):
                if item in values[:i]:
                    raise self.error(
                        f"gpus[{i}].{name}", f"{item} is already the {name} of gpus[{values.index(item)}]"
                    )
        faults = tuple(
            self.fault(raw, f"faults[{i}]", len(gpus))
            for i, raw in enumerate(self.sequence(top.get("faults"), "faults"))
        )
        return Fleet(
            gpus=gpus,
            driver_version=self.string(top.get("driver_version", DEFAULT_DRIVER_VERSION), "driver_version"),
            cuda_version=cuda_version,
            description=self.description(top["description"]) if "description" in top else None,
            faults=faults,
            call_latency=self.call_latency(top.get("call_latency", {}), len(gpus)),
            attributions=tuple(a for _, (a, _) in sorted(self.attributions.items())),
        )

    def description(self, raw: Any) -> str:
        """One line: ``fleet list`` shows it beside the name."""
        text = self.string(raw, "description")
        if "\n" in text.strip():
            raise self.error("description", "must be one line (fleet list shows it beside the name)")
        return text.strip()

    def gpu(self, raw: Any, index: int) -> SimGpu:
        path = f"gpus[{index}]"
        entry = self.mapping(raw, path, GPU_KEYS, required=("model",))
        model_key = self.string(entry["model"], f"{path}.model")
        if model_key not in MODELS:
            raise self.error(f"{path}.model", f"unknown model {model_key!r} (models: {', '.join(MODELS)})")
        model = MODELS[model_key]
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
            model_key=model_key,
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
            health=self.health(entry["health"], f"{path}.health") if "health" in entry else Health(),
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
        watts = _UINT_MAX / 1000  # NVML reports milliwatts in an unsigned int
        checks: dict[str, Any] = {
            "utilization_gpu_percent": lambda raw, p: self.integer(raw, p, **percent),
            "utilization_memory_percent": lambda raw, p: self.integer(raw, p, **percent),
            "temperature_celsius": lambda raw, p: self.integer(raw, p, 0, 200),
            "power_watts": lambda raw, p: self.number(raw, p, maximum=watts),
            "power_limit_watts": lambda raw, p: self.number(raw, p, minimum=1, maximum=watts),
            "clock_sm_mhz": lambda raw, p: self.integer(raw, p, 1, _UINT_MAX),
            "clock_memory_mhz": lambda raw, p: self.integer(raw, p, 1, _UINT_MAX),
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

    def health(self, raw: Any, path: str) -> Health:
        entry = self.mapping(raw, path, HEALTH_KEYS)
        reasons = tuple(self.string(r, f"{path}.clock_event_reasons[{i}]") for i, r in enumerate(
            self.sequence(entry.get("clock_event_reasons"), f"{path}.clock_event_reasons")))
        for i, reason in enumerate(reasons):
            if reason not in CLOCK_EVENT_REASONS:
                raise self.error(f"{path}.clock_event_reasons[{i}]",
                                 f"{reason!r} is not a clock event reason ({', '.join(CLOCK_EVENT_REASONS)})")
        return Health(
            energy_joules=self.number(entry.get("energy_joules", 0.0), f"{path}.energy_joules", maximum=1e15),
            pcie_replays=self.integer(entry.get("pcie_replays", 0), f"{path}.pcie_replays", 0, 2**63),
            clock_event_reasons=reasons,
            remapped_rows=self.counters(entry, "remapped_rows", path, RowRemapping) or RowRemapping(),
            retired_pages=self.counters(entry, "retired_pages", path, RetiredPages),
            nvlink_errors=self.counters(entry, "nvlink_errors", path, NvlinkErrors),
        )

    def counters(self, entry: dict, key: str, path: str, kind: Any) -> Any:
        """A mapping of counts (and flags, for the ``bool`` fields) into ``kind``; None if not given."""
        if key not in entry:
            return None
        names = tuple(f.name for f in fields(kind))
        values = self.mapping(entry[key], f"{path}.{key}", names)
        flags = {f.name for f in fields(kind) if f.type == "bool"}
        return kind(**{name: self.boolean(values[name], f"{path}.{key}.{name}") if name in flags
                       else self.integer(values[name], f"{path}.{key}.{name}", 0, 2**63)
                       for name in names if name in values})

    def xid_event(self, raw: Any, path: str) -> XidEvent:
        entry = self.mapping(raw, path, XID_EVENT_KEYS, required=("xid", "after_seconds"))
        return XidEvent(
            xid=self.integer(entry["xid"], f"{path}.xid", 1, _UINT_MAX),
            after_seconds=self.number(entry["after_seconds"], f"{path}.after_seconds",
                                      maximum=_MAX_DELAY_SECONDS),
            gpu_instance=self.integer(entry["gpu_instance"], f"{path}.gpu_instance", 0, _UINT_MAX - 1)
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
            return (SimComputeInstance(0, profile.slice_count, processes),)
        if entry.get("processes"):
            raise self.error(
                f"{path}.processes",
                "with compute_instances given, list each process under the compute instance it runs in",
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
            result.append(SimComputeInstance(start, slices, processes))
        return tuple(sorted(result, key=lambda c: c.id))

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

    def process(self, raw: Any, path: str, pids_seen: dict[int, str], whole_gpu: bool = False) -> SimProcess:
        entry = self.mapping(raw, path, PROCESS_KEYS, required=("pid", "used_memory_mib"))
        utilization = {key: self.integer(entry[key], f"{path}.{key}", 0, 100)
                       for key in PROCESS_UTILIZATION_KEYS if key in entry}
        if utilization and not whole_gpu:
            raise self.error(f"{path}.{next(iter(utilization))}",
                             "NVML samples no process utilization under MIG: give it on a GPU without MIG")
        pid = self.integer(entry["pid"], f"{path}.pid", 1, _PID_MAX)
        if pid in pids_seen:
            raise self.error(f"{path}.pid", f"pid {pid} is already on this GPU ({pids_seen[pid]})")
        pids_seen[pid] = path
        name = self.string(entry["name"], f"{path}.name") if "name" in entry else None
        if name is not None:
            first = self.names.setdefault(pid, (name, f"{path}.name"))
            if first[0] != name:
                raise self.error(
                    f"{path}.name", f"pid {pid} is named {first[0]!r} at {first[1]}; a pid has one name"
                )
        self.attribution(pid, entry, path)
        if utilization:
            utilization = {key: utilization.get(key, 0) for key in PROCESS_UTILIZATION_KEYS}
        return SimProcess(pid, self.integer(entry["used_memory_mib"], f"{path}.used_memory_mib", 0), name,
                          **utilization)

    def attribution(self, pid: int, entry: dict, path: str) -> None:
        """Attribution fields may be given on any entry of a pid; given twice, they must agree."""
        given: dict[str, Any] = {}
        if "user" in entry:
            given["user"] = self.string(entry["user"], f"{path}.user")
        if "cmdline" in entry:
            raw = entry["cmdline"]
            given["cmdline"] = (
                tuple(self.string(a, f"{path}.cmdline[{i}]") for i, a in enumerate(raw))
                if isinstance(raw, list)
                else self.string(raw, f"{path}.cmdline")
            )
        if "container" in entry:
            given["container"] = self.string(entry["container"], f"{path}.container")
        if "env" in entry:
            given["env"] = self.environment(entry["env"], f"{path}.env")
        if not given:
            return
        previous, origin = self.attributions.get(pid, (ProcessAttribution(pid), {}))
        for key, item in given.items():
            if key in origin and getattr(previous, key) != item:
                raise self.error(f"{path}.{key}", f"pid {pid} has a different {key} at {origin[key]}")
        self.attributions[pid] = (replace(previous, **given), {**{k: f"{path}.{k}" for k in given}, **origin})

    def environment(self, raw: Any, path: str) -> Mapping[str, str]:
        if not isinstance(raw, dict):
            raise self.error(path, "must be a mapping of variable names to values")
        env = {}
        for key, item in raw.items():
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise self.error(f"{path}.{key}", f"{item!r} is not a string")
            env[str(key)] = str(item)
        return env

    def fault(self, raw: Any, path: str, gpu_count: int) -> Fault:
        entry = self.mapping(raw, path, FAULT_KEYS, required=("call",))
        call = self.c_function(entry["call"], f"{path}.call")
        if "error" not in entry and "delay_seconds" not in entry:
            raise self.error(path, "a fault needs an error, a delay_seconds, or both")
        return Fault(
            call=call,
            gpu=self.gpu_index(entry["gpu"], f"{path}.gpu", gpu_count) if "gpu" in entry else None,
            error=self.error_code(entry["error"], f"{path}.error") if "error" in entry else None,
            delay_seconds=self.number(
                entry.get("delay_seconds", 0), f"{path}.delay_seconds", maximum=_MAX_DELAY_SECONDS
            ),
            skip=self.integer(entry.get("skip", 0), f"{path}.skip", 0),
            count=self.integer(entry["count"], f"{path}.count", 1) if "count" in entry else None,
        )

    def call_latency(self, raw: Any, gpu_count: int) -> CallLatency:
        """``call_latency: {seconds: 0.001, calls: {<C symbol>: s}, gpus: {<index>: s}}``."""
        entry = self.mapping(raw, "call_latency", CALL_LATENCY_KEYS)
        calls = self.any_mapping(entry.get("calls"), "call_latency.calls")
        gpus = self.any_mapping(entry.get("gpus"), "call_latency.gpus")
        return CallLatency(
            seconds=self.seconds(entry.get("seconds", 0), "call_latency.seconds"),
            calls={self.c_function(call, f"call_latency.calls.{call}"):
                   self.seconds(s, f"call_latency.calls.{call}") for call, s in calls.items()},
            gpus={self.gpu_index(index, f"call_latency.gpus.{index}", gpu_count):
                  self.seconds(s, f"call_latency.gpus.{index}") for index, s in gpus.items()},
        )

    def any_mapping(self, raw: Any, path: str) -> dict:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.error(path, "must be a mapping")
        return raw

    def seconds(self, raw: Any, path: str) -> float:
        return self.number(raw, path, maximum=_MAX_DELAY_SECONDS)

    def c_function(self, raw: Any, path: str) -> str:
        """The name of a C function the simulator implements."""
        call = self.string(raw, path)
        known = c_function_targets()
        if call not in known:
            close = difflib.get_close_matches(call, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise self.error(path, f"{call!r} is not a C function the simulator implements{hint}")
        return call

    def gpu_index(self, raw: Any, path: str, gpu_count: int) -> int:
        index = self.integer(raw, path)
        if not 0 <= index < gpu_count:
            raise self.error(path, f"{index} is not the index of a GPU of this fleet (it has {gpu_count})")
        return index

    def error_code(self, raw: Any, path: str) -> int:
        """An NVML error by name without ``NVML_ERROR_`` (``NOT_SUPPORTED``) or by code (3)."""
        if isinstance(raw, str) and raw.upper() in NVML_ERROR_CODES:
            return NVML_ERROR_CODES[raw.upper()]
        if isinstance(raw, int) and not isinstance(raw, bool) and raw in NVML_ERROR_NAMES:
            return raw
        close = difflib.get_close_matches(str(raw).upper(), NVML_ERROR_CODES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise self.error(
            path, f"{raw!r} is not an NVML error name or code{hint}, e.g. NOT_SUPPORTED or GPU_IS_LOST"
        )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---- writing ------------------------------------------------------------------------------------


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
    document["gpus"] = [gpu_entry(fleet, i, attributed) for i in range(len(fleet.gpus))]
    if fleet.faults:
        document["faults"] = [_fault(f) for f in fleet.faults]
    if fleet.call_latency:
        latency = fleet.call_latency
        settings = {"seconds": latency.seconds, "calls": dict(latency.calls), "gpus": dict(latency.gpus)}
        document["call_latency"] = {key: item for key, item in settings.items() if item}
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=110)


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
        if gi.compute_instances == (SimComputeInstance(0, profile.slice_count, gi.processes),):
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


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new one, never half of
    one (temporary file in the same directory, fsync, rename), keeping the file's permissions; a
    symbolic link is followed, so the link stays and the file it points to changes."""
    path = path.resolve()
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
