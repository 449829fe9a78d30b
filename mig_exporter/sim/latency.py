"""How long each simulated C call takes (the fleet file's ``call_latency:``), and the families the
call counter groups C functions into.

A simulated call answers in microseconds; a real NVML call takes 0.1-5 ms, and some far more. A
latency makes benchmarks and tests see the cost a real host would have: every call sleeps (outside
the simulator's lock, so concurrent callers overlap as they do on a driver) for its function's
latency, plus its GPU's.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CallLatency:
    """``seconds`` for every C call, unless ``calls`` gives its function another; ``gpus`` adds
    to every call about that GPU index (a slow or hanging board)."""

    seconds: float = 0.0
    calls: Mapping[str, float] = field(default_factory=dict)
    gpus: Mapping[int, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.seconds or self.calls or self.gpus)

    def of(self, call: str, gpu: int | None) -> float:
        seconds = self.calls.get(call, self.seconds)
        return seconds + self.gpus.get(gpu, 0.0) if gpu is not None else seconds


# (family, pattern of the C function names in it), first match wins: the benchmark and the tests
# count calls per family to show where a collection's calls go.
_FAMILIES = (
    ("process", r"nvmlDeviceGet(Compute|Graphics|MPSCompute)RunningProcesses|nvmlSystemGetProcessName"
                r"|nvmlDeviceGetProcess(es)?Utilization"),
    ("event", r"nvmlEvent|nvmlDeviceRegisterEvents|nvmlDeviceGetSupportedEventTypes"),
    ("gpm", r"nvmlGpm"),
    ("mig-write", r"nvml(Device|GpuInstance)(Create|Destroy)|nvmlGpuInstanceDestroy"
                  r"|nvmlComputeInstanceDestroy|nvmlDeviceSetMigMode"),
    ("mig", r"nvmlDeviceGet(Mig|MaxMig|GpuInstance|ComputeInstance|Attributes|DeviceHandleFromMig)"
            r"|nvmlGpuInstance|nvmlComputeInstance"),
    ("identity", r"nvmlDeviceGet(HandleBy|UUID|Name|PciInfo|Serial|Brand|MinorNumber|Architecture|Index"
                 r"|BoardPartNumber)"),
    ("system", r"nvmlInit|nvmlShutdown|nvmlSystem|nvmlErrorString|nvmlDeviceGetCount"),
    ("ecc", r"nvmlDeviceGet(TotalEccErrors|MemoryErrorCounter|RetiredPages|RemappedRows|NvLinkErrorCounter)"),
    ("write", r"nvmlDeviceSet|nvmlDeviceReset|nvmlDeviceClear"),
    ("telemetry", r"nvmlDeviceGet"),
)
_FAMILY_PATTERNS = tuple((family, re.compile(pattern)) for family, pattern in _FAMILIES)


def call_family(call: str) -> str:
    """The family of C function ``call``: identity, mig, process, telemetry, ecc, system …"""
    for family, pattern in _FAMILY_PATTERNS:
        if pattern.match(call):
            return family
    return "other"


def by_family(counts: Mapping[str, int]) -> Counter[str]:
    """Calls per family from calls per C function."""
    families: Counter[str] = Counter()
    for call, count in counts.items():
        families[call_family(call)] += count
    return families
