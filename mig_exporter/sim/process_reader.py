"""The processes of a fleet file: pid, name, memory, utilization sample and attribution.

A pid may appear on several GPUs (a process spanning them); its name and attribution are checked
to agree wherever they are given, since they describe one process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mig_exporter.sim.fleet_checks import Checks
from mig_exporter.sim.state import ProcessAttribution, SimProcess

ATTRIBUTION_KEYS = ("user", "cmdline", "container", "env")
# A process's utilization sample (0-100 %), given only on a GPU without MIG: NVML samples no
# process of a MIG-enabled GPU (mig-facts.md). Either key makes the process sampled; the other is 0.
PROCESS_UTILIZATION_KEYS = ("sm_util_percent", "mem_util_percent")
PROCESS_KEYS = ("pid", "name", "used_memory_mib", *PROCESS_UTILIZATION_KEYS, *ATTRIBUTION_KEYS)
_PID_MAX = 4194304  # Linux's PID_MAX_LIMIT: no process has a larger pid


class ProcessReader(Checks):
    """Reads process entries, remembering each pid's name and attribution across the file."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.attributions: dict[int, tuple[ProcessAttribution, dict[str, str]]] = {}
        self.names: dict[int, tuple[str, str]] = {}  # pid → (name, where it was first named)

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
            # Any other character may be in a name (/proc's comm and cmdline can hold a newline).
            if "\0" in name:
                raise self.error(f"{path}.name", "NVML returns a C string: a name cannot hold NUL")
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
