"""The NVML fault matrix: every C function a path calls, times each error NVML can answer it with,
as fleet-file ``faults:``. The functions are not listed here: a clean run of each path says which
it calls (the simulator counts them), so a call the reader starts making is covered the day it is
added."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from long import scaled

# Two GPUs of the incident (seed/README.md: MIG off, PIDs 78914 and 81007 on both, so each is shared
# without MIG and both processes span GPUs) and a partitioned GPU with a process in each of its
# two MIG devices, one of them in a compute instance of its own: every read path (whole GPU, GPU
# instances, MIG devices, processes per MIG device) has something true and non-zero to get wrong.
FLEET = """driver_version: "575.57.08"
cuda_version: "12.9"
gpus:
  - model: A100-SXM4-80GB
    processes:
      - {pid: 78914, name: python, used_memory_mib: 3752}
      - {pid: 81007, name: python, used_memory_mib: 3780}
  - model: A100-SXM4-80GB
    processes:
      - {pid: 78914, name: python, used_memory_mib: 5082}
      - {pid: 81007, name: python, used_memory_mib: 5082}
  - model: A100-SXM4-80GB
    mig: enabled
    persistence: true
    instances:
      - profile: 3g.40gb
        processes:
          - {pid: 5001, name: server-a, used_memory_mib: 12000}
      - profile: 2g.20gb
        compute_instances:
          - profile: 1c.2g.20gb
            processes:
              - {pid: 5002, name: server-b, used_memory_mib: 3000}
"""
SHARED_GPUS = (0, 1)  # shared without MIG in FLEET
PARTITIONED_GPU = 2

# What NVML answers a call it cannot serve with (nvml.h): no privilege, not on this GPU, the GPU
# fell off the bus, a driver-side failure, a driver that did not answer in time, and a buffer
# too small (the calls that fill arrays or strings; for the others it is nonsense NVML could
# still send, and must not crash anything either).
ERRORS = ("NO_PERMISSION", "NOT_SUPPORTED", "GPU_IS_LOST", "UNKNOWN", "TIMEOUT", "INSUFFICIENT_SIZE")

# Faults that describe another GPU rather than a failure, so a clean run is not the truth to compare
# with: NOT_SUPPORTED from nvmlDeviceGetMigMode says the GPU has no MIG (a GPU with MIG on never
# answers it), and the reader rightly takes the partitioned GPU for one without MIG, shared by two
# processes. Only crashes, exit statuses and files are checked for these.
OTHER_GPU = frozenset({("nvmlDeviceGetMigMode", "NOT_SUPPORTED")})

# How a fault fires: on every call, only on one GPU's calls, or once (then NVML answers again).
VARIANTS = ("always", f"gpu {SHARED_GPUS[0]}", f"gpu {PARTITIONED_GPU}", "once")

# (error, variant) pairs tried per function at CI size; the long run tries ten times as many.
PAIRS_PER_FUNCTION = 2


@dataclass(frozen=True)
class Fault:
    call: str
    error: str
    variant: str

    @property
    def gpu(self) -> int | None:
        return int(self.variant.split()[1]) if self.variant.startswith("gpu ") else None

    def yaml(self) -> str:
        where = "" if self.gpu is None else f", gpu: {self.gpu}"
        once = ", count: 1" if self.variant == "once" else ""
        return f"faults:\n  - {{call: {self.call}, error: {self.error}{where}{once}}}\n"

    @property
    def describes_another_gpu(self) -> bool:
        return (self.call, self.error) in OTHER_GPU

    def __str__(self) -> str:
        return f"{self.call} {self.error} ({self.variant})"


def faults(functions: list[str]) -> Iterator[Fault]:
    """Per function, the first ``scaled(PAIRS_PER_FUNCTION)`` (error, variant) pairs of its own
    order: every error on every call first (starting at a different error per function, so that
    at CI size each error still meets a third of the functions), then per GPU, then once."""
    for i, call in enumerate(functions):
        pairs = [(ERRORS[(i * PAIRS_PER_FUNCTION + k) % len(ERRORS)], variant)
                 for variant in VARIANTS for k in range(len(ERRORS))]
        for error, variant in pairs[:scaled(PAIRS_PER_FUNCTION)]:
            yield Fault(call, error, variant)


def write_fleet(directory: Path, fault: Fault | None = None) -> Path:
    path = directory / "fleet.yaml"
    path.write_text(FLEET + (fault.yaml() if fault else ""))
    return path
